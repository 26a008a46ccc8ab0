//! BlazeFace short-range (`face_detection_short_range.tflite`): a 5×5
//! stride-2 convolution to 24 channels, 16 ReLU BlazeBlocks (stride 2 at
//! blocks 2, 5 and 11; channels 24→28→32→…→88 by 4 to 8, then 96), and
//! SSD heads of 1×1 convolutions on the 16×16×88 map (block 10: 2 anchors
//! per cell) and the 8×8×96 map (block 15: 6 anchors per cell): 896
//! anchors, each with a score logit and 16 regressors (box centre x, y,
//! width, height, then 6 keypoints x, y, in 128-pixel units relative to
//! the anchor centre).
//!
//! MediaPipe's graph around it (`face_detection_short_range.pbtxt`,
//! `face_detection.pbtxt`): the image letterboxed to 128×128 in [-1, 1]
//! with black borders, sampled as MediaPipe samples it; SSD anchors of
//! fixed size 1 (strides 8, 16, 16, 16; two anchors per layer, same-stride
//! layers merged); scores clipped to ±100 and passed through a sigmoid,
//! kept from 0.5; weighted non-max suppression at IoU 0.3 (each kept box
//! is the score-weighted mean of the boxes it suppresses, with the top
//! score).

use std::path::Path;

use candle_core::{Device, Tensor};

use super::{
    Activation, BlazeBlock, Border, Conv, FaceError, Pointwise, RgbImage, Roi, Weights, check_image, sample, sigmoid,
};

/// Input side in pixels.
pub const INPUT: usize = 128;
/// SSD anchors: 16×16×2 at stride 8, then 8×8×6 at stride 16.
pub const ANCHORS: usize = 896;
/// Regressors per anchor: box (4) and 6 keypoints (2 each).
pub const COORDS: usize = 16;
const KEYPOINTS: usize = 6;
const SCORE_CLIP: f32 = 100.0;
/// Channels after the stem and each of the 16 blocks.
const CHANNELS: [usize; 17] = [24, 24, 28, 32, 36, 42, 48, 56, 64, 72, 80, 88, 96, 96, 96, 96, 96];
const STRIDE_2: [usize; 3] = [2, 5, 11];
/// The block whose output feeds the 16×16 heads.
const FINE_BLOCK: usize = 10;

/// The six keypoints, in the model's order ("right" is the subject's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keypoint {
    RightEye = 0,
    LeftEye = 1,
    NoseTip = 2,
    Mouth = 3,
    RightEar = 4,
    LeftEar = 5,
}

/// An axis-aligned box in source-image pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoundingBox {
    pub xmin: f32,
    pub ymin: f32,
    pub width: f32,
    pub height: f32,
}

impl BoundingBox {
    pub fn center(&self) -> [f32; 2] {
        [self.xmin + self.width / 2.0, self.ymin + self.height / 2.0]
    }

    pub fn contains(&self, [x, y]: [f32; 2]) -> bool {
        (self.xmin..=self.xmin + self.width).contains(&x) && (self.ymin..=self.ymin + self.height).contains(&y)
    }

    fn intersection(&self, other: &BoundingBox) -> f32 {
        let w = (self.xmin + self.width).min(other.xmin + other.width) - self.xmin.max(other.xmin);
        let h = (self.ymin + self.height).min(other.ymin + other.height) - self.ymin.max(other.ymin);
        if w <= 0.0 || h <= 0.0 { 0.0 } else { w * h }
    }

    fn iou(&self, other: &BoundingBox) -> f32 {
        let inter = self.intersection(other);
        if inter <= 0.0 {
            return 0.0;
        }
        inter / (self.width * self.height + other.width * other.height - inter)
    }

    /// The share of this box's area inside `other`.
    fn inside_share(&self, other: &BoundingBox) -> f32 {
        self.intersection(other) / (self.width * self.height).max(f32::MIN_POSITIVE)
    }
}

/// One face: box and keypoints in source-image pixels, score in [0, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    pub bbox: BoundingBox,
    /// (x, y) of each [`Keypoint`], in its order.
    pub keypoints: [[f32; 2]; KEYPOINTS],
    pub score: f32,
}

impl Detection {
    pub fn keypoint(&self, k: Keypoint) -> [f32; 2] {
        self.keypoints[k as usize]
    }

