//! Face analysis in candle: MediaPipe's BlazeFace short-range detector
//! ([`BlazeFace`], 128×128 input, 896 SSD anchors, 6 keypoints) and its
//! FaceMesh landmark model ([`FaceMesh`], 192×192 input, 468 3-D points and
//! a face-presence score), from the weights `tete models fetch` converts out
//! of the `.tflite` files (f16 constants, widened to f32 on load).
//!
//! Both nets are stacks of BlazeBlocks, written here in TFLite's NHWC
//! layout: a 3×3 depthwise convolution ("SAME" padding, asymmetric at
//! stride 2), a 1×1 convolution, and a residual branch that max-pools 2×2
//! at stride 2 and zero-pads channels when the block grows them, summed and
//! activated (ReLU in BlazeFace, PReLU in FaceMesh). The stem is a strided
//! full convolution; the heads are 1×1 (BlazeFace) or 3×3 "VALID"
//! (FaceMesh) convolutions.
//!
//! The pre- and post-processing follow MediaPipe's graphs
//! (`face_detection_short_range.pbtxt`, `face_detection.pbtxt`,
//! `face_detection_front_detection_to_roi.pbtxt`, `face_landmark_cpu.pbtxt`):
//! letterbox to 128×128 in [-1, 1], SSD decoding, weighted non-max
//! suppression; a square region 1.5× the detection's longer side, rotated
//! so the eyes are level, sampled to 192×192 in [0, 1]; landmarks projected
//! back. Images are `image::RgbImage` (decode with the `image` crate);
//! both the letterbox and the rotated crop go through `sample`, which
//! warps a region the way MediaPipe's OpenCV path does. A triangle-filter
//! resize instead (the `image` crate's) moved the detector's keypoints by
//! up to 6 px on a 95-px face of the test portrait: the nets are that
//! sensitive to how the input was sampled.

pub mod animate;
pub mod blazeface;
pub mod facemesh;
pub mod replica;
pub mod rig;
pub mod video;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
pub use image::RgbImage;
use tete_kernels::blaze::{BlockTail, Depthwise3x3, same_padding};

pub use blazeface::{BlazeFace, BoundingBox, Detection, DetectorConfig, Keypoint, RawDetections};
pub use facemesh::{FaceMesh, LANDMARKS, Mesh};
pub use replica::{Replica, ReplicaConfig, ReplicaError};
pub use rig::{HeadPose, MouthShape, Pose, Rig};
pub use video::{LearnedMouth, LearnedMouths};

/// Renders one frame of `replica` in `pose` on the CPU (the reference the
/// GPU renderers are compared with): RGBA8, R in the low byte.
pub fn render_cpu(replica: &Replica, rig: &Rig, pose: &Pose) -> Result<Vec<u32>, tete_kernels::KernelError> {
    let mut out = vec![0u32; replica.portrait.len()];
    tete_kernels::warp::render(&rig.record(pose), &replica.portrait, &mut out)?;
    Ok(out)
}

/// Renders one frame on the CPU as I420, ready for the encoder.
pub fn render_i420_cpu(replica: &Replica, rig: &Rig, pose: &Pose) -> Result<Vec<u8>, tete_kernels::KernelError> {
    tete_kernels::cpu::rgba_to_i420(&render_cpu(replica, rig, pose)?, replica.size, replica.size)
}

