//! The face rig: which FaceMesh landmarks move for the mouth, the eyelids
//! and the head, and how a [`Pose`] becomes the frame record the warp
//! kernels render (`tete_kernels::warp`).
//!
//! Displacements are built in the portrait's pixels from the replica's own
//! proportions (face height, mouth and eye sizes), so one pose means the
//! same on any face and at any frame size. A replica made from a video
//! also brings the mouth shapes its talking part showed: near each one's
//! shape the mouth is pulled towards it (see `Rig::mouth`).

use serde::{Deserialize, Serialize};
use tete_kernels::warp::{self, HEADER, LID_POINTS, MAX_POINTS, POINT_WORDS, RECORD_WORDS};

use super::replica::Replica;
use super::video::LearnedMouths;

pub const FOREHEAD: usize = 10;
pub const CHIN: usize = 152;
/// Inner lips, corner to corner (78 → 308).
pub const UPPER_INNER: [usize; 11] = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308];
pub const LOWER_INNER: [usize; 11] = [78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308];
/// Outer lips, corner to corner (61 → 291).
pub const UPPER_OUTER: [usize; 11] = [61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291];
pub const LOWER_OUTER: [usize; 11] = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291];
/// Below the lower lip down the chin and along the jaw, with how much of
/// the jaw's drop each follows.
const JAW: [(usize, f32); 19] = [
    (18, 1.0),
    (200, 1.0),
    (199, 1.0),
    (175, 1.0),
    (152, 1.0),
    (83, 0.95),
    (313, 0.95),
    (148, 0.9),
    (377, 0.9),
    (176, 0.8),
    (400, 0.8),
    (149, 0.6),
    (378, 0.6),
    (150, 0.4),
    (379, 0.4),
    (136, 0.25),
    (365, 0.25),
    (172, 0.1),
    (397, 0.1),
];
/// The lip lines, each between its corners, with how far it follows the
/// jaw at its middle (a) and how much less at its ends (b), and its reach
/// in mouth widths. The upper lip's inner edge stays on the upper teeth:
/// raising it would open a strip the portrait has no teeth for.
const LIP_LINES: [(&[usize; 11], f32, f32, f32); 4] = [
    (&UPPER_INNER, 0.0, 0.0, 0.16),
    (&LOWER_INNER, 1.0, 0.55, 0.16),
    (&UPPER_OUTER, -0.03, -0.015, 0.2),
    (&LOWER_OUTER, 0.95, 0.5, 0.2),
];
/// The mouth's corners, outer and inner.
const CORNERS: [usize; 4] = [61, 291, 78, 308];
/// Points that stay put while the mouth moves.
const NOSE_ANCHORS: [usize; 5] = [2, 98, 327, 164, 1];
/// Each eye: upper lid, lower lid, outer and inner corner.
const EYES: [([usize; 7], [usize; 7], usize, usize); 2] = [
    ([246, 161, 160, 159, 158, 157, 173], [7, 163, 144, 145, 153, 154, 155], 33, 133),
    ([466, 388, 387, 386, 385, 384, 398], [249, 390, 373, 374, 380, 381, 382], 263, 362),
];
pub const FACE_OVAL: [usize; 36] = [
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148, 176, 149, 150,
    136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
];

/// The mouth: `open` 0 (lips together) to 1 (wide open jaw), `wide` 0–1
/// (lips spread, as in "ee"), `round` 0–1 (lips pursed, as in "oo").
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct MouthShape {
    pub open: f32,
    pub wide: f32,
    pub round: f32,
}

impl MouthShape {
    pub fn lerp(self, other: MouthShape, t: f32) -> MouthShape {
        MouthShape {
            open: self.open + (other.open - self.open) * t,
            wide: self.wide + (other.wide - self.wide) * t,
            round: self.round + (other.round - self.round) * t,
        }
    }

    /// Euclidean distance over (open, wide, round).
    pub fn distance(self, other: MouthShape) -> f32 {
        ((self.open - other.open).powi(2) + (self.wide - other.wide).powi(2) + (self.round - other.round).powi(2))
            .sqrt()
    }

