//! CPU reference implementations. These define the exact output every GPU
//! version of a kernel must reproduce.

use crate::KernelError;

/// Checks that a `width`×`height` RGBA frame can be converted to I420 by the
/// GPU kernels: both even, width a multiple of 8 (the WGSL version packs four
/// chroma bytes per 32-bit word), neither zero.
pub fn check_i420_frame(width: u32, height: u32) -> Result<(), KernelError> {
    let reason = if width == 0 || height == 0 {
        Some("width and height must be non-zero")
    } else if !width.is_multiple_of(8) {
        Some("width must be a multiple of 8")
    } else if !height.is_multiple_of(2) {
        Some("height must be even")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(KernelError::BadFrameSize { width, height, reason }),
        None => Ok(()),
    }
}

/// Bytes of an I420 frame: a full-size Y plane and quarter-size U and V planes.
pub fn i420_len(width: u32, height: u32) -> usize {
    let (w, h) = (width as usize, height as usize);
    w * h + 2 * (w / 2) * (h / 2)
}

/// BT.601 limited-range luma of one RGB pixel, in integer arithmetic.
pub fn luma(r: i32, g: i32, b: i32) -> u8 {
    (((66 * r + 129 * g + 25 * b + 128) >> 8) + 16) as u8
}

/// BT.601 limited-range chroma (U, V) of one RGB pixel.
pub fn chroma(r: i32, g: i32, b: i32) -> (u8, u8) {
    let u = ((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128;
    let v = ((112 * r - 94 * g - 18 * b + 128) >> 8) + 128;
    (u.clamp(0, 255) as u8, v.clamp(0, 255) as u8)
}

fn unpack(px: u32) -> (i32, i32, i32) {
    // RGBA8 little-endian: R is the lowest byte.
    ((px & 0xff) as i32, ((px >> 8) & 0xff) as i32, ((px >> 16) & 0xff) as i32)
}

/// Converts an RGBA8 frame (one `u32` a pixel, R in the low byte) to I420,
/// BT.601 limited range. Chroma is taken from the rounded mean RGB of each
/// 2×2 block.
pub fn rgba_to_i420(rgba: &[u32], width: u32, height: u32) -> Result<Vec<u8>, KernelError> {
    check_i420_frame(width, height)?;
    let (w, h) = (width as usize, height as usize);
    if rgba.len() != w * h {
        return Err(KernelError::BadBufferLength {
            what: "RGBA input",
            width,
            height,
            expected: w * h,
            actual: rgba.len(),
        });
    }
    let mut out = vec![0u8; i420_len(width, height)];
    let (y_plane, uv) = out.split_at_mut(w * h);
    let (u_plane, v_plane) = uv.split_at_mut((w / 2) * (h / 2));
    for (y_row, src_row) in y_plane.chunks_exact_mut(w).zip(rgba.chunks_exact(w)) {
        for (dst, &px) in y_row.iter_mut().zip(src_row) {
            let (r, g, b) = unpack(px);
            *dst = luma(r, g, b);
        }
    }
    for cy in 0..h / 2 {
        for cx in 0..w / 2 {
            let (mut r, mut g, mut b) = (0, 0, 0);
            for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                let (pr, pg, pb) = unpack(rgba[(2 * cy + dy) * w + 2 * cx + dx]);
                r += pr;
                g += pg;
                b += pb;
            }
            let (u, v) = chroma((r + 2) >> 2, (g + 2) >> 2, (b + 2) >> 2);
            u_plane[cy * (w / 2) + cx] = u;
            v_plane[cy * (w / 2) + cx] = v;
        }
    }
    Ok(out)
}

/// 1-D convolution with "same" zero padding (`dilation · (kernel − 1) / 2`
/// each side) of `x` `[C_in][len]`: `[C_out][len]`, `weight` in PyTorch's
/// `[C_out][C_in][kernel]` layout. Plain loops in f64, the reference of
/// [`crate::conv1d::Conv1d`].
#[allow(clippy::too_many_arguments)]
pub fn conv1d(
    weight: &[f32],
    bias: Option<&[f32]>,
    c_out: usize,
    c_in: usize,
    kernel: usize,
    dilation: usize,
    x: &[f32],
    len: usize,
) -> Vec<f32> {
    let pad = (dilation * (kernel - 1) / 2) as isize;
    let mut out = vec![0.0; c_out * len];
    for co in 0..c_out {
        for t in 0..len {
            let mut sum = bias.map_or(0.0, |b| b[co] as f64);
            for ci in 0..c_in {
                for j in 0..kernel {
                    let i = t as isize + (j * dilation) as isize - pad;
                    if (0..len as isize).contains(&i) {
                        sum += weight[(co * c_in + ci) * kernel + j] as f64 * x[ci * len + i as usize] as f64;
                    }
                }
            }
            out[co * len + t] = sum as f32;
        }
    }
    out
}

/// PyTorch's `ConvTranspose1d` (no output padding, dilation 1) of `x`
/// `[C_in][len]`: `[C_out][(len − 1) · stride − 2 · padding + kernel]`,
/// `weight` `[C_in][C_out][kernel]`. The reference of
/// [`crate::conv1d::ConvTranspose1d`].
#[allow(clippy::too_many_arguments)]
pub fn conv_transpose1d(
    weight: &[f32],
    bias: &[f32],
    c_in: usize,
    c_out: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    x: &[f32],
    len: usize,
) -> Vec<f32> {
    let out_len = (len - 1) * stride + kernel - 2 * padding;
    let mut sum: Vec<f64> = (0..c_out * out_len).map(|i| bias[i / out_len] as f64).collect();
    for ci in 0..c_in {
        for co in 0..c_out {
            for q in 0..len {
                for m in 0..kernel {
                    let o = (q * stride + m) as isize - padding as isize;
                    if (0..out_len as isize).contains(&o) {
                        sum[co * out_len + o as usize] +=
                            weight[(ci * c_out + co) * kernel + m] as f64 * x[ci * len + q] as f64;
                    }
                }
            }
        }
    }
    sum.into_iter().map(|v| v as f32).collect()
}

/// `tanh(a) · sigmoid(b)` in f64, the reference of [`crate::gate::tanh_sigmoid`].
pub fn tanh_sigmoid(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).map(|(&a, &b)| ((a as f64).tanh() / (1.0 + (-(b as f64)).exp())) as f32).collect()
}