#[derive(Debug, thiserror::Error)]
pub enum FaceError {
    #[error("loading {model} weights from {path}: {source}")]
    Load { model: &'static str, path: String, source: candle_core::Error },
    #[error("{model} weights lack {name} (is this the right conversion of the model?)")]
    Missing { model: &'static str, name: String },
    #[error("{model} tensor {name} has shape {actual:?}, expected {expected:?}")]
    Shape { model: &'static str, name: String, actual: Vec<usize>, expected: Vec<usize> },
    #[error("{model} tensor {name}: {what}")]
    Unsupported { model: &'static str, name: String, what: String },
    #[error("the image is {width}×{height} pixels: nothing to look at")]
    EmptyImage { width: u32, height: u32 },
    #[error("input tensor has shape {actual:?}, expected {expected:?}")]
    Input { actual: Vec<usize>, expected: Vec<usize> },
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
}

/// The converted tensors of one model, taken by name with a shape check.
pub(crate) struct Weights {
    model: &'static str,
    tensors: HashMap<String, Tensor>,
}

impl Weights {
    pub(crate) fn load(model: &'static str, path: &Path, device: &Device) -> Result<Self, FaceError> {
        let tensors = candle_core::safetensors::load(path, device).map_err(|source| FaceError::Load {
            model,
            path: path.display().to_string(),
            source,
        })?;
        Ok(Self { model, tensors })
    }

    /// A tensor as stored (the source format's layout), in f32.
    pub(crate) fn take(&mut self, name: &str, shape: &[usize]) -> Result<Tensor, FaceError> {
        let model = self.model;
        let tensor = self.tensors.remove(name).ok_or_else(|| FaceError::Missing { model, name: name.to_string() })?;
        if tensor.dims() != shape {
            return Err(FaceError::Shape {
                model,
                name: name.into(),
                actual: tensor.dims().to_vec(),
                expected: shape.to_vec(),
            });
        }
        Ok(tensor.to_dtype(DType::F32)?)
    }

    /// A full convolution `[out, k, k, in]` with bias, run at `stride`.
    fn conv(&mut self, prefix: &str, k: usize, cin: usize, cout: usize, stride: usize) -> Result<Conv, FaceError> {
        let kernel = self.take(&format!("{prefix}/Kernel"), &[cout, k, k, cin])?;
        Ok(Conv {
            kernel: kernel.permute((0, 3, 1, 2))?.contiguous()?,
            bias: self.take(&format!("{prefix}/Bias"), &[cout])?.reshape((1, cout, 1, 1))?,
            k,
            stride,
        })
    }

    /// A 1×1 convolution `[out, 1, 1, in]`, kept as an `[in, out]` matrix.
    fn pointwise(&mut self, prefix: &str, cin: usize, cout: usize) -> Result<Pointwise, FaceError> {
        let kernel = self.take(&format!("{prefix}/Kernel"), &[cout, 1, 1, cin])?;
        Ok(Pointwise {
            weight: kernel.reshape((cout, cin))?.t()?.contiguous()?,
            bias: self.take(&format!("{prefix}/Bias"), &[cout])?,
        })
    }

    /// A convolution `[out, k, k, in]` over a k×k input with "VALID"
    /// padding (one output pixel): a matrix over the flattened input.
    fn dense(&mut self, prefix: &str, k: usize, cin: usize, cout: usize) -> Result<Pointwise, FaceError> {
        let kernel = self.take(&format!("{prefix}/Kernel"), &[cout, k, k, cin])?;
        Ok(Pointwise {
            weight: kernel.reshape((cout, k * k * cin))?.t()?.contiguous()?,
            bias: self.take(&format!("{prefix}/Bias"), &[cout])?,
        })
    }

    /// A 3×3 depthwise convolution `[1, 3, 3, C]`.
    fn depthwise(&mut self, prefix: &str, c: usize, stride: usize) -> Result<Depthwise, FaceError> {
        let kernel = self.take(&format!("{prefix}/Kernel"), &[1, 3, 3, c])?.reshape((3, 3, c))?;
        Ok(Depthwise::new(&kernel, self.take(&format!("{prefix}/Bias"), &[c])?, stride)?)
    }

    fn prelu(&mut self, name: &str, c: usize) -> Result<Activation, FaceError> {
        Ok(Activation::PRelu(self.take(&format!("{name}/Alpha"), &[1, 1, c])?.reshape(c)?))
    }

    /// Checks that a `PAD` constant only appends `cout - cin` zero channels,
    /// which is what [`BlazeBlock`] does on its residual branch.
    fn channel_padding(&mut self, name: &str, cin: usize, cout: usize) -> Result<(), FaceError> {
        let model = self.model;
        let key = format!("{name}/Paddings");
        let pads = self.tensors.remove(&key).ok_or_else(|| FaceError::Missing { model, name: key.clone() })?;
        let pads = pads.flatten_all()?.to_dtype(DType::I64)?.to_vec1::<i64>()?;
        let want = [0, 0, 0, 0, 0, 0, 0, (cout - cin) as i64];
        if pads != want {
            return Err(FaceError::Unsupported {
                model,
                name: key,
                what: format!("paddings {pads:?}, expected {want:?}"),
            });
        }
        Ok(())
    }
}

/// A full convolution in NHWC, "SAME" padding as TFLite pads it.
struct Conv {
    /// `[out, in, k, k]`, as candle's conv2d takes it.
    kernel: Tensor,
    bias: Tensor,
    k: usize,
    stride: usize,
}

impl Conv {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (_, h, w, _) = x.dims4()?;
        let (top, bottom) = same_padding(h, self.k, self.stride);
        let (left, right) = same_padding(w, self.k, self.stride);
        let x = x.permute((0, 3, 1, 2))?.pad_with_zeros(2, top, bottom)?.pad_with_zeros(3, left, right)?;
        let y = x.conv2d(&self.kernel, 0, self.stride, 1, 1)?.broadcast_add(&self.bias)?;
        y.permute((0, 2, 3, 1))?.contiguous()
    }
}

/// A 1×1 convolution in NHWC (or a "VALID" convolution flattened to one): a matmul.
struct Pointwise {
    /// `[in, out]`.
    weight: Tensor,
    bias: Tensor,
}

impl Pointwise {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (n, h, w, c) = x.dims4()?;
        let y = x.reshape((n * h * w, c))?.matmul(&self.weight)?.broadcast_add(&self.bias)?;
        y.reshape((n, h, w, ()))
    }
}

/// A 3×3 depthwise convolution in NHWC, "SAME" padding as TFLite pads it.
/// On the CPU it is one pass of [`Depthwise3x3`]; elsewhere nine shifted,
/// per-channel scaled copies of the zero-padded input (candle's grouped
/// conv2d runs one convolution per channel, far slower for this shape).
pub(crate) struct Depthwise {
    layer: Depthwise3x3,
    /// The kernel's nine `[C]` taps, row-major.
    taps: Vec<Tensor>,
    bias: Tensor,
    stride: usize,
}

impl Depthwise {
    /// From the kernel `[3, 3, C]` and the bias `[C]`.
    pub(crate) fn new(kernel: &Tensor, bias: Tensor, stride: usize) -> candle_core::Result<Self> {
        let (_, _, c) = kernel.dims3()?;
        let taps = (0..9).map(|t| kernel.get(t / 3)?.get(t % 3)).collect::<candle_core::Result<Vec<_>>>()?;
        let flat = kernel.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let layer = Depthwise3x3::new(flat, bias.to_dtype(DType::F32)?.to_vec1::<f32>()?, stride)
            .map_err(|e| candle_core::Error::Msg(format!("{e} ({c} channels)")))?;
        Ok(Self { layer, taps, bias, stride })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if x.device().is_cpu() && x.dtype() == DType::F32 {
            x.contiguous()?.apply_op1_no_bwd(self)
        } else {
            self.forward_composed(x)
        }
    }

    /// The same with candle's tensor ops, on any device.
    fn forward_composed(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (n, h, w, c) = x.dims4()?;
        let (oh, ow) = (h.div_ceil(self.stride), w.div_ceil(self.stride));
        let mut acc = self.bias.reshape((1, 1, 1, c))?.broadcast_as((n, oh, ow, c))?.contiguous()?;
        if self.stride == 1 {
            let xp = x.pad_with_zeros(1, 1, 1)?.pad_with_zeros(2, 1, 1)?;
            for (t, tap) in self.taps.iter().enumerate() {
                let view = xp.narrow(1, t / 3, h)?.narrow(2, t % 3, w)?;
                acc = (acc + view.contiguous()?.broadcast_mul(tap)?)?;
            }
        } else {
            // Stride 2: output row r reads padded rows 2r + i, i = 0, 1, 2.
            // Split the padded input into its four (row, column) parity
            // phases; tap (i, j) is phase (i % 2, j % 2) shifted by (i / 2, j / 2).
            let ((top, _), (left, _)) = (same_padding(h, 3, 2), same_padding(w, 3, 2));
            let (ph, pw) = (2 * oh + 2, 2 * ow + 2);
            let xp = x.pad_with_zeros(1, top, ph - h - top)?.pad_with_zeros(2, left, pw - w - left)?;
            let xp = xp.reshape((n, oh + 1, 2, ow + 1, 2, c))?;
            let phase = |a: usize, b: usize| -> candle_core::Result<Tensor> {
                xp.narrow(2, a, 1)?.narrow(4, b, 1)?.reshape((n, oh + 1, ow + 1, c))
            };
            let phases = [phase(0, 0)?, phase(0, 1)?, phase(1, 0)?, phase(1, 1)?];
            for (t, tap) in self.taps.iter().enumerate() {
                let (i, j) = (t / 3, t % 3);
                let view = phases[(i % 2) * 2 + j % 2].narrow(1, i / 2, oh)?.narrow(2, j / 2, ow)?;
                acc = (acc + view.contiguous()?.broadcast_mul(tap)?)?;
            }
        }
        Ok(acc)
    }
}

impl candle_core::CustomOp1 for Depthwise {
    fn name(&self) -> &'static str {
        "depthwise-3x3"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let (n, h, w, c) = layout.shape().dims4()?;
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("depthwise-3x3 takes a contiguous tensor")
        };
        if c != self.layer.channels() {
            candle_core::bail!("depthwise-3x3 has {} channels, the input {c}", self.layer.channels())
        }
        let out =
            self.layer.forward(&storage.as_slice::<f32>()?[start..end], n, h, w).map_err(candle_core::Error::wrap)?;
        let (oh, ow) = self.layer.output_size(h, w);
        Ok((candle_core::CpuStorage::F32(out), (n, oh, ow, c).into()))
    }
}