    fn clamped(self) -> MouthShape {
        MouthShape {
            open: self.open.clamp(0.0, 1.0),
            wide: self.wide.clamp(0.0, 1.0),
            round: self.round.clamp(0.0, 1.0),
        }
    }
}

/// Head motion, in face heights and radians; `scale` 1 is the portrait.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeadPose {
    pub dx: f32,
    pub dy: f32,
    pub roll: f32,
    pub scale: f32,
}

impl Default for HeadPose {
    fn default() -> Self {
        Self { dx: 0.0, dy: 0.0, roll: 0.0, scale: 1.0 }
    }
}

/// Everything one frame shows.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Pose {
    pub mouth: MouthShape,
    /// Lid closure of each eye, 0 open to 1 shut.
    pub blink: [f32; 2],
    pub head: HeadPose,
}

/// A replica's proportions, measured once.
#[derive(Debug, Clone)]
pub struct Rig {
    points: Vec<[f32; 2]>,
    size: u32,
    face_height: f32,
    mouth_width: f32,
    mouth_centre: [f32; 2],
    eyes: [(f32, f32); 2],
    head_centre: [f32; 2],
    ellipse: [f32; 4],
    /// Mouth shapes learned from a video, each as where it was seen and
    /// how it differs from the parametric mouth there (portrait pixels,
    /// one entry per landmark). Empty for a photo.
    learned: Vec<(MouthShape, Vec<[f32; 2]>)>,
}

/// Width of the kernel that blends learned shapes, in (open, wide,
/// round) distance: a learned shape fades to almost nothing 0.4 away.
const LEARNED_SIGMA: f32 = 0.12;
/// The parametric mouth's own weight in the blend, so that far from
/// every learned shape the mouth is the parametric one, and at a learned
/// shape's descriptor it is 1 / (1 + 0.05) of the way to it.
const NO_EXAMPLE: f32 = 0.05;

/// The landmarks [`Rig`] moves for the mouth: each lip line between its
/// corners, the corners, and the jaw.
pub(crate) fn mouth_landmarks() -> impl Iterator<Item = usize> {
    LIP_LINES.iter().flat_map(|(line, ..)| line[1..10].iter().copied()).chain(CORNERS).chain(JAW.map(|(i, _)| i))
}

/// Distance between two points.
pub(crate) fn dist(a: [f32; 2], b: [f32; 2]) -> f32 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt()
}

/// A control point under construction: where it is now and how it moves.
struct Point {
    landmark: usize,
    d: [f32; 2],
    radius: f32,
}

impl Rig {
    pub fn new(replica: &Replica) -> Self {
        let mut rig = Self::parametric(replica);
        rig.learned = rig.learn(&replica.mouths);
        rig
    }

    /// The rig of the replica's proportions alone.
    fn parametric(replica: &Replica) -> Self {
        let p = replica.landmarks.clone();
        let (l, r) = (p[61], p[291]);
        let eyes = EYES.map(|(upper, lower, outer, inner)| (dist(p[outer], p[inner]), dist(p[upper[3]], p[lower[3]])));
        let (mut x0, mut y0, mut x1, mut y1) = (f32::MAX, f32::MAX, f32::MIN, f32::MIN);
        for &i in &FACE_OVAL {
            x0 = x0.min(p[i][0]);
            y0 = y0.min(p[i][1]);
            x1 = x1.max(p[i][0]);
            y1 = y1.max(p[i][1]);
        }
        Self {
            size: replica.size,
            face_height: dist(p[FOREHEAD], p[CHIN]),
            mouth_width: dist(l, r),
            mouth_centre: [(l[0] + r[0]) / 2.0, (p[13][1] + p[14][1]) / 2.0],
            eyes,
            head_centre: p[1],
            ellipse: [(x0 + x1) / 2.0, (y0 + y1) / 2.0, (x1 - x0) / 2.0 * 1.2, (y1 - y0) / 2.0 * 1.15],
            points: p,
            learned: Vec::new(),
        }
    }

