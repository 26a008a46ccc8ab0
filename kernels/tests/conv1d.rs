//! The direct convolutions against the plain-loop references in `cpu`, on
//! pseudo-random data, over the shapes of a HiFi-GAN decoder and the edge
//! cases of the tiling: channel counts that are not a multiple of the tile's
//! four rows, lengths shorter than a tile and not a multiple of it, lengths
//! that split unevenly between threads.

use tete_kernels::conv1d::{Conv1d, ConvTranspose1d, Residual, Signal};
use tete_kernels::cpu;
use tete_kernels::testdata::uniform as noise;

/// Every element within `tol` · (1 + |expected|), else a message naming the first one that is not.
fn assert_close(actual: &[f32], expected: &[f32], tol: f32, what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: lengths");
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!((a - e).abs() <= tol * (1.0 + e.abs()), "{what}: element {i} is {a}, reference {e}");
    }
}

/// Summing up to 7 · 256 products of values in [−1, 1) in f32 against f64.
const TOL: f32 = 2e-5;

#[test]
fn conv1d_matches_the_reference() {
    let cases = [
        // (c_out, c_in, kernel, dilation, len)
        (32, 32, 3, 1, 1000),
        (32, 32, 7, 12, 997),
        (64, 64, 5, 6, 130),
        (128, 128, 3, 3, 50),
        (256, 192, 7, 1, 29),
        (1, 32, 7, 1, 301),
        (6, 5, 3, 2, 7),
        (4, 3, 1, 1, 24),
        (5, 2, 5, 1, 1),
    ];
    for (seed, &(c_out, c_in, kernel, dilation, len)) in cases.iter().enumerate() {
        let seed = seed as u64;
        let weight = noise(c_out * c_in * kernel, 3 * seed);
        let bias = noise(c_out, 3 * seed + 1);
        let x = noise(c_in * len, 3 * seed + 2);
        let conv = Conv1d::new(&weight, Some(&bias), c_out, c_in, kernel, dilation);
        let input = Signal::from_rows(&x, c_in, len, conv.same_pad() + 1);
        // Accumulates into what is there: start from a residual.
        let residual = noise(c_out * len, 100 + seed);
        let mut out = Signal::from_rows(&residual, c_out, len, 2);
        conv.forward_into(&input, &mut out);
        let mut expected = cpu::conv1d(&weight, Some(&bias), c_out, c_in, kernel, dilation, &x, len);
        for (e, r) in expected.iter_mut().zip(&residual) {
            *e += r;
        }
        let what = format!("conv {c_out}←{c_in}, kernel {kernel}, dilation {dilation}, length {len}");
        assert_close(&out.to_rows(), &expected, TOL, &what);
    }
}

#[test]
fn conv_transpose1d_matches_the_reference() {
    for (seed, &(c_in, c_out, stride, len)) in
        [(256, 128, 8, 29), (128, 64, 8, 233), (64, 32, 4, 1000), (3, 5, 2, 1)].iter().enumerate()
    {
        let seed = seed as u64;
        let kernel = 2 * stride;
        let weight = noise(c_in * c_out * kernel, 10 + 3 * seed);
        let bias = noise(c_out, 11 + 3 * seed);
        let x = noise(c_in * len, 12 + 3 * seed);
        let up = ConvTranspose1d::new(&weight, &bias, c_in, c_out, stride);
        let input = Signal::from_rows(&x, c_in, len, 1);
        // Overwrites what is there.
        let mut out = Signal::from_rows(&noise(c_out * stride * len, 7), c_out, stride * len, 3);
        up.forward_into(&input, &mut out);
        let expected = cpu::conv_transpose1d(&weight, &bias, c_in, c_out, kernel, stride, stride / 2, &x, len);
        let what = format!("transposed conv {c_out}←{c_in}, stride {stride}, length {len}");
        assert_close(&out.to_rows(), &expected, TOL, &what);
    }
}

