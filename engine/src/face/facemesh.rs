//! FaceMesh (`face_landmark.tflite`, "facemesh-lite"): a 3×3 stride-2
//! convolution to 16 channels, 14 PReLU BlazeBlocks down to 6×6×128
//! (stride 2 at blocks 3, 6, 9 and 12; channels 16→32→64→128), then two
//! branches. Landmarks: three more blocks (stride 2 at the first) to
//! 3×3×128, a 1×1 convolution to 32 with PReLU, one block, and a 3×3
//! "VALID" convolution to 1404 = 468 × (x, y, z) in 192-pixel units of the
//! input. Face flag: one stride-2 block, 1×1 to 32 with PReLU, one block,
//! and a 3×3 "VALID" convolution to one logit.
//!
//! MediaPipe's graph around it (`face_detection_front_detection_to_roi.pbtxt`,
//! `face_landmark_cpu.pbtxt`): the region of interest is the detection box's
//! centre, a square 1.5× its longer side, rotated by the angle of the line
//! from the right eye to the left; it is sampled to 192×192 in [0, 1]
//! (replicating edge pixels), and the landmarks are projected back through
//! the same rotation, z scaled as x. The presence score is the flag's sigmoid.

use std::path::Path;

use candle_core::{Device, Tensor};

use super::blazeface::{Detection, Keypoint};
use super::{
    Activation, BlazeBlock, Border, Conv, FaceError, Pointwise, RgbImage, Roi, Weights, check_image, sample, sigmoid,
};

/// Input side in pixels.
pub const INPUT: usize = 192;
/// Points in the mesh.
pub const LANDMARKS: usize = 468;
/// How much larger than the detection box the region is.
const ROI_SCALE: f32 = 1.5;
/// Channels after the stem and each trunk block.
const CHANNELS: [usize; 15] = [16, 16, 16, 32, 32, 32, 64, 64, 64, 128, 128, 128, 128, 128, 128];
const STRIDE_2: [usize; 4] = [3, 6, 9, 12];

impl Roi {
    /// MediaPipe's region for a detection: its box centre, 1.5× its longer
    /// side, turned so the eyes are level.
    pub fn from_detection(detection: &Detection) -> Roi {
        let [x0, y0] = detection.keypoint(Keypoint::RightEye);
        let [x1, y1] = detection.keypoint(Keypoint::LeftEye);
        let side = detection.bbox.width.max(detection.bbox.height) * ROI_SCALE;
        Roi { center: detection.bbox.center(), size: side, rotation: (y1 - y0).atan2(x1 - x0) }
    }
}

/// The mesh of one face.
#[derive(Debug, Clone)]
pub struct Mesh {
    /// 468 (x, y, z) in source-image pixels; z is depth relative to the
    /// face's centre, smaller is nearer the camera, in the same scale as x.
    pub points: Vec<[f32; 3]>,
    /// P(a face fills the region), from the face-flag output.
    pub presence: f32,
    /// The region the model looked at.
    pub roi: Roi,
}

/// The model: weights only, shared read-only.
pub struct FaceMesh {
    stem: Conv,
    stem_act: Activation,
    trunk: Vec<BlazeBlock>,
    /// Three blocks, a 1×1 convolution with PReLU, one block.
    landmark_blocks: Vec<BlazeBlock>,
    landmark_squeeze: (Pointwise, Activation),
    landmark_last: BlazeBlock,
    landmark_out: Pointwise,
    flag_block: BlazeBlock,
    flag_squeeze: (Pointwise, Activation),
    flag_last: BlazeBlock,
    flag_out: Pointwise,
    device: Device,
}

impl std::fmt::Debug for FaceMesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaceMesh").field("device", &self.device).finish_non_exhaustive()
    }
}