    /// Each learned shape as its descriptor and how far the person's
    /// mouth there differs from the parametric one as the same eyes saw
    /// both (FaceMesh on the video, FaceMesh on the rig's rendering), per
    /// landmark in portrait pixels.
    fn learn(&self, mouths: &LearnedMouths) -> Vec<(MouthShape, Vec<[f32; 2]>)> {
        let h = self.face_height;
        mouths
            .shapes
            .iter()
            .map(|learned| {
                let mut residual = vec![[0.0f32; 2]; self.points.len()];
                for (&(i, seen), &(j, rig)) in learned.moves.iter().zip(&learned.parametric) {
                    if i == j && i < residual.len() {
                        residual[i] = [(seen[0] - rig[0]) * h, (seen[1] - rig[1]) * h];
                    }
                }
                (learned.shape.clamped(), residual)
            })
            .collect()
    }

    /// The portrait-pixel jaw drop of a fully open mouth.
    pub fn max_jaw_drop(&self) -> f32 {
        0.1 * self.face_height
    }

    pub fn face_height(&self) -> f32 {
        self.face_height
    }

    /// The mouth's control points for `m`: the parametric mouth, pulled
    /// towards the learned shapes near `m` by a normalised Gaussian kernel
    /// on the distance to each one's descriptor (with the parametric mouth
    /// as one more, constant, term), so it is continuous in `m`, close to
    /// a learned shape at its descriptor and parametric far from them all.
    /// The lower inner lip never rises above the upper one (by more than
    /// it does at rest).
    fn mouth(&self, m: MouthShape) -> Vec<Point> {
        let mut out = self.parametric_mouth(m);
        if !self.learned.is_empty() {
            let m = m.clamped();
            let kernel: Vec<f32> = self
                .learned
                .iter()
                .map(|(shape, _)| (-0.5 * (m.distance(*shape) / LEARNED_SIGMA).powi(2)).exp())
                .collect();
            let total = kernel.iter().sum::<f32>() + NO_EXAMPLE;
            for p in &mut out {
                for ((_, residual), g) in self.learned.iter().zip(&kernel) {
                    let r = residual[p.landmark];
                    p.d[0] += g / total * r[0];
                    p.d[1] += g / total * r[1];
                }
            }
        }
        for (&upper, &lower) in UPPER_INNER[1..10].iter().zip(&LOWER_INNER[1..10]) {
            let (Some(u), Some(l)) =
                (out.iter().position(|p| p.landmark == upper), out.iter().position(|p| p.landmark == lower))
            else {
                continue;
            };
            let rest_gap = self.points[lower][1] - self.points[upper][1];
            let lowest = rest_gap.min(0.0) - rest_gap + out[u].d[1];
            if out[l].d[1] < lowest {
                out[l].d[1] = lowest;
            }
        }
        out
    }

    /// The parametric mouth: lip lines, corners and jaw moved by `m`.
    fn parametric_mouth(&self, m: MouthShape) -> Vec<Point> {
        let w = self.mouth_width;
        let jaw = m.open.clamp(0.0, 1.0) * self.max_jaw_drop();
        let (wide, round) = (m.wide.clamp(0.0, 1.0), m.round.clamp(0.0, 1.0));
        let cx = self.mouth_centre[0];
        let lip = |i: usize, vertical: f32, radius: f32| {
            let at = self.points[i];
            let u = ((at[0] - cx) / (w / 2.0)).clamp(-1.0, 1.0);
            let dx = u * wide * 0.1 * w - round * 0.35 * (at[0] - cx);
            Point { landmark: i, d: [dx, vertical * jaw], radius }
        };
        let mut out = Vec::with_capacity(64);
        for (line, a, b, reach) in LIP_LINES {
            for (k, &i) in line.iter().enumerate().skip(1).take(9) {
                let u = (k as f32 - 5.0) / 5.0;
                out.push(lip(i, a - b * u * u, reach * w));
            }
        }
        for i in CORNERS {
            out.push(lip(i, 0.35, 0.16 * w));
        }
        for (i, follow) in JAW {
            out.push(Point { landmark: i, d: [0.0, follow * jaw], radius: 0.45 * w });
        }
        for i in NOSE_ANCHORS {
            out.push(Point { landmark: i, d: [0.0, 0.0], radius: 0.2 * w });
        }
        out
    }