enum Activation {
    Relu,
    /// Per-channel slopes for negative inputs.
    PRelu(Tensor),
}

impl Activation {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Activation::Relu => x.relu(),
            Activation::PRelu(alpha) => x.relu()? + x.minimum(0f32)?.broadcast_mul(alpha)?,
        }
    }
}

/// Depthwise 3×3, pointwise 1×1, plus the residual (max-pooled at stride
/// 2, zero-padded to the output channels), then the activation. On the
/// CPU: the depthwise kernel, the matmul, and [`BlockTail`] for the rest.
struct BlazeBlock {
    depthwise: Depthwise,
    pointwise: Pointwise,
    activation: Activation,
    tail: BlockTail,
}

impl BlazeBlock {
    fn new(depthwise: Depthwise, pointwise: Pointwise, activation: Activation) -> Result<Self, FaceError> {
        let slopes = match &activation {
            Activation::Relu => None,
            Activation::PRelu(alpha) => Some(alpha.to_dtype(DType::F32)?.to_vec1::<f32>()?),
        };
        let bias = pointwise.bias.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let tail = BlockTail::new(bias, slopes, depthwise.stride).map_err(candle_core::Error::wrap)?;
        Ok(Self { depthwise, pointwise, activation, tail })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if !(x.device().is_cpu() && x.dtype() == DType::F32) {
            return self.forward_composed(x);
        }
        let d = self.depthwise.forward(x)?;
        let (n, h, w, c) = d.dims4()?;
        let y = d.reshape((n * h * w, c))?.matmul(&self.pointwise.weight)?.reshape((n, h, w, ()))?;
        y.apply_op2_no_bwd(&x.contiguous()?, self)
    }