    /// Maps every coordinate through `f`, the box by its corners.
    fn map(&self, f: impl Fn([f32; 2]) -> [f32; 2]) -> Detection {
        let [x0, y0] = f([self.bbox.xmin, self.bbox.ymin]);
        let [x1, y1] = f([self.bbox.xmin + self.bbox.width, self.bbox.ymin + self.bbox.height]);
        Detection {
            bbox: BoundingBox { xmin: x0, ymin: y0, width: x1 - x0, height: y1 - y0 },
            keypoints: self.keypoints.map(&f),
            score: self.score,
        }
    }
}

/// How much more a face found only in a tile must score (see [`BlazeFace::detect_tiled`]).
const TILE_SCORE_MARGIN: f32 = 0.15;

/// MediaPipe's thresholds for the short-range model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectorConfig {
    /// Lowest score kept (`min_score_thresh`).
    pub min_score: f32,
    /// Boxes overlapping a better one by more than this IoU merge into it
    /// (`min_suppression_threshold`).
    pub min_suppression_iou: f32,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self { min_score: 0.5, min_suppression_iou: 0.3 }
    }
}

/// The net's outputs for one 128×128 input, anchor by anchor.
#[derive(Debug, Clone)]
pub struct RawDetections {
    /// `[ANCHORS * COORDS]`, as the `regressors` output.
    pub regressors: Vec<f32>,
    /// `[ANCHORS]` score logits, as the `classificators` output.
    pub logits: Vec<f32>,
}

/// The model: weights and anchors, shared read-only.
pub struct BlazeFace {
    stem: Conv,
    blocks: Vec<BlazeBlock>,
    /// Score and regressor heads on the 16×16 and the 8×8 maps.
    heads: [(Pointwise, Pointwise); 2],
    /// Anchor centres in [0, 1], in output order.
    anchors: Vec<[f32; 2]>,
    device: Device,
}

impl std::fmt::Debug for BlazeFace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlazeFace").field("device", &self.device).finish_non_exhaustive()
    }
}

impl BlazeFace {
    /// Loads `model.safetensors` as converted by `tete models fetch blazeface-short-range`.
    pub fn load(path: &Path, device: &Device) -> Result<Self, FaceError> {
        let mut w = Weights::load("BlazeFace", path, device)?;
        let stem = w.conv("conv2d", 5, 3, CHANNELS[0], 2)?;
        let mut blocks = Vec::with_capacity(16);
        for i in 0..16 {
            let (cin, cout) = (CHANNELS[i], CHANNELS[i + 1]);
            let dw = if i == 0 { "depthwise_conv2d".to_string() } else { format!("depthwise_conv2d_{i}") };
            let stride = if STRIDE_2.contains(&i) { 2 } else { 1 };
            if cout > cin {
                let pad_index = CHANNELS[..=i].windows(2).filter(|p| p[1] > p[0]).count();
                let pad =
                    if pad_index == 0 { "channel_padding".to_string() } else { format!("channel_padding_{pad_index}") };
                w.channel_padding(&pad, cin, cout)?;
            }
            blocks.push(BlazeBlock::new(
                w.depthwise(&dw, cin, stride)?,
                w.pointwise(&format!("conv2d_{}", i + 1), cin, cout)?,
                Activation::Relu,
            )?);
        }
        let (fine, coarse) = (CHANNELS[FINE_BLOCK + 1], CHANNELS[16]);
        let heads = [
            (w.pointwise("classificator_8", fine, 2)?, w.pointwise("regressor_8", fine, 2 * COORDS)?),
            (w.pointwise("classificator_16", coarse, 6)?, w.pointwise("regressor_16", coarse, 6 * COORDS)?),
        ];
        Ok(Self { stem, blocks, heads, anchors: anchors(), device: device.clone() })
    }

    /// Runs the net on a `(1, 128, 128, 3)` NHWC tensor with values in [-1, 1].
    pub fn forward(&self, input: &Tensor) -> Result<RawDetections, FaceError> {
        if input.dims() != [1, INPUT, INPUT, 3] {
            return Err(FaceError::Input { actual: input.dims().to_vec(), expected: vec![1, INPUT, INPUT, 3] });
        }
        Ok(self.forward_batch(input)?.remove(0))
    }

