//! face-api's FaceExpressionNet (`@vladmandic/face-api` 1.7.15,
//! `src/faceExpressionNet/`, `src/faceFeatureExtractor/`) in candle, in
//! tfjs's NHWC layout: seven expression probabilities from a face crop.
//!
//! The net: the crop, padded to a square and resized to 112×112, minus
//! face-api's mean RGB, divided by 255; four dense blocks (`denseBlock4`)
//! of 32, 64, 128 and 256 channels, each halving the resolution
//! (112 → 7); the 7×7 average (tfjs `avgPool` 7×7, stride 2, "valid" on a
//! 7×7 map); a fully-connected layer to 7 logits; a softmax. A dense block
//! is a strided first convolution (a full 3×3 one in the first block, a
//! depthwise-separable one after) and three depthwise-separable ones, each
//! reading the ReLU of the sum of all outputs before it:
//!
//! ```text
//! out1 = relu(conv0(x)); out2 = conv1(out1); out3 = conv2(relu(out1 + out2))
//! out4 = conv3(relu(out1 + out2 + out3)); block = relu(out1 + out2 + out3 + out4)
//! ```
//!
//! Convolutions pad "same" as TensorFlow does (at stride 2 on an even side
//! the one pixel of padding goes after). Weights are those `tete models
//! fetch` converts from the package's tfjs shards: names as in the
//! manifest (`dense0/conv1/depthwise_filter`, `fc/weights`, …), tfjs
//! shapes, uint8 dequantised to f32.
//!
//! The pre-processing is face-api's tensor path (`NetInput::toBatchTensor(112,
//! true)`): zero padding centred on the short side (the odd pixel after),
//! then tfjs `resizeBilinear` without aligned corners or half-pixel centres.
//! Its browser path draws the crop on a canvas instead, which samples
//! differently.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use image::RgbImage;

use super::PerceptionError;
use crate::face::{Depthwise, Weights};

/// Side of the square input, in pixels.
pub const INPUT: usize = 112;

/// face-api's `meanRgb` of the feature extractor, in pixel units.
const MEAN_RGB: [f32; 3] = [122.782, 117.001, 104.298];

const MODEL: &str = "face-expression";

/// The seven expressions, in the net's output order (face-api's
/// `FaceExpressions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Expression {
    Neutral,
    Happy,
    Sad,
    Angry,
    Fearful,
    Disgusted,
    Surprised,
}

impl Expression {
    /// All of them, in output order: `probabilities[e as usize]` is `e`'s.
    pub const ALL: [Expression; 7] = [
        Expression::Neutral,
        Expression::Happy,
        Expression::Sad,
        Expression::Angry,
        Expression::Fearful,
        Expression::Disgusted,
        Expression::Surprised,
    ];

    /// face-api's name for it.
    pub fn label(self) -> &'static str {
        ["neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised"][self as usize]
    }

    /// The most probable expression (the first on a tie).
    pub fn most_likely(probabilities: &[f32; 7]) -> Expression {
        let best = (1..7).fold(0, |best, i| if probabilities[i] > probabilities[best] { i } else { best });
        Expression::ALL[best]
    }
}

/// The model: weights shared read-only, no state between calls.
pub struct ExpressionNet {
    blocks: [DenseBlock; 4],
    /// `[256, 7]`.
    fc_weights: Tensor,
    fc_bias: Tensor,
    /// `[1, 1, 1, 3]`.
    mean: Tensor,
    device: Device,
}

impl ExpressionNet {
    /// Loads the converted weights (`model.safetensors`) onto `device`.
    pub fn load(path: &Path, device: &Device) -> Result<Self, PerceptionError> {
        let mut w = Weights::load(MODEL, path, device)?;
        let blocks = [
            DenseBlock::load(&mut w, "dense0", 3, 32)?,
            DenseBlock::load(&mut w, "dense1", 32, 64)?,
            DenseBlock::load(&mut w, "dense2", 64, 128)?,
            DenseBlock::load(&mut w, "dense3", 128, 256)?,
        ];
        Ok(Self {
            blocks,
            fc_weights: w.take("fc/weights", &[256, 7])?,
            fc_bias: w.take("fc/bias", &[7])?,
            mean: Tensor::new(&MEAN_RGB, device)?.reshape((1, 1, 1, 3))?,
            device: device.clone(),
        })
    }

    /// The probabilities of the seven [`Expression`]s on one face crop of
    /// any size (see [`Self::input`]).
    pub fn probabilities(&self, crop: &RgbImage) -> Result<[f32; 7], PerceptionError> {
        Ok(self.probabilities_batch(&[crop])?[0])
    }

    /// [`Self::probabilities`] for several crops, run as one batch.
    pub fn probabilities_batch(&self, crops: &[&RgbImage]) -> Result<Vec<[f32; 7]>, PerceptionError> {
        let rows = self.forward(&self.input(crops)?)?.to_vec2::<f32>()?;
        Ok(rows.into_iter().map(|row| std::array::from_fn(|i| row[i])).collect())
    }