    /// The eyes' section of the record: closure, box, and each lid corner
    /// to corner in increasing x.
    fn eyes(&self, blink: [f32; 2], mut put: impl FnMut(usize, f32)) {
        for (e, (upper, lower, outer, inner)) in EYES.iter().enumerate() {
            let at = warp::EYES_AT + e * warp::EYE_WORDS;
            let lid = |inside: &[usize; 7]| {
                let mut line: Vec<[f32; 2]> =
                    [*outer].iter().chain(inside).chain([inner]).map(|&i| self.points[i]).collect();
                line.sort_by(|a, b| a[0].total_cmp(&b[0]));
                line
            };
            let (upper, lower) = (lid(upper), lid(lower));
            let eye_h = self.eyes[e].1;
            let x0 = upper[0][0].min(lower[0][0]);
            let x1 = upper[LID_POINTS - 1][0].max(lower[LID_POINTS - 1][0]);
            let y0 = upper.iter().map(|p| p[1]).fold(f32::MAX, f32::min) - 1.5 * eye_h;
            let y1 = lower.iter().map(|p| p[1]).fold(f32::MIN, f32::max) + 1.0;
            put(at, blink[e].clamp(0.0, 1.0));
            for (k, v) in [x0, y0, x1, y1].into_iter().enumerate() {
                put(at + 1 + k, v);
            }
            for (k, p) in upper.iter().chain(&lower).enumerate() {
                put(at + 5 + 2 * k, p[0]);
                put(at + 5 + 2 * k + 1, p[1]);
            }
        }
    }