    /// The same with candle's tensor ops, on any device.
    fn forward_composed(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = self.pointwise.forward(&self.depthwise.forward_composed(x)?)?;
        let mut skip = if self.depthwise.stride == 2 { max_pool_2x2(x)? } else { x.clone() };
        let (cin, cout) = (skip.dim(3)?, y.dim(3)?);
        if cout > cin {
            skip = skip.pad_with_zeros(3, 0, cout - cin)?;
        }
        self.activation.forward(&(skip + y)?)
    }
}

/// The tail on `(matmul output, block input)`.
impl candle_core::CustomOp2 for BlazeBlock {
    fn name(&self) -> &'static str {
        "blaze-block-tail"
    }

    fn cpu_fwd(
        &self,
        y: &candle_core::CpuStorage,
        y_layout: &candle_core::Layout,
        x: &candle_core::CpuStorage,
        x_layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let (Some((y0, y1)), Some((x0, x1))) = (y_layout.contiguous_offsets(), x_layout.contiguous_offsets()) else {
            candle_core::bail!("blaze-block-tail takes contiguous tensors")
        };
        let (n, h, w, cin) = x_layout.shape().dims4()?;
        let (x, y) = (&x.as_slice::<f32>()?[x0..x1], &y.as_slice::<f32>()?[y0..y1]);
        let out = self.tail.forward(y, x, n, [h, w, cin]).map_err(candle_core::Error::wrap)?;
        Ok((candle_core::CpuStorage::F32(out), y_layout.shape().clone()))
    }
}