    /// The crops as face-api prepares them: each padded to a square and
    /// resized to 112×112 ([`prepare`]), stacked into an `(n, 112, 112, 3)`
    /// batch in pixel units on the model's device. No crops is an error.
    pub fn input(&self, crops: &[&RgbImage]) -> Result<Tensor, PerceptionError> {
        if crops.is_empty() {
            return Err(PerceptionError::Input {
                actual: vec![0, INPUT, INPUT, 3],
                expected: vec![1, INPUT, INPUT, 3],
            });
        }
        let mut data = Vec::with_capacity(crops.len() * INPUT * INPUT * 3);
        for crop in crops {
            data.extend(prepare(crop)?);
        }
        Ok(Tensor::from_vec(data, (crops.len(), INPUT, INPUT, 3), &self.device)?)
    }

    /// Probabilities `(n, 7)` of a batch `(n, 112, 112, 3)` of RGB values
    /// in [0, 255] (face-api's `forwardInput`).
    pub fn forward(&self, input: &Tensor) -> Result<Tensor, PerceptionError> {
        Ok(candle_nn::ops::softmax_last_dim(&self.logits(input)?)?)
    }

    /// The logits `(n, 7)` before the softmax (face-api's `runNet`).
    pub fn logits(&self, input: &Tensor) -> Result<Tensor, PerceptionError> {
        let dims = input.dims();
        if dims.len() != 4 || dims[0] == 0 || dims[1..] != [INPUT, INPUT, 3] {
            return Err(PerceptionError::Input { actual: dims.to_vec(), expected: vec![1, INPUT, INPUT, 3] });
        }
        let mut x = (input.to_dtype(DType::F32)?.broadcast_sub(&self.mean)? / 255.0)?;
        for block in &self.blocks {
            x = block.forward(&x)?;
        }
        // 7×7 → 1×1: tfjs avgPool 7×7 "valid" is the mean of the map.
        let features = x.mean((1, 2))?;
        Ok(features.matmul(&self.fc_weights)?.broadcast_add(&self.fc_bias)?)
    }
}

/// One crop as face-api's tensor path prepares it: zero-padded to a
/// square, the padding split around the crop with the odd pixel after
/// (`padToSquare(…, true)`), then resized to 112×112 by tfjs's
/// `resizeBilinear` (alignCorners and halfPixelCenters false: output pixel
/// i reads source position i · side / 112, computed in f64 as JavaScript
/// does). Returns 112 · 112 · 3 values in pixel units, row-major RGB.
pub fn prepare(crop: &RgbImage) -> Result<Vec<f32>, PerceptionError> {
    let (w, h) = (crop.width() as usize, crop.height() as usize);
    if w == 0 || h == 0 {
        return Err(PerceptionError::EmptyImage { width: crop.width(), height: crop.height() });
    }
    let side = w.max(h);
    // face-api appends Math.round(diff / 2) and prepends the rest.
    let (left, top) = ((side - w) / 2, (side - h) / 2);
    let raw = crop.as_raw();
    let pixel = |x: usize, y: usize, c: usize| -> f64 {
        match (x.checked_sub(left), y.checked_sub(top)) {
            (Some(x), Some(y)) if x < w && y < h => raw[(y * w + x) * 3 + c] as f64,
            _ => 0.0,
        }
    };
    let ratio = side as f64 / INPUT as f64;
    // Source (floor, ceil, fraction) of each output row or column.
    let taps: Vec<(usize, usize, f64)> = (0..INPUT)
        .map(|i| {
            let pos = ratio * i as f64;
            let lo = pos.floor() as usize;
            (lo, (pos.ceil() as usize).min(side - 1), pos - lo as f64)
        })
        .collect();
    let mut out = Vec::with_capacity(INPUT * INPUT * 3);
    for &(y0, y1, fy) in &taps {
        for &(x0, x1, fx) in &taps {
            for c in 0..3 {
                let top = pixel(x0, y0, c) + (pixel(x1, y0, c) - pixel(x0, y0, c)) * fx;
                let bottom = pixel(x0, y1, c) + (pixel(x1, y1, c) - pixel(x0, y1, c)) * fx;
                out.push((top + (bottom - top) * fy) as f32);
            }
        }
    }
    Ok(out)
}

/// `denseBlock4`: a first convolution at stride 2, then three
/// depthwise-separable ones, each reading the ReLU of the running sum.
struct DenseBlock {
    first: First,
    rest: [SeparableConv; 3],
}

enum First {
    /// The first block's full 3×3 convolution: `[out, in, 3, 3]` (candle's
    /// layout, from tfjs's `[3, 3, in, out]`) and bias `[1, out, 1, 1]`.
    Full {
        kernel: Tensor,
        bias: Tensor,
    },
    Separable(SeparableConv),
}

