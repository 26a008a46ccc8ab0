//! The two halves of a BlazeBlock around its 1×1 convolution (a matmul),
//! in NHWC: the 3×3 depthwise convolution with TensorFlow's "SAME" padding
//! before it (also the first half of face-api's separable convolutions),
//! and after it the bias, the residual branch and the activation.
//!
//! Composed from tensor ops the depthwise convolution is nine shifted
//! copies of the input, each scaled per channel and summed, and the tail
//! another six ops (bias, max pool, channel padding, sum, and the two
//! halves of a PReLU): some forty passes over memory and as many
//! allocations a block, for a few hundred thousand multiply-adds. Here each
//! half is one pass: an output row accumulates in place over the channels
//! (the innermost, contiguous axis, so the loops vectorise), and the rows
//! are split between rayon's threads.
//!
//! [`cpu::depthwise3x3`](crate::cpu::depthwise3x3) and
//! [`cpu::block_tail`](crate::cpu::block_tail) are the references the
//! tests compare against.

use rayon::prelude::*;

use crate::KernelError;

/// TensorFlow's "SAME" padding (before, after) of one spatial axis: the
/// output has ceil(n / stride) positions, the odd pixel of padding goes after.
pub fn same_padding(n: usize, k: usize, stride: usize) -> (usize, usize) {
    let out = n.div_ceil(stride);
    let total = ((out.max(1) - 1) * stride + k).saturating_sub(n);
    (total / 2, total - total / 2)
}

/// A depthwise 3×3 layer: per channel, nine taps and a bias.
#[derive(Debug, Clone, PartialEq)]
pub struct Depthwise3x3 {
    /// `[3][3][C]`, row-major: tap (i, j) of channel c at `(i · 3 + j) · C + c`.
    taps: Vec<f32>,
    bias: Vec<f32>,
    stride: usize,
}

impl Depthwise3x3 {
    /// `taps` `[3][3][C]` and `bias` `[C]`; stride 1 or 2.
    pub fn new(taps: Vec<f32>, bias: Vec<f32>, stride: usize) -> Result<Self, KernelError> {
        let bad = |why: String| Err(KernelError::BadConvolution(why));
        if bias.is_empty() || taps.len() != 9 * bias.len() {
            return bad(format!("{} taps for {} channels; 9 a channel wanted", taps.len(), bias.len()));
        }
        if !(1..=2).contains(&stride) {
            return bad(format!("stride {stride}; 1 or 2 wanted"));
        }
        Ok(Self { taps, bias, stride })
    }

    pub fn channels(&self) -> usize {
        self.bias.len()
    }

    pub fn stride(&self) -> usize {
        self.stride
    }

    /// Output height and width for an `h`×`w` input.
    pub fn output_size(&self, h: usize, w: usize) -> (usize, usize) {
        (h.div_ceil(self.stride), w.div_ceil(self.stride))
    }

    /// The layer on `x` `[n][h][w][C]`: `[n][oh][ow][C]`.
    pub fn forward(&self, x: &[f32], n: usize, h: usize, w: usize) -> Result<Vec<f32>, KernelError> {
        let c = self.channels();
        if x.len() != n * h * w * c {
            return Err(KernelError::BadConvolution(format!("input of {} values is not {n}×{h}×{w}×{c}", x.len())));
        }
        let (oh, ow) = self.output_size(h, w);
        let mut out = vec![0.0; n * oh * ow * c];
        if out.is_empty() {
            return Ok(out);
        }
        let (top, _) = same_padding(h, 3, self.stride);
        let (left, _) = same_padding(w, 3, self.stride);
        out.par_chunks_mut(ow * c).enumerate().for_each(|(row, out)| {
            let (image, oy) = (row / oh, row % oh);
            for o in out.chunks_exact_mut(c) {
                o.copy_from_slice(&self.bias);
            }
            for i in 0..3 {
                let Some(iy) = (oy * self.stride + i).checked_sub(top).filter(|&y| y < h) else { continue };
                let src = &x[(image * h + iy) * w * c..][..w * c];
                for (ox, o) in out.chunks_exact_mut(c).enumerate() {
                    for j in 0..3 {
                        let Some(ix) = (ox * self.stride + j).checked_sub(left).filter(|&v| v < w) else { continue };
                        let tap = &self.taps[(i * 3 + j) * c..][..c];
                        for ((o, &a), &t) in o.iter_mut().zip(&src[ix * c..][..c]).zip(tap) {
                            *o += a * t;
                        }
                    }
                }
            }
        });
        Ok(out)
    }
}

