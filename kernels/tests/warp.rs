//! The talking-head warp's CPU reference on records whose result is known
//! exactly, its argument checks, and (on a CUDA host) the CUDA kernel
//! against it. The engine's tests compare the WGSL shader with it on real
//! replicas.

use tete_kernels::warp::{self, RECORD_WORDS};

fn portrait(size: u32) -> Vec<u32> {
    (0..size * size).map(|i| (i.wrapping_mul(2654435761) & 0x00ff_ffff) | 0xff00_0000).collect()
}

/// A record that moves nothing: no points, no mouth, eyes open, and a head
/// ellipse of radius 1 far outside the frame.
fn still(size: u32) -> Vec<u32> {
    let mut r = vec![0u32; RECORD_WORDS];
    r[warp::H_WIDTH] = size;
    r[warp::H_HEIGHT] = size;
    for (k, v) in [-1000.0f32, -1000.0, 1.0, 1.0, 1.5].into_iter().enumerate() {
        r[warp::H_ELLIPSE + k] = v.to_bits();
    }
    r
}

#[test]
fn a_still_record_reproduces_the_portrait() {
    let p = portrait(64);
    let mut out = vec![0; p.len()];
    warp::render(&still(64), &p, &mut out).unwrap();
    assert_eq!(out, p);
}

#[test]
fn a_whole_frame_head_shift_by_whole_pixels_moves_the_picture_exactly() {
    let size = 64u32;
    let p = portrait(size);
    let mut r = still(size);
    // Ellipse covering everything (weight 1), translation (3, -2).
    for (k, v) in [32.0f32, 32.0, 1000.0, 1000.0, 1.5].into_iter().enumerate() {
        r[warp::H_ELLIPSE + k] = v.to_bits();
    }
    r[warp::H_HEAD + 6] = 3.0f32.to_bits();
    r[warp::H_HEAD + 7] = (-2.0f32).to_bits();
    let mut out = vec![0; p.len()];
    warp::render(&r, &p, &mut out).unwrap();
    for y in 0..size as usize {
        for x in 0..size as usize {
            let (sx, sy) = ((x as i64 - 3).clamp(0, 63) as usize, (y as i64 + 2).clamp(0, 63) as usize);
            assert_eq!(out[y * 64 + x], p[sy * 64 + sx], "pixel ({x}, {y})");
        }
    }
}

#[test]
fn bad_records_and_buffers_are_errors() {
    let p = portrait(64);
    let mut out = vec![0; p.len()];
    assert!(warp::render(&still(64)[1..], &p, &mut out).unwrap_err().to_string().contains("words"));
    let mut r = still(64);
    r[warp::H_POINTS] = 10_000;
    assert!(warp::render(&r, &p, &mut out).unwrap_err().to_string().contains("control points"));
    let mut r = still(64);
    r[warp::H_MOUTH] = 1_000;
    assert!(warp::render(&r, &p, &mut out).unwrap_err().to_string().contains("mouth polygon"));
    assert!(warp::render(&still(60), &portrait(60), &mut vec![0; 3600]).is_err(), "width not a multiple of 8");
    assert!(warp::render(&still(64), &p[1..], &mut out).unwrap_err().to_string().contains("portrait"));
}

/// A record with every step active: head motion, a ring of control points,
/// an open mouth with a rest polygon, a half-closed eye.
#[cfg(feature = "cuda")]
fn busy(size: u32) -> Vec<u32> {
    let mut r = still(size);
    let c = size as f32 / 2.0;
    let mut put = |i: usize, v: f32| r[i] = v.to_bits();
    for (k, v) in [c, c, 0.01, -0.02, 0.02, 0.01, 1.5, -0.5].into_iter().enumerate() {
        put(warp::H_HEAD + k, v);
    }
    for (k, v) in [c, c, 0.3 * c, 0.4 * c, 1.8].into_iter().enumerate() {
        put(warp::H_ELLIPSE + k, v);
    }
    for i in 0..12 {
        let a = i as f32 / 12.0 * std::f32::consts::TAU;
        let at = warp::HEADER + i * warp::POINT_WORDS;
        for (k, v) in [c + 10.0 * a.cos(), c + 20.0 + 6.0 * a.sin(), 0.0, 4.0 * a.sin(), 9.0].into_iter().enumerate() {
            put(at + k, v);
        }
    }
    for (k, v) in [0.0f32, 0.0, size as f32, size as f32].into_iter().enumerate() {
        put(warp::H_ROI + k, v);
    }
    let ring: Vec<[f32; 2]> = (0..16)
        .map(|i| {
            let a = i as f32 / 16.0 * std::f32::consts::TAU;
            [c + 12.0 * a.cos(), c + 20.0 - 5.0 * a.sin()]
        })
        .collect();
    for (k, p) in ring.iter().enumerate() {
        put(warp::MOUTH_AT + 2 * k, p[0]);
        put(warp::MOUTH_AT + 2 * k + 1, p[1]);
        put(warp::REST_MOUTH_AT + 2 * k, p[0]);
        put(warp::REST_MOUTH_AT + 2 * k + 1, c + 20.0 + (p[1] - c - 20.0) * 0.3);
    }
    for (k, v) in
        [c - 14.0, c + 12.0, c + 14.0, c + 28.0, 1.0, 1.0, 3.0, c, 6.0, c, c + 22.0, 8.0, 3.0].into_iter().enumerate()
    {
        put(warp::H_MOUTH_BOX + k, v);
    }
    let eye = warp::EYES_AT;
    for (k, v) in [0.6f32, c - 20.0, c - 30.0, c - 4.0, c - 12.0].into_iter().enumerate() {
        put(eye + k, v);
    }
    for i in 0..warp::LID_POINTS {
        let x = c - 20.0 + 2.0 * i as f32;
        let bump = 4.0 - ((i as f32 - 4.0).abs());
        put(eye + 5 + 2 * i, x);
        put(eye + 6 + 2 * i, c - 20.0 - bump);
        put(eye + 5 + 2 * (warp::LID_POINTS + i), x);
        put(eye + 6 + 2 * (warp::LID_POINTS + i), c - 20.0 + 0.5 * bump);
    }
    r[warp::H_POINTS] = 12;
    r[warp::H_MOUTH] = 16;
    r[warp::H_MOUTH_UPPER] = 9;
    r[warp::H_REST_MOUTH] = 16;
    r
}

#[cfg(feature = "cuda")]
#[test]
#[ignore = "needs a CUDA GPU: run with --ignored on a GPU host"]
fn face_warp_kernel_matches_the_cpu_reference() {
    let kernels = tete_kernels::cuda::CudaKernels::open(0).expect("a CUDA device");
    for size in [64u32, 512] {
        let (p, r) = (portrait(size), busy(size));
        let mut want = vec![0; p.len()];
        warp::render(&r, &p, &mut want).unwrap();
        let got = kernels.face_warp(&r, &p).unwrap();
        // Same tolerance as the WGSL shader: float rounding only.
        let worst = got
            .iter()
            .zip(&want)
            .flat_map(|(a, b)| {
                (0..3).map(move |c| (((a >> (8 * c)) & 0xff) as i32 - ((b >> (8 * c)) & 0xff) as i32).abs())
            })
            .max()
            .unwrap();
        assert!(worst <= 3, "{size}: CUDA differs from the CPU reference by {worst}");
    }
}