/// 2×2 max pooling at stride 2 in NHWC (even sizes, as in both nets),
/// through candle's NCHW pooling (its reductions over the inner axes of a
/// reshaped tensor were several times slower).
fn max_pool_2x2(x: &Tensor) -> candle_core::Result<Tensor> {
    x.permute((0, 3, 1, 2))?.max_pool2d(2)?.permute((0, 2, 3, 1))?.contiguous()
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// A square region of the source image, turned about its centre.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Roi {
    /// Centre in source-image pixels.
    pub center: [f32; 2],
    /// Side in source-image pixels.
    pub size: f32,
    /// Radians; the region's x axis points along (cos, sin) in the image (y down).
    pub rotation: f32,
}

impl Roi {
    /// The image point at (u, v) of the region, (0, 0) its top-left
    /// corner and (1, 1) its bottom-right.
    pub fn to_image(&self, u: f32, v: f32) -> [f32; 2] {
        let (dx, dy) = ((u - 0.5) * self.size, (v - 0.5) * self.size);
        let (sin, cos) = self.rotation.sin_cos();
        [self.center[0] + cos * dx - sin * dy, self.center[1] + sin * dx + cos * dy]
    }
}

/// What the sampler reads outside the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Border {
    /// Black (the detector's letterbox).
    Zero,
    /// The nearest edge pixel (the landmark model's crop).
    Replicate,
}

