//! The depthwise 3×3 kernel against the plain-loop reference in `cpu`, on
//! pseudo-random data, over the three nets' shapes and the edges: odd
//! sides at both strides, one-pixel images, one channel, a batch.

use tete_kernels::blaze::{BlockTail, Depthwise3x3, same_padding};
use tete_kernels::cpu;
use tete_kernels::testdata::uniform as noise;

#[test]
fn depthwise_matches_the_reference() {
    let cases = [
        // (n, h, w, c, stride)
        (1, 64, 64, 24, 1),
        (1, 64, 64, 24, 2),
        (5, 16, 16, 48, 1),
        (2, 8, 8, 96, 1),
        (1, 96, 96, 16, 2),
        (3, 14, 14, 256, 2),
        (1, 7, 5, 3, 1),
        (1, 7, 5, 3, 2),
        (1, 1, 1, 8, 1),
        (1, 1, 1, 8, 2),
        (2, 3, 2, 1, 2),
    ];
    for (seed, &(n, h, w, c, stride)) in cases.iter().enumerate() {
        let seed = seed as u64;
        let x = noise(n * h * w * c, 3 * seed);
        let taps = noise(9 * c, 3 * seed + 1);
        let bias = noise(c, 3 * seed + 2);
        let layer = Depthwise3x3::new(taps.clone(), bias.clone(), stride).unwrap();
        let got = layer.forward(&x, n, h, w).unwrap();
        let want = cpu::depthwise3x3(&x, [n, h, w, c], &taps, &bias, stride);
        assert_eq!(got.len(), want.len(), "{n}×{h}×{w}×{c} stride {stride}: lengths");
        assert_eq!(layer.output_size(h, w), (h.div_ceil(stride), w.div_ceil(stride)));
        for (i, (g, e)) in got.iter().zip(&want).enumerate() {
            assert!((g - e).abs() <= 1e-5 * (1.0 + e.abs()), "{n}×{h}×{w}×{c} stride {stride}: [{i}] {g} vs {e}");
        }
    }
}

#[test]
fn the_padding_is_tensorflows() {
    assert_eq!(same_padding(64, 3, 1), (1, 1));
    assert_eq!(same_padding(64, 3, 2), (0, 1));
    assert_eq!(same_padding(63, 3, 2), (1, 1));
    assert_eq!(same_padding(128, 5, 2), (1, 2));
    assert_eq!(same_padding(0, 3, 2), (1, 2));
}

#[test]
fn a_lone_pixel_sees_only_its_centre_tap() {
    // Stride 1 on 1×1: only tap (1, 1) lands inside the image.
    let taps: Vec<f32> = (0..9).map(|t| t as f32).collect();
    let layer = Depthwise3x3::new(taps, vec![0.5], 1).unwrap();
    assert_eq!(layer.forward(&[2.0], 1, 1, 1).unwrap(), vec![0.5 + 2.0 * 4.0]);
}

#[test]
fn bad_shapes_are_errors() {
    assert!(Depthwise3x3::new(vec![0.0; 8], vec![0.0], 1).is_err());
    assert!(Depthwise3x3::new(vec![], vec![], 1).is_err());
    assert!(Depthwise3x3::new(vec![0.0; 9], vec![0.0], 3).is_err());
    let layer = Depthwise3x3::new(vec![0.0; 18], vec![0.0; 2], 2).unwrap();
    let err = layer.forward(&[0.0; 7], 1, 2, 2).unwrap_err();
    assert!(err.to_string().contains("1×2×2×2"), "{err}");
    assert_eq!(layer.forward(&[], 0, 4, 4).unwrap(), Vec::<f32>::new());
}

#[test]
fn the_block_tail_matches_the_reference() {
    let cases = [
        // (n, h, w, c_in, c_out, stride, prelu)
        (1, 64, 64, 24, 24, 1, false),
        (1, 64, 64, 24, 28, 2, false),
        (2, 32, 32, 32, 36, 1, true),
        (1, 96, 96, 16, 32, 2, true),
        (3, 6, 4, 5, 5, 2, true),
        (1, 1, 3, 8, 9, 1, false),
        (1, 2, 2, 1, 1, 2, false),
    ];
    for (seed, &(n, h, w, cin, cout, stride, prelu)) in cases.iter().enumerate() {
        let seed = 10 + seed as u64;
        let x = noise(n * h * w * cin, 4 * seed);
        let y = noise(n * (h / stride) * (w / stride) * cout, 4 * seed + 1);
        let bias = noise(cout, 4 * seed + 2);
        let slopes = prelu.then(|| noise(cout, 4 * seed + 3));
        let tail = BlockTail::new(bias.clone(), slopes.clone(), stride).unwrap();
        let got = tail.forward(&y, &x, n, [h, w, cin]).unwrap();
        let want = cpu::block_tail(&y, &x, [n, h, w, cin], &bias, slopes.as_deref(), stride);
        assert_eq!(got.len(), want.len());
        for (i, (g, e)) in got.iter().zip(&want).enumerate() {
            assert!((g - e).abs() <= 1e-6, "{n}×{h}×{w}×{cin}→{cout} stride {stride}: [{i}] {g} vs {e}");
        }
        if !prelu {
            assert!(got.iter().all(|&v| v >= 0.0), "ReLU leaves nothing below zero");
        }
    }
}

#[test]
fn bad_block_tails_are_errors() {
    assert!(BlockTail::new(vec![], None, 1).is_err());
    assert!(BlockTail::new(vec![0.0; 3], Some(vec![0.0; 2]), 1).is_err());
    assert!(BlockTail::new(vec![0.0; 3], None, 0).is_err());
    let tail = BlockTail::new(vec![0.0; 2], None, 2).unwrap();
    // More residual channels than output ones; an odd side at stride 2; short buffers.
    assert!(tail.forward(&[0.0; 2], &[0.0; 12], 1, [2, 2, 3]).is_err());
    assert!(tail.forward(&[0.0; 2], &[0.0; 6], 1, [3, 2, 1]).is_err());
    assert!(tail.forward(&[0.0; 1], &[0.0; 4], 1, [2, 2, 1]).is_err());
    assert_eq!(tail.forward(&[], &[], 0, [2, 2, 1]).unwrap(), Vec::<f32>::new());
}