/// A BlazeBlock's tail: `act(y + bias + skip(x))`, where `skip` is `x`
/// (stride 1) or its 2×2 max pool (stride 2), zero-padded to `y`'s
/// channels, and `act` is ReLU or, with `slopes`, PReLU.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockTail {
    /// `[C_out]`, the 1×1 convolution's.
    bias: Vec<f32>,
    /// PReLU's per-channel slopes below zero; ReLU without.
    slopes: Option<Vec<f32>>,
    stride: usize,
}

impl BlockTail {
    pub fn new(bias: Vec<f32>, slopes: Option<Vec<f32>>, stride: usize) -> Result<Self, KernelError> {
        let bad = |why: String| Err(KernelError::BadConvolution(why));
        if bias.is_empty() {
            return bad("a block tail needs at least one channel".into());
        }
        if let Some(s) = &slopes
            && s.len() != bias.len()
        {
            return bad(format!("{} PReLU slopes for {} channels", s.len(), bias.len()));
        }
        if !(1..=2).contains(&stride) {
            return bad(format!("stride {stride}; 1 or 2 wanted"));
        }
        Ok(Self { bias, slopes, stride })
    }

    /// The tail of `y` `[n][oh][ow][C_out]` (the matmul's output) and the
    /// block's input `x` `[n][h][w][C_in]`, `C_in ≤ C_out`; at stride 2 the
    /// sides of `x` are even and twice `y`'s.
    pub fn forward(&self, y: &[f32], x: &[f32], n: usize, [h, w, cin]: [usize; 3]) -> Result<Vec<f32>, KernelError> {
        let cout = self.bias.len();
        let s = self.stride;
        let bad = |why: String| Err(KernelError::BadConvolution(why));
        if cin > cout {
            return bad(format!("a residual of {cin} channels onto {cout}"));
        }
        if s == 2 && (h % 2 != 0 || w % 2 != 0) {
            return bad(format!("a 2×2 max pool of an odd side ({h}×{w})"));
        }
        let (oh, ow) = (h / s, w / s);
        if x.len() != n * h * w * cin || y.len() != n * oh * ow * cout {
            return bad(format!("{} + {} values are not {n}×{oh}×{ow}×{cout} and {n}×{h}×{w}×{cin}", y.len(), x.len()));
        }
        let mut out = y.to_vec();
        if out.is_empty() {
            return Ok(out);
        }
        out.par_chunks_mut(ow * cout).enumerate().for_each(|(row, out)| {
            let (image, oy) = (row / oh, row % oh);
            let line = |dy: usize| &x[(image * h + oy * s + dy) * w * cin..][..w * cin];
            let (first, second) = (line(0), line(s - 1));
            for (ox, o) in out.chunks_exact_mut(cout).enumerate() {
                for (o, b) in o.iter_mut().zip(&self.bias) {
                    *o += b;
                }
                let skip = &mut o[..cin];
                if s == 1 {
                    for (o, &v) in skip.iter_mut().zip(&first[ox * cin..][..cin]) {
                        *o += v;
                    }
                } else {
                    let (a, b) = (&first[2 * ox * cin..][..2 * cin], &second[2 * ox * cin..][..2 * cin]);
                    for (c, o) in skip.iter_mut().enumerate() {
                        *o += a[c].max(a[cin + c]).max(b[c].max(b[cin + c]));
                    }
                }
                match &self.slopes {
                    None => o.iter_mut().for_each(|v| *v = v.max(0.0)),
                    Some(slopes) => {
                        for (v, a) in o.iter_mut().zip(slopes) {
                            *v = if *v < 0.0 { *v * a } else { *v };
                        }
                    }
                }
            }
        });
        Ok(out)
    }
}
