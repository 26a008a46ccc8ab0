//! The HiFi-GAN decoder on the kernels crate's direct convolutions.

use super::*;

/// kernels crate's direct convolutions (whatever the voice's device: its
/// long, narrow signals are what those are made for).
pub(super) struct Decoder {
    pre: kernels::Conv1d,
    ups: Vec<kernels::ConvTranspose1d>,
    /// Three resblocks per upsampling, two convolutions each.
    blocks: Vec<[kernels::Conv1d; 2]>,
    post: kernels::Conv1d,
}

/// Padding of the resblocks' inputs: the widest reach, kernel 7 at dilation 12.
const RES_PAD: usize = 36;

impl Decoder {
    pub(super) fn load(w: &mut Weights) -> Result<Self, VitsError> {
        let mut conv = |name: &str, shape: [usize; 3], dilation: usize, bias: bool| -> Result<_, VitsError> {
            let weight = w.take(&format!("{name}.weight"), &shape)?.flatten_all()?.to_vec1::<f32>()?;
            let bias = if bias { Some(w.take(&format!("{name}.bias"), &shape[..1])?.to_vec1::<f32>()?) } else { None };
            let [c_out, c_in, kernel] = shape;
            Ok(kernels::Conv1d::new(&weight, bias.as_deref(), c_out, c_in, kernel, dilation))
        };
        let pre = conv("dec.conv_pre", [UP_CHANNELS[0], LATENT, 7], 1, true)?;
        let mut blocks = Vec::new();
        for (i, (&cout, &(stride, kernel))) in UP_CHANNELS[1..].iter().zip(&UPSAMPLES).enumerate() {
            for (j, (&k, dilations)) in RES_KERNELS.iter().zip(&RES_DILATIONS).enumerate() {
                let p = format!("dec.resblocks.{}", 3 * i + j);
                blocks.push([
                    conv(&format!("{p}.convs.0"), [cout, cout, k], dilations[0], true)?,
                    conv(&format!("{p}.convs.1"), [cout, cout, k], dilations[1], true)?,
                ]);
            }
            debug_assert_eq!(kernel, 2 * stride);
        }
        let post = conv("dec.conv_post", [1, UP_CHANNELS[3], 7], 1, false)?;
        let mut ups = Vec::new();
        for (i, &(stride, kernel)) in UPSAMPLES.iter().enumerate() {
            let (cin, cout) = (UP_CHANNELS[i], UP_CHANNELS[i + 1]);
            let weight =
                w.take(&format!("dec.ups.{i}.weight"), &[cin, cout, kernel])?.flatten_all()?.to_vec1::<f32>()?;
            let bias = w.take(&format!("dec.ups.{i}.bias"), &[cout])?.to_vec1::<f32>()?;
            // The export pads by (kernel − stride) / 2 = stride / 2, the crop
            // the kernel applies.
            ups.push(kernels::ConvTranspose1d::new(&weight, &bias, cin, cout, stride));
        }
        Ok(Self { pre, ups, blocks, post })
    }

    /// Audio (`frames · HOP` samples in [−1, 1]) from a latent `(1, 192, frames)`.
    pub(super) fn forward(&self, z: &Tensor) -> candle_core::Result<Vec<f32>> {
        let (_, channels, frames) = z.dims3()?;
        let latent = z.to_device(&Device::Cpu)?.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let latent = Signal::from_rows(&latent, channels, frames, self.pre.same_pad());
        let mut x = Signal::for_overwrite(UP_CHANNELS[0], frames, 0);
        self.pre.forward_fused(&latent, Residual::Overwrite, &mut x, None);
        // `x` is the sum of the previous stage's resblocks (its mean times
        // `parts`), or the pre-convolution's output.
        let mut parts = 1.0;
        for (i, up) in self.ups.iter().enumerate() {
            let mut act = Signal::for_overwrite(x.channels(), x.len(), 1);
            act.map_rows(&x, |a, x| leaky_relu_mean(a, x, parts, 0.1));
            let (channels, len) = (UP_CHANNELS[i + 1], UPSAMPLES[i].0 * x.len());
            let mut y = Signal::for_overwrite(channels, len, 0);
            up.forward_into(&act, &mut y);
            // Each resblock: h ← h + conv(leaky(h)) twice, from h = y; their
            // sum, with the element-wise work fused into the convolutions.
            let mut first = Signal::for_overwrite(channels, len, RES_PAD);
            first.map_rows(&y, |a, y| leaky_relu_mean(a, y, 1.0, 0.1));
            let mut second = Signal::for_overwrite(channels, len, RES_PAD);
            let mut h = Signal::for_overwrite(channels, len, 0);
            let mut sum = Signal::for_overwrite(channels, len, 0);
            for (b, [conv1, conv2]) in self.blocks[3 * i..3 * i + 3].iter().enumerate() {
                conv1.forward_fused(&first, Residual::From(&y), &mut h, Some((&mut second, 0.1)));
                let residual = if b == 0 { Residual::From(&h) } else { Residual::Add(&h) };
                conv2.forward_fused(&second, residual, &mut sum, None);
            }
            x = sum;
            parts = RES_KERNELS.len() as f32;
        }
        let mut act = Signal::for_overwrite(x.channels(), x.len(), self.post.same_pad());
        act.map_rows(&x, |a, x| leaky_relu_mean(a, x, parts, 0.01));
        let mut audio = Signal::zeros(1, x.len(), 0);
        self.post.forward_into(&act, &mut audio);
        Ok(audio.row(0).iter().map(|v| v.tanh()).collect())
    }
}

/// `out = leaky_relu(x / parts)`, as `max(v, slope · v)` (slope < 1).
fn leaky_relu_mean(out: &mut [f32], x: &[f32], parts: f32, slope: f32) {
    for (o, &x) in out.iter_mut().zip(x) {
        let v = if parts == 1.0 { x } else { x / parts };
        *o = v.max(v * slope);
    }
}