#[test]
fn reused_buffers_keep_zero_padding() {
    // A buffer of garbage back in the pool, then a signal for overwriting
    // from it: its padding must be zero again.
    drop(Signal::from_rows(&vec![f32::NAN; 4 * 100], 4, 100, 5));
    let reused = Signal::for_overwrite(3, 90, 7);
    let conv = Conv1d::new(&[1.0; 3 * 3 * 15], None, 3, 3, 15, 1);
    let mut out = Signal::zeros(3, 90, 0);
    let mut filled = reused;
    filled.for_each_row(|_, row| row.fill(1.0));
    conv.forward_into(&filled, &mut out);
    // Sample 0 sees 8 of its 15 taps inside, on each of 3 channels.
    assert_eq!(out.row(0)[0], 24.0);
    assert!(out.to_rows().iter().all(|v| v.is_finite()));
}

#[test]
fn padding_stays_zero() {
    let conv = Conv1d::new(&noise(8 * 8 * 3, 1), Some(&noise(8, 2)), 8, 8, 3, 2);
    let input = Signal::from_rows(&noise(8 * 50, 3), 8, 50, 2);
    let mut out = Signal::zeros(8, 50, 4);
    conv.forward_into(&input, &mut out);
    // A second pass over the output reads its padding: zeros give the same
    // as the reference on the samples alone.
    let again = Conv1d::new(&noise(8 * 8 * 5, 4), None, 8, 8, 5, 2);
    let mut twice = Signal::zeros(8, 50, 0);
    again.forward_into(&out, &mut twice);
    let expected = cpu::conv1d(&noise(8 * 8 * 5, 4), None, 8, 8, 5, 2, &out.to_rows(), 50);
    assert_close(&twice.to_rows(), &expected, TOL, "second pass");
}

#[test]
fn fused_residuals_and_leaky_relu_match_the_reference() {
    for &(channels, kernel, dilation, len) in &[(32, 7, 3, 500), (6, 3, 1, 29)] {
        let weight = noise(channels * channels * kernel, 21);
        let bias = noise(channels, 22);
        let x = noise(channels * len, 23);
        let residual = noise(channels * len, 24);
        let start = noise(channels * len, 25);
        let conv = Conv1d::new(&weight, Some(&bias), channels, channels, kernel, dilation);
        let input = Signal::from_rows(&x, channels, len, conv.same_pad());
        let res = Signal::from_rows(&residual, channels, len, 1);
        let conv_ref = cpu::conv1d(&weight, Some(&bias), channels, channels, kernel, dilation, &x, len);
        let what = format!("{channels} channels, kernel {kernel}, length {len}");

        let mut out = Signal::from_rows(&start, channels, len, 0);
        let mut leaky = Signal::zeros(channels, len, 3);
        conv.forward_fused(&input, Residual::From(&res), &mut out, Some((&mut leaky, 0.1)));
        let expected: Vec<f32> = conv_ref.iter().zip(&residual).map(|(c, r)| c + r).collect();
        assert_close(&out.to_rows(), &expected, TOL, &format!("from residual, {what}"));
        let expected_leaky: Vec<f32> = expected.iter().map(|&v| if v > 0.0 { v } else { 0.1 * v }).collect();
        assert_close(&leaky.to_rows(), &expected_leaky, TOL, &format!("leaky, {what}"));

        let mut out = Signal::from_rows(&start, channels, len, 1);
        conv.forward_fused(&input, Residual::Overwrite, &mut out, None);
        assert_close(&out.to_rows(), &conv_ref, TOL, &format!("overwritten, {what}"));

        let mut out = Signal::from_rows(&start, channels, len, 2);
        conv.forward_fused(&input, Residual::Add(&res), &mut out, None);
        let expected: Vec<f32> = conv_ref.iter().zip(&residual).zip(&start).map(|((c, r), s)| c + r + s).collect();
        assert_close(&out.to_rows(), &expected, TOL, &format!("added residual, {what}"));
    }
}