    /// [`Self::forward`] on `(n, 128, 128, 3)`: the outputs of each input.
    pub fn forward_batch(&self, input: &Tensor) -> Result<Vec<RawDetections>, FaceError> {
        let n = match input.dims() {
            &[n, INPUT, INPUT, 3] if n > 0 => n,
            dims => return Err(FaceError::Input { actual: dims.to_vec(), expected: vec![1, INPUT, INPUT, 3] }),
        };
        let mut x = self.stem.forward(input)?.relu()?;
        let mut fine = None;
        for (i, block) in self.blocks.iter().enumerate() {
            x = block.forward(&x)?;
            if i == FINE_BLOCK {
                fine = Some(x.clone());
            }
        }
        let maps = [fine.expect("16 blocks"), x];
        let mut out: Vec<RawDetections> = (0..n)
            .map(|_| RawDetections {
                regressors: Vec::with_capacity(ANCHORS * COORDS),
                logits: Vec::with_capacity(ANCHORS),
            })
            .collect();
        for (map, (score, regress)) in maps.iter().zip(&self.heads) {
            // NHWC flattening puts the anchors of a cell together: the output order.
            let (scores, regressions) = (score.forward(map)?, regress.forward(map)?);
            for (i, raw) in out.iter_mut().enumerate() {
                raw.logits.extend(scores.get(i)?.flatten_all()?.to_vec1::<f32>()?);
                raw.regressors.extend(regressions.get(i)?.flatten_all()?.to_vec1::<f32>()?);
            }
        }
        Ok(out)
    }

    /// Faces in `image` with MediaPipe's default thresholds, best first.
    pub fn detect(&self, image: &RgbImage) -> Result<Vec<Detection>, FaceError> {
        self.detect_with(image, &DetectorConfig::default())
    }

    /// Faces in `image`, one pass of the net over the whole of it (letterboxed).
    pub fn detect_with(&self, image: &RgbImage, config: &DetectorConfig) -> Result<Vec<Detection>, FaceError> {
        self.detect_tiled(image, config, 1)
    }

    /// Faces over the whole image (letterboxed) and, with `tiles` > 1, over
    /// `tiles`×`tiles` overlapping tiles of it, merged: the short-range
    /// model misses faces under about a tenth of the frame, and a tile shows
    /// them larger. A face found twice (a box mostly inside a better one)
    /// counts once.
    pub fn detect_tiled(
        &self,
        image: &RgbImage,
        config: &DetectorConfig,
        tiles: u32,
    ) -> Result<Vec<Detection>, FaceError> {
        check_image(image)?;
        let (w, h) = (image.width() as f32, image.height() as f32);
        // The whole image letterboxed, then the tiles, overlapping by a quarter of their side.
        let mut rois = vec![Roi { center: [w / 2.0, h / 2.0], size: w.max(h), rotation: 0.0 }];
        let tiles = tiles.max(1);
        if tiles > 1 {
            let (tw, th) = (w / (tiles as f32 * 0.75 + 0.25), h / (tiles as f32 * 0.75 + 0.25));
            for ty in 0..tiles {
                for tx in 0..tiles {
                    let center = [tw * (0.5 + 0.75 * tx as f32), th * (0.5 + 0.75 * ty as f32)];
                    rois.push(Roi { center, size: tw.max(th), rotation: 0.0 });
                }
            }
        }
        let inputs = rois
            .iter()
            .map(|roi| sample(image, roi, INPUT, Border::Zero, -1.0, 1.0, &self.device))
            .collect::<Result<Vec<_>, _>>()?;
        let raw = self.forward_batch(&Tensor::cat(&inputs, 0)?)?;
        let mut found = Vec::new();
        for (i, (roi, raw)) in rois.iter().zip(&raw).enumerate() {
            // A tile shows more background as face-sized: it must score higher.
            let min_score = if i == 0 { config.min_score } else { config.min_score + TILE_SCORE_MARGIN };
            found.extend(self.decode(raw, min_score).iter().map(|d| d.map(|[x, y]| roi.to_image(x, y))));
        }
        let merged = weighted_nms(found, config.min_suppression_iou);
        if tiles == 1 {
            return Ok(merged);
        }
        let mut kept: Vec<Detection> = Vec::new();
        for d in merged {
            if kept.iter().all(|k| d.bbox.inside_share(&k.bbox) < 0.5 && k.bbox.inside_share(&d.bbox) < 0.5) {
                kept.push(d);
            }
        }
        Ok(kept)
    }

    /// Anchors scoring at least `min_score`, decoded to tensor coordinates in [0, 1].
    fn decode(&self, raw: &RawDetections, min_score: f32) -> Vec<Detection> {
        let mut out = Vec::new();
        for (i, ([ax, ay], logit)) in self.anchors.iter().zip(&raw.logits).enumerate() {
            let score = sigmoid(logit.clamp(-SCORE_CLIP, SCORE_CLIP));
            let r = &raw.regressors[i * COORDS..(i + 1) * COORDS];
            let s = INPUT as f32;
            let (cx, cy, w, h) = (r[0] / s + ax, r[1] / s + ay, r[2] / s, r[3] / s);
            if score < min_score || !(w > 0.0 && h > 0.0) {
                continue;
            }
            let keypoints = std::array::from_fn(|k| [r[4 + 2 * k] / s + ax, r[5 + 2 * k] / s + ay]);
            let bbox = BoundingBox { xmin: cx - w / 2.0, ymin: cy - h / 2.0, width: w, height: h };
            out.push(Detection { bbox, keypoints, score });
        }
        out
    }
}