    /// The frame record of `pose` for the warp kernels.
    pub fn record(&self, pose: &Pose) -> Vec<u32> {
        let mut rec = vec![0u32; RECORD_WORDS];
        let mut put = |i: usize, v: f32| rec[i] = v.to_bits();
        let h = self.face_height;
        // Head: M = R·s − I about the nose tip, translation in face heights.
        let (sin, cos) = pose.head.roll.sin_cos();
        let s = pose.head.scale;
        let head = [
            self.head_centre[0],
            self.head_centre[1],
            cos * s - 1.0,
            -sin * s,
            sin * s,
            cos * s - 1.0,
            pose.head.dx * h,
            pose.head.dy * h,
        ];
        for (k, v) in head.into_iter().enumerate() {
            put(warp::H_HEAD + k, v);
        }
        for (k, v) in self.ellipse.into_iter().chain([1.6]).enumerate() {
            put(warp::H_ELLIPSE + k, v);
        }

        // Control points sit where their landmark moves to.
        self.eyes(pose.blink, &mut put);
        let points = self.mouth(pose.mouth);
        debug_assert!(points.len() <= MAX_POINTS, "{} control points", points.len());
        // Every landmark where this pose puts it (head motion aside).
        let mut moved = self.points.clone();
        for p in &points {
            let at = self.points[p.landmark];
            moved[p.landmark] = [at[0] + p.d[0], at[1] + p.d[1]];
        }
        let mut roi = [f32::MAX, f32::MAX, f32::MIN, f32::MIN];
        for (k, p) in points.iter().take(MAX_POINTS).enumerate() {
            let at = moved[p.landmark];
            let base = HEADER + k * POINT_WORDS;
            for (j, v) in [at[0], at[1], p.d[0], p.d[1], p.radius].into_iter().enumerate() {
                put(base + j, v);
            }
            roi = [
                roi[0].min(at[0] - p.radius),
                roi[1].min(at[1] - p.radius),
                roi[2].max(at[0] + p.radius),
                roi[3].max(at[1] + p.radius),
            ];
        }
        for (k, v) in roi.into_iter().enumerate() {
            put(warp::H_ROI + k, v);
        }

        // The inner mouth: upper inner lip left to right, lower back.
        let dest = |i: usize| moved[i];
        let ring = || UPPER_INNER.iter().chain(LOWER_INNER[1..10].iter().rev());
        let polygon: Vec<[f32; 2]> = ring().map(|&i| dest(i)).collect();
        for (k, &i) in ring().enumerate() {
            put(warp::REST_MOUTH_AT + 2 * k, self.points[i][0]);
            put(warp::REST_MOUTH_AT + 2 * k + 1, self.points[i][1]);
        }
        let base = warp::MOUTH_AT;
        let mut bbox = [f32::MAX, f32::MAX, f32::MIN, f32::MIN];
        for (k, v) in polygon.iter().enumerate() {
            put(base + 2 * k, v[0]);
            put(base + 2 * k + 1, v[1]);
            bbox = [bbox[0].min(v[0]), bbox[1].min(v[1]), bbox[2].max(v[0]), bbox[3].max(v[1])];
        }
        let feather = 1.2 * self.size as f32 / 512.0;
        for (k, v) in
            [bbox[0] - feather - 1.0, bbox[1] - feather - 1.0, bbox[2] + feather + 1.0, bbox[3] + feather + 1.0]
                .into_iter()
                .enumerate()
        {
            put(warp::H_MOUTH_BOX + k, v);
        }
        let jaw = pose.mouth.open.clamp(0.0, 1.0) * self.max_jaw_drop();
        let gap = dest(14)[1] - dest(13)[1];
        put(warp::H_FEATHER, feather);
        put(warp::H_MOUTH_GAIN, (jaw / 2.0).clamp(0.0, 1.0));
        put(warp::H_TEETH_HEIGHT, (0.45 * gap).clamp(0.5, 0.035 * h));
        let centre = (dest(78)[0] + dest(308)[0]) / 2.0;
        put(warp::H_TEETH_X, centre);
        put(warp::H_TEETH_X + 1, 0.36 * (dest(308)[0] - dest(78)[0]).abs().max(1.0));
        put(warp::H_TONGUE, centre);
        put(warp::H_TONGUE + 1, dest(14)[1] - 0.1 * gap);
        put(warp::H_TONGUE + 2, 0.3 * self.mouth_width);
        put(warp::H_TONGUE + 3, (0.35 * gap).max(0.5));
        rec[warp::H_WIDTH] = self.size;
        rec[warp::H_HEIGHT] = self.size;
        rec[warp::H_POINTS] = points.len().min(MAX_POINTS) as u32;
        rec[warp::H_MOUTH] = polygon.len() as u32;
        rec[warp::H_MOUTH_UPPER] = UPPER_INNER.len() as u32;
        rec[warp::H_REST_MOUTH] = polygon.len() as u32;
        rec
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::face::video::{LearnedMouth, LearnedMouths};
    use crate::tts::viseme::Viseme;

    /// A face 240 pixels from forehead to chin with a 100-pixel mouth,
    /// lips parted by 2 pixels inside.
    fn test_face() -> Vec<[f32; 2]> {
        let mut points = vec![[256.0f32, 256.0]; 468];
        points[FOREHEAD] = [256.0, 100.0];
        points[CHIN] = [256.0, 340.0];
        for k in 0..11 {
            let k32 = k as f32;
            points[UPPER_INNER[k]] = [216.0 + 8.0 * k32, 290.0];
            points[LOWER_INNER[k]] = [216.0 + 8.0 * k32, 292.0];
            points[UPPER_OUTER[k]] = [206.0 + 10.0 * k32, 284.0];
            points[LOWER_OUTER[k]] = [206.0 + 10.0 * k32, 298.0];
        }
        points[78] = [216.0, 291.0];
        points[308] = [296.0, 291.0];
        for (k, (i, _)) in JAW.iter().enumerate() {
            points[*i][1] = 305.0 + k as f32;
        }
        points[CHIN] = [256.0, 340.0];
        points
    }

    fn replica(mouths: LearnedMouths) -> Replica {
        Replica { size: 512, portrait: Vec::new(), landmarks: test_face(), idle: Vec::new(), mouths }
    }

    /// A learned shape at `shape`: every mouth landmark seen moved by `d`
    /// face heights (the lower inner lip's middle, 14, by `lip`), where
    /// the parametric rig was seen to move it by `rig`.
    fn learned(shape: MouthShape, d: [f32; 2], lip: [f32; 2], rig: [f32; 2]) -> LearnedMouths {
        let moves = mouth_landmarks().map(|i| (i, if i == 14 { lip } else { d })).collect();
        let parametric = mouth_landmarks().map(|i| (i, rig)).collect();
        LearnedMouths { shapes: vec![LearnedMouth { viseme: Viseme::E, frames: 1, shape, moves, parametric }] }
    }

    /// Where the mouth `m` puts `landmark`'s control point.
    fn moved(rig: &Rig, m: MouthShape, landmark: usize) -> [f32; 2] {
        let d = rig.mouth(m).iter().find(|p| p.landmark == landmark).map_or([0.0; 2], |p| p.d);
        [rig.points[landmark][0] + d[0], rig.points[landmark][1] + d[1]]
    }

    #[test]
    fn a_learned_shape_holds_at_its_descriptor_and_fades_away_from_it() {
        let at = MouthShape { open: 0.5, wide: 0.4, round: 0.0 };
        let parametric = Rig::new(&replica(LearnedMouths::default()));
        let rig = Rig::new(&replica(learned(at, [0.0, 0.01], [0.03, 0.08], [0.0, 0.02])));
        let h = rig.face_height;
        assert_eq!(h, 240.0);

        // At the descriptor: the parametric mouth plus 1 / 1.05 of how the
        // person differs from it there.
        for (landmark, beyond) in [(14, [0.03, 0.06]), (CHIN, [0.0, -0.01]), (61, [0.0, -0.01])] {
            let (got, param) = (moved(&rig, at, landmark), moved(&parametric, at, landmark));
            for c in 0..2 {
                let expected = param[c] + beyond[c] * h / (1.0 + NO_EXAMPLE);
                assert!((got[c] - expected).abs() < 1e-3, "landmark {landmark}[{c}]: {} vs {expected}", got[c]);
            }
        }

        // Far from it: the parametric mouth, within a thousandth of a pixel.
        let far = MouthShape { open: 0.1, wide: 0.0, round: 0.9 };
        for landmark in mouth_landmarks() {
            let (got, param) = (moved(&rig, far, landmark), moved(&parametric, far, landmark));
            assert!(dist(got, param) < 1e-3, "landmark {landmark}: {got:?} vs {param:?}");
        }

        // Continuous on the way: steps of 0.01 move no control point by more than a pixel.
        let mut last = rig.mouth(far);
        for k in 1..=100 {
            let now = rig.mouth(far.lerp(at, k as f32 / 100.0));
            for (a, b) in last.iter().zip(&now) {
                assert!(dist(a.d, b.d) < 1.0, "step {k}, landmark {}: {:?} → {:?}", a.landmark, a.d, b.d);
            }
            last = now;
        }
    }

    /// A person whose mouth moves just as the parametric rig's was seen
    /// to changes nothing.
    #[test]
    fn a_learned_shape_like_the_rig_renders_as_the_rig() {
        let at = MouthShape { open: 0.8, wide: 0.0, round: 0.6 };
        let parametric = Rig::new(&replica(LearnedMouths::default()));
        let rig = Rig::new(&replica(learned(at, [0.01, 0.05], [0.01, 0.05], [0.01, 0.05])));
        for (a, b) in rig.mouth(at).iter().zip(&parametric.mouth(at)) {
            assert_eq!((a.landmark, a.d), (b.landmark, b.d));
        }
    }

    #[test]
    fn a_learned_shape_never_crosses_the_lips() {
        let at = MouthShape { open: 0.0, wide: 0.0, round: 0.1 };
        // The lower lip's middle seen 0.05 face heights above its rest.
        let rig = Rig::new(&replica(learned(at, [0.0, 0.0], [0.0, -0.05], [0.0, 0.0])));
        let (upper, lower) = (moved(&rig, at, 13), moved(&rig, at, 14));
        assert!(lower[1] >= upper[1] - 1e-4, "lower lip {lower:?} above upper {upper:?}");
        // Uncrossed, it would be about 10 pixels above.
        assert!(lower[1] - upper[1] < 1e-3, "held at the upper lip: {lower:?} vs {upper:?}");
    }
}