impl DenseBlock {
    fn load(w: &mut Weights, prefix: &str, cin: usize, cout: usize) -> Result<Self, PerceptionError> {
        let first = if prefix == "dense0" {
            let kernel = w.take(&format!("{prefix}/conv0/filters"), &[3, 3, cin, cout])?;
            First::Full {
                kernel: kernel.permute((3, 2, 0, 1))?.contiguous()?,
                bias: w.take(&format!("{prefix}/conv0/bias"), &[cout])?.reshape((1, cout, 1, 1))?,
            }
        } else {
            First::Separable(SeparableConv::load(w, &format!("{prefix}/conv0"), cin, cout, 2)?)
        };
        let rest = [1, 2, 3].map(|i| SeparableConv::load(w, &format!("{prefix}/conv{i}"), cout, cout, 1));
        let [a, b, c] = rest;
        Ok(Self { first, rest: [a?, b?, c?] })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let out1 = match &self.first {
            First::Full { kernel, bias } => {
                // Stride 2 "same" on an even side: one pixel of padding, after.
                let x = x.permute((0, 3, 1, 2))?.pad_with_zeros(2, 0, 1)?.pad_with_zeros(3, 0, 1)?;
                let y = x.conv2d(kernel, 0, 2, 1, 1)?.broadcast_add(bias)?;
                y.permute((0, 2, 3, 1))?.contiguous()?
            }
            First::Separable(conv) => conv.forward(x)?,
        }
        .relu()?;
        // out1 ≥ 0, so relu(sum) is out1 itself for the first of the rest.
        let mut sum = out1;
        for conv in &self.rest {
            let y = conv.forward(&sum.relu()?)?;
            sum = (sum + y)?;
        }
        sum.relu()
    }
}

/// tfjs `separableConv2d` "same" plus bias: a 3×3 depthwise convolution,
/// then a 1×1 one (a matmul over the channels).
struct SeparableConv {
    /// Without a bias of its own: the layer's one bias comes after the matmul.
    depthwise: Depthwise,
    /// `[in, out]`.
    pointwise: Tensor,
    bias: Tensor,
}

impl SeparableConv {
    fn load(w: &mut Weights, prefix: &str, cin: usize, cout: usize, stride: usize) -> Result<Self, PerceptionError> {
        let kernel = w.take(&format!("{prefix}/depthwise_filter"), &[3, 3, cin, 1])?.reshape((3, 3, cin))?;
        let no_bias = Tensor::zeros(cin, DType::F32, kernel.device())?;
        Ok(Self {
            depthwise: Depthwise::new(&kernel, no_bias, stride)?,
            pointwise: w.take(&format!("{prefix}/pointwise_filter"), &[1, 1, cin, cout])?.reshape((cin, cout))?,
            bias: w.take(&format!("{prefix}/bias"), &[cout])?,
        })
    }

    /// NHWC in, NHWC out. TensorFlow's "same" padding is the depthwise
    /// layer's: at stride 2 on an even side (112, 56, 28 and 14 here),
    /// output r reads input rows 2r .. 2r+2.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let acc = self.depthwise.forward(x)?;
        let (n, oh, ow, c) = acc.dims4()?;
        let y = acc.reshape((n * oh * ow, c))?.matmul(&self.pointwise)?.broadcast_add(&self.bias)?;
        y.reshape((n, oh, ow, ()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepare_pads_centred_with_the_odd_pixel_after() {
        // 1 wide, 4 tall: diff 3 → 1 column before, 2 after, then 4 → 112.
        let crop = RgbImage::from_pixel(1, 4, image::Rgb([200, 100, 50]));
        let out = prepare(&crop).unwrap();
        assert_eq!(out.len(), INPUT * INPUT * 3);
        let at = |x: usize, y: usize| &out[(y * INPUT + x) * 3..(y * INPUT + x) * 3 + 3];
        // Output column i reads source column i · 4 / 112: column 0 the left
        // padding, 28 exactly the crop, 111 the right padding.
        assert_eq!(at(0, 0), [0.0, 0.0, 0.0]);
        assert_eq!(at(28, 50), [200.0, 100.0, 50.0]);
        assert_eq!(at(111, 111), [0.0, 0.0, 0.0]);
        let square = RgbImage::from_pixel(INPUT as u32, INPUT as u32, image::Rgb([1, 2, 3]));
        assert!(prepare(&square).unwrap().chunks(3).all(|p| p == [1.0, 2.0, 3.0]));
    }

    #[test]
    fn empty_crop_is_an_error() {
        assert!(matches!(prepare(&RgbImage::new(0, 5)), Err(PerceptionError::EmptyImage { width: 0, height: 5 })));
    }

    #[test]
    fn most_likely_picks_the_largest() {
        assert_eq!(Expression::most_likely(&[0.1, 0.6, 0.1, 0.1, 0.0, 0.0, 0.1]), Expression::Happy);
        assert_eq!(Expression::Surprised.label(), "surprised");
    }
}