/// MediaPipe's SSD anchors for this model: centres ((x + 0.5) / cols,
/// (y + 0.5) / rows) of each cell, two per cell and per layer, the three
/// stride-16 layers merged into one 8×8 grid with six per cell.
fn anchors() -> Vec<[f32; 2]> {
    let mut anchors = Vec::with_capacity(ANCHORS);
    for (stride, per_cell) in [(8, 2), (16, 6)] {
        let cells = INPUT / stride;
        for y in 0..cells {
            for x in 0..cells {
                let centre = [(x as f32 + 0.5) / cells as f32, (y as f32 + 0.5) / cells as f32];
                anchors.extend(std::iter::repeat_n(centre, per_cell));
            }
        }
    }
    anchors
}

/// MediaPipe's weighted non-max suppression: the best remaining detection
/// absorbs every remaining one overlapping it by more than `min_iou`
/// (itself included); its box and keypoints become their score-weighted
/// mean, its score stays.
fn weighted_nms(mut detections: Vec<Detection>, min_iou: f32) -> Vec<Detection> {
    detections.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut out = Vec::new();
    while let Some(best) = detections.first().cloned() {
        let (cluster, rest): (Vec<_>, Vec<_>) = detections.into_iter().partition(|d| d.bbox.iou(&best.bbox) > min_iou);
        detections = rest;
        if cluster.is_empty() {
            // The best box has no area to overlap with: keep it as it is.
            detections.remove(0);
            out.push(best);
            continue;
        }
        let total: f32 = cluster.iter().map(|d| d.score).sum();
        let mean = |f: &dyn Fn(&Detection) -> f32| cluster.iter().map(|d| f(d) * d.score).sum::<f32>() / total;
        let (x0, y0) = (mean(&|d| d.bbox.xmin), mean(&|d| d.bbox.ymin));
        let (x1, y1) = (mean(&|d| d.bbox.xmin + d.bbox.width), mean(&|d| d.bbox.ymin + d.bbox.height));
        let keypoints = std::array::from_fn(|k| [mean(&|d| d.keypoints[k][0]), mean(&|d| d.keypoints[k][1])]);
        out.push(Detection {
            bbox: BoundingBox { xmin: x0, ymin: y0, width: x1 - x0, height: y1 - y0 },
            keypoints,
            score: best.score,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchors_follow_mediapipe_layout() {
        let a = anchors();
        assert_eq!(a.len(), ANCHORS);
        assert_eq!(a[0], [1.0 / 32.0, 1.0 / 32.0]);
        assert_eq!(a[1], a[0]);
        assert_eq!(a[2], [3.0 / 32.0, 1.0 / 32.0]);
        assert_eq!(a[511], [31.0 / 32.0, 31.0 / 32.0]);
        assert_eq!(a[512], [1.0 / 16.0, 1.0 / 16.0]);
        assert_eq!(a[517], a[512]);
        assert_eq!(a[518], [3.0 / 16.0, 1.0 / 16.0]);
        assert_eq!(a[895], [15.0 / 16.0, 15.0 / 16.0]);
    }

    fn det(x: f32, score: f32) -> Detection {
        Detection {
            bbox: BoundingBox { xmin: x, ymin: 0.0, width: 1.0, height: 1.0 },
            keypoints: [[x, 0.0]; KEYPOINTS],
            score,
        }
    }

    #[test]
    fn weighted_nms_averages_overlapping_boxes() {
        // 0.0 and 0.2 overlap (IoU 0.67); 5.0 stands apart.
        let out = weighted_nms(vec![det(0.2, 0.6), det(5.0, 0.7), det(0.0, 0.9)], 0.3);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].score, 0.9);
        let want = 0.2 * 0.6 / 1.5;
        assert!((out[0].bbox.xmin - want).abs() < 1e-6, "{}", out[0].bbox.xmin);
        assert!((out[0].keypoints[3][0] - want).abs() < 1e-6);
        assert_eq!(out[1], det(5.0, 0.7));
    }
}