/// 3×3 depthwise convolution of `x` `[n][h][w][C]` with TensorFlow's
/// "SAME" padding (the odd pixel after), `taps` `[3][3][C]`, `bias` `[C]`:
/// `[n][ceil(h / stride)][ceil(w / stride)][C]`. Plain loops in f64, the
/// reference of [`crate::blaze::Depthwise3x3`].
pub fn depthwise3x3(x: &[f32], [n, h, w, c]: [usize; 4], taps: &[f32], bias: &[f32], stride: usize) -> Vec<f32> {
    let (oh, ow) = (h.div_ceil(stride), w.div_ceil(stride));
    let pad = |len: usize, out: usize| (((out - 1) * stride + 3).saturating_sub(len) / 2) as isize;
    let (top, left) = (pad(h, oh.max(1)), pad(w, ow.max(1)));
    let mut out = vec![0.0; n * oh * ow * c];
    for b in 0..n {
        for oy in 0..oh {
            for ox in 0..ow {
                for ch in 0..c {
                    let mut sum = bias[ch] as f64;
                    for i in 0..3 {
                        for j in 0..3 {
                            let y = (oy * stride + i) as isize - top;
                            let x_ = (ox * stride + j) as isize - left;
                            if (0..h as isize).contains(&y) && (0..w as isize).contains(&x_) {
                                let v = x[((b * h + y as usize) * w + x_ as usize) * c + ch];
                                sum += v as f64 * taps[(i * 3 + j) * c + ch] as f64;
                            }
                        }
                    }
                    out[((b * oh + oy) * ow + ox) * c + ch] = sum as f32;
                }
            }
        }
    }
    out
}

/// A BlazeBlock's tail, the reference of [`crate::blaze::BlockTail`]:
/// `act(y + bias + skip(x))` over `y` `[n][oh][ow][C_out]`, where `skip`
/// is `x` `[n][h][w][C_in]` itself at stride 1 or its 2×2 max pool at
/// stride 2, zero beyond `C_in`; `act` is ReLU, or PReLU with `slopes`.
pub fn block_tail(
    y: &[f32],
    x: &[f32],
    [n, h, w, cin]: [usize; 4],
    bias: &[f32],
    slopes: Option<&[f32]>,
    stride: usize,
) -> Vec<f32> {
    let (cout, oh, ow) = (bias.len(), h / stride, w / stride);
    let mut out = vec![0.0; n * oh * ow * cout];
    for b in 0..n {
        for oy in 0..oh {
            for ox in 0..ow {
                for c in 0..cout {
                    let mut skip = 0.0f32;
                    if c < cin {
                        skip = f32::NEG_INFINITY;
                        for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                            let (dy, dx) = (dy.min(stride - 1), dx.min(stride - 1));
                            let v = x[((b * h + oy * stride + dy) * w + ox * stride + dx) * cin + c];
                            skip = skip.max(v);
                        }
                    }
                    let i = ((b * oh + oy) * ow + ox) * cout + c;
                    let v = y[i] + bias[c] + skip;
                    out[i] = match slopes {
                        Some(a) if v < 0.0 => v * a[c],
                        Some(_) => v,
                        None => v.max(0.0),
                    };
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rgba(r: u32, g: u32, b: u32) -> u32 {
        r | (g << 8) | (b << 16) | (0xff << 24)
    }

    #[test]
    fn primaries_match_bt601_limited_range() {
        // Reference values from ITU-R BT.601 with 8-bit studio swing.
        assert_eq!(luma(0, 0, 0), 16);
        assert_eq!(luma(255, 255, 255), 235);
        assert_eq!(chroma(0, 0, 0), (128, 128));
        assert_eq!(chroma(255, 255, 255), (128, 128));
        assert_eq!(luma(255, 0, 0), 82);
        assert_eq!(chroma(255, 0, 0), (90, 240));
        assert_eq!(luma(0, 0, 255), 41);
        assert_eq!(chroma(0, 0, 255), (240, 110));
    }

    #[test]
    fn chroma_is_the_mean_of_each_block() {
        let (w, h) = (8, 2);
        let mut frame = vec![rgba(0, 0, 0); w * h];
        // Block 0: two white and two black pixels → mean grey 128 (rounded).
        frame[0] = rgba(255, 255, 255);
        frame[w + 1] = rgba(255, 255, 255);
        let out = rgba_to_i420(&frame, w as u32, h as u32).unwrap();
        assert_eq!(out.len(), i420_len(8, 2));
        assert_eq!(&out[..2], &[235, 16]);
        assert_eq!(out[w * h], chroma(128, 128, 128).0);
        assert_eq!(out[w * h + 4], chroma(128, 128, 128).1);
    }

    #[test]
    fn bad_sizes_are_errors() {
        assert!(matches!(rgba_to_i420(&[0; 12], 6, 2), Err(KernelError::BadFrameSize { .. })));
        assert!(matches!(rgba_to_i420(&[0; 24], 8, 3), Err(KernelError::BadFrameSize { .. })));
        assert!(matches!(rgba_to_i420(&[0; 15], 8, 2), Err(KernelError::BadBufferLength { .. })));
    }
}