/// MediaPipe's `ImageToTensorCalculator` on the CPU: `roi` of `image`
/// warped onto a `size`×`size` grid the way its OpenCV path does it, so
/// both pipelines see the same pixels. Output pixel (u, v) reads the
/// source at the region point (u / size, v / size), source pixel centres
/// at integer coordinates (`cv::warpPerspective` from the region's corners
/// to the grid's); bilinear weights in steps of 1/32 and the result rounded
/// to 8 bits, as OpenCV interpolates 8-bit images. Values then map from
/// [0, 255] to [lo, hi]. Returns a `(1, size, size, 3)` tensor.
fn sample(
    image: &RgbImage,
    roi: &Roi,
    size: usize,
    border: Border,
    lo: f32,
    hi: f32,
    device: &Device,
) -> candle_core::Result<Tensor> {
    const STEPS: f32 = 32.0;
    let (w, h) = (image.width() as i64, image.height() as i64);
    let raw = image.as_raw();
    let fetch = |x: i64, y: i64| -> [f32; 3] {
        let (x, y) = match border {
            Border::Replicate => (x.clamp(0, w - 1), y.clamp(0, h - 1)),
            Border::Zero if x < 0 || y < 0 || x >= w || y >= h => return [0.0; 3],
            Border::Zero => (x, y),
        };
        let i = ((y * w + x) * 3) as usize;
        [raw[i] as f32, raw[i + 1] as f32, raw[i + 2] as f32]
    };
    let scale = (hi - lo) / 255.0;
    // Output pixel (u, v) reads origin + u · step_u + v · step_v.
    let origin = roi.to_image(0.0, 0.0);
    let along = |p: [f32; 2]| [p[0] - origin[0], p[1] - origin[1]];
    let (step_u, step_v) = (along(roi.to_image(1.0 / size as f32, 0.0)), along(roi.to_image(0.0, 1.0 / size as f32)));
    let mut out = Vec::with_capacity(size * size * 3);
    for v in 0..size {
        for u in 0..size {
            let (u, v) = (u as f32, v as f32);
            let (x, y) = (origin[0] + u * step_u[0] + v * step_v[0], origin[1] + u * step_u[1] + v * step_v[1]);
            let (qx, qy) = ((x * STEPS).round() as i64, (y * STEPS).round() as i64);
            let (x0, y0) = (qx.div_euclid(32), qy.div_euclid(32));
            let (ax, ay) = (qx.rem_euclid(32) as f32 / STEPS, qy.rem_euclid(32) as f32 / STEPS);
            let (p00, p10, p01, p11) = (fetch(x0, y0), fetch(x0 + 1, y0), fetch(x0, y0 + 1), fetch(x0 + 1, y0 + 1));
            for c in 0..3 {
                let top = p00[c] * (1.0 - ax) + p10[c] * ax;
                let bottom = p01[c] * (1.0 - ax) + p11[c] * ax;
                out.push((top * (1.0 - ay) + bottom * ay).round() * scale + lo);
            }
        }
    }
    Tensor::from_vec(out, (1, size, size, 3), device)
}