impl FaceMesh {
    /// Loads `model.safetensors` as converted by `tete models fetch facemesh`.
    pub fn load(path: &Path, device: &Device) -> Result<Self, FaceError> {
        let mut w = Weights::load("FaceMesh", path, device)?;
        let stem = w.conv("conv2d_1", 3, 3, CHANNELS[0], 2)?;
        let stem_act = w.prelu("p_re_lu_1", CHANNELS[0])?;
        // Block i: depthwise_conv2d_{i}, conv2d_{i+1}, p_re_lu_{i+1}.
        let block = |w: &mut Weights, dw: usize, pw: usize, act: usize, cin: usize, cout: usize, stride| {
            BlazeBlock::new(
                w.depthwise(&format!("depthwise_conv2d_{dw}"), cin, stride)?,
                w.pointwise(&format!("conv2d_{pw}"), cin, cout)?,
                w.prelu(&format!("p_re_lu_{act}"), cout)?,
            )
        };
        let mut trunk = Vec::with_capacity(14);
        let mut pads = 0;
        for i in 1..=14 {
            let (cin, cout) = (CHANNELS[i - 1], CHANNELS[i]);
            if cout > cin {
                pads += 1;
                w.channel_padding(&format!("channel_padding_{pads}"), cin, cout)?;
            }
            let stride = if STRIDE_2.contains(&i) { 2 } else { 1 };
            trunk.push(block(&mut w, i, i + 1, i + 1, cin, cout, stride)?);
        }
        let c = 128;
        let landmark_blocks = vec![
            block(&mut w, 15, 16, 16, c, c, 2)?,
            block(&mut w, 16, 17, 17, c, c, 1)?,
            block(&mut w, 17, 18, 18, c, c, 1)?,
        ];
        let landmark_squeeze = (w.pointwise("conv2d_19", c, 32)?, w.prelu("p_re_lu_19", 32)?);
        let landmark_last = block(&mut w, 18, 20, 20, 32, 32, 1)?;
        let landmark_out = w.dense("conv2d_21", 3, 32, LANDMARKS * 3)?;
        let flag_block = block(&mut w, 23, 28, 26, c, c, 2)?;
        let flag_squeeze = (w.pointwise("conv2d_29", c, 32)?, w.prelu("p_re_lu_27", 32)?);
        let flag_last = block(&mut w, 24, 30, 28, 32, 32, 1)?;
        let flag_out = w.dense("conv2d_31", 3, 32, 1)?;
        Ok(Self {
            stem,
            stem_act,
            trunk,
            landmark_blocks,
            landmark_squeeze,
            landmark_last,
            landmark_out,
            flag_block,
            flag_squeeze,
            flag_last,
            flag_out,
            device: device.clone(),
        })
    }

    /// Runs the net on a `(1, 192, 192, 3)` NHWC tensor with values in
    /// [0, 1]. Returns the 468 (x, y, z) in input pixels and the face-flag logit.
    pub fn forward(&self, input: &Tensor) -> Result<(Vec<[f32; 3]>, f32), FaceError> {
        if input.dims() != [1, INPUT, INPUT, 3] {
            return Err(FaceError::Input { actual: input.dims().to_vec(), expected: vec![1, INPUT, INPUT, 3] });
        }
        let mut x = self.stem_act.forward(&self.stem.forward(input)?)?;
        for block in &self.trunk {
            x = block.forward(&x)?;
        }
        let flatten = |t: Tensor| -> candle_core::Result<Tensor> {
            let n = t.elem_count();
            t.reshape((1, 1, 1, n))
        };
        let mut m = x.clone();
        for block in &self.landmark_blocks {
            m = block.forward(&m)?;
        }
        m = self.landmark_squeeze.1.forward(&self.landmark_squeeze.0.forward(&m)?)?;
        m = self.landmark_last.forward(&m)?;
        let coords = self.landmark_out.forward(&flatten(m)?)?.flatten_all()?.to_vec1::<f32>()?;

        let mut f = self.flag_block.forward(&x)?;
        f = self.flag_squeeze.1.forward(&self.flag_squeeze.0.forward(&f)?)?;
        f = self.flag_last.forward(&f)?;
        let flag = self.flag_out.forward(&flatten(f)?)?.flatten_all()?.to_vec1::<f32>()?[0];
        Ok((coords.chunks_exact(3).map(|p| [p[0], p[1], p[2]]).collect(), flag))
    }

    /// The mesh of the face `detection` found in `image`.
    pub fn landmarks(&self, image: &RgbImage, detection: &Detection) -> Result<Mesh, FaceError> {
        self.landmarks_in(image, Roi::from_detection(detection))
    }

    /// The mesh in a given region (e.g. one derived from the previous
    /// frame's mesh when tracking).
    pub fn landmarks_in(&self, image: &RgbImage, roi: Roi) -> Result<Mesh, FaceError> {
        check_image(image)?;
        let input = sample(image, &roi, INPUT, Border::Replicate, 0.0, 1.0, &self.device)?;
        let (coords, flag) = self.forward(&input)?;
        let s = INPUT as f32;
        let points = coords
            .iter()
            .map(|&[x, y, z]| {
                let [px, py] = roi.to_image(x / s, y / s);
                [px, py, z / s * roi.size]
            })
            .collect();
        Ok(Mesh { points, presence: sigmoid(flag), roi })
    }
}