fn check_image(image: &RgbImage) -> Result<(), FaceError> {
    if image.width() == 0 || image.height() == 0 {
        return Err(FaceError::EmptyImage { width: image.width(), height: image.height() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel and the composed ops against the kernels' reference,
    /// both strides, odd and even sizes, a batch of two.
    #[test]
    fn depthwise_both_ways_match_the_reference() {
        let dev = Device::Cpu;
        let (n, c) = (2, 3);
        let k = tete_kernels::testdata::uniform(9 * c, 1);
        let bias = tete_kernels::testdata::uniform(c, 2);
        let kt = Tensor::from_vec(k.clone(), (3, 3, c), &dev).unwrap();
        for (h, w) in [(6, 5), (8, 8), (1, 1)] {
            let x = tete_kernels::testdata::uniform(n * h * w * c, (h * w) as u64);
            let xt = Tensor::from_vec(x.clone(), (n, h, w, c), &dev).unwrap();
            for stride in [1, 2] {
                let dw = Depthwise::new(&kt, Tensor::new(bias.as_slice(), &dev).unwrap(), stride).unwrap();
                let want = tete_kernels::cpu::depthwise3x3(&x, [n, h, w, c], &k, &bias, stride);
                for (how, y) in [("kernel", dw.forward(&xt)), ("composed", dw.forward_composed(&xt))] {
                    let y = y.unwrap();
                    assert_eq!(y.dims(), [n, h.div_ceil(stride), w.div_ceil(stride), c], "{how}");
                    for (g, e) in y.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().zip(&want) {
                        assert!((g - e).abs() < 1e-5, "{how}, {h}×{w} stride {stride}: {g} vs {e}");
                    }
                }
            }
        }
    }

    /// A whole block on the CPU (depthwise kernel, matmul, tail kernel)
    /// against the composed ops: ReLU and PReLU, stride 1 and 2, growing
    /// channels.
    #[test]
    fn blaze_block_both_ways_agree() {
        let dev = Device::Cpu;
        let noise = |n: usize, seed: u64, shape: &[usize]| {
            Tensor::from_vec(tete_kernels::testdata::uniform(n, seed), shape, &dev).unwrap()
        };
        for (seed, (cin, cout, stride, prelu)) in
            [(4, 4, 1, false), (4, 6, 2, true), (3, 5, 1, true)].into_iter().enumerate()
        {
            let seed = 100 + 10 * seed as u64;
            let depthwise =
                Depthwise::new(&noise(9 * cin, seed, &[3, 3, cin]), noise(cin, seed + 1, &[cin]), stride).unwrap();
            let pointwise =
                Pointwise { weight: noise(cin * cout, seed + 2, &[cin, cout]), bias: noise(cout, seed + 3, &[cout]) };
            let activation = if prelu { Activation::PRelu(noise(cout, seed + 4, &[cout])) } else { Activation::Relu };
            let block = BlazeBlock::new(depthwise, pointwise, activation).unwrap();
            let x = noise(2 * 8 * 6 * cin, seed + 5, &[2, 8, 6, cin]);
            let (fast, composed) = (block.forward(&x).unwrap(), block.forward_composed(&x).unwrap());
            assert_eq!(fast.dims(), [2, 8 / stride, 6 / stride, cout]);
            assert_eq!(fast.dims(), composed.dims());
            let diff = (fast - composed).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(diff < 1e-5, "{cin}→{cout} stride {stride}: {diff}");
        }
    }

    #[test]
    fn roi_turns_about_its_centre() {
        let roi = Roi { center: [100.0, 50.0], size: 20.0, rotation: std::f32::consts::FRAC_PI_2 };
        // The region's x axis points down the image.
        let [x, y] = roi.to_image(1.0, 0.5);
        assert!((x - 100.0).abs() < 1e-4 && (y - 60.0).abs() < 1e-4, "({x}, {y})");
        assert_eq!(roi.to_image(0.5, 0.5), [100.0, 50.0]);
    }

    #[test]
    fn sampling_an_aligned_region_copies_pixels() {
        let image = RgbImage::from_fn(4, 4, |x, y| image::Rgb([(x * 60) as u8, (y * 60) as u8, 7]));
        let roi = Roi { center: [2.0, 2.0], size: 4.0, rotation: 0.0 };
        let crop = sample(&image, &roi, 4, Border::Zero, 0.0, 255.0, &Device::Cpu).unwrap();
        let crop = crop.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for (i, px) in crop.chunks_exact(3).enumerate() {
            let (x, y) = (i % 4, i / 4);
            assert_eq!(px, [x as f32 * 60.0, y as f32 * 60.0, 7.0], "({x}, {y})");
        }
        // Half a pixel right: the mean of neighbours, black past the edge
        // or the edge pixel repeated.
        let shifted = Roi { center: [2.5, 2.0], ..roi };
        let zero = sample(&image, &shifted, 4, Border::Zero, 0.0, 255.0, &Device::Cpu).unwrap();
        let replicate = sample(&image, &shifted, 4, Border::Replicate, 0.0, 255.0, &Device::Cpu).unwrap();
        let red = |t: Tensor, x: usize| t.get(0).unwrap().get(0).unwrap().get(x).unwrap().get(0).unwrap();
        assert_eq!(red(zero.clone(), 0).to_scalar::<f32>().unwrap(), 30.0);
        assert_eq!(red(zero, 3).to_scalar::<f32>().unwrap(), 90.0);
        assert_eq!(red(replicate, 3).to_scalar::<f32>().unwrap(), 180.0);
    }
}
