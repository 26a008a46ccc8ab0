//! The face rig: which FaceMesh landmarks move for the mouth, the eyelids
//! and the head, and how a [`Pose`] becomes the frame record the warp
//! kernels render (`tete_kernels::warp`).
//!
//! Displacements are built in the portrait's pixels from the replica's own
//! proportions (face height, mouth and eye sizes), so one pose means the
//! same on any face and at any frame size.

use tete_kernels::warp::{self, HEADER, LID_POINTS, MAX_POINTS, POINT_WORDS, RECORD_WORDS};

use super::replica::Replica;

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
#[derive(Debug, Clone, Copy, Default, PartialEq)]
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
}

fn dist(a: [f32; 2], b: [f32; 2]) -> f32 {
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
        }
    }

    /// The portrait-pixel jaw drop of a fully open mouth.
    pub fn max_jaw_drop(&self) -> f32 {
        0.1 * self.face_height
    }

    pub fn face_height(&self) -> f32 {
        self.face_height
    }

    fn mouth(&self, m: MouthShape) -> Vec<Point> {
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
        // Each lip line between its corners: how far it follows the jaw at
        // its middle (a) and how much less at its ends (b), and its reach.
        // The upper lip's inner edge stays on the upper teeth: raising it
        // would open a strip the portrait has no teeth for.
        let lines: [(&[usize; 11], f32, f32, f32); 4] = [
            (&UPPER_INNER, 0.0, 0.0, 0.16),
            (&LOWER_INNER, 1.0, 0.55, 0.16),
            (&UPPER_OUTER, -0.03, -0.015, 0.2),
            (&LOWER_OUTER, 0.95, 0.5, 0.2),
        ];
        for (line, a, b, reach) in lines {
            for (k, &i) in line.iter().enumerate().skip(1).take(9) {
                let u = (k as f32 - 5.0) / 5.0;
                out.push(lip(i, a - b * u * u, reach * w));
            }
        }
        for i in [61, 291, 78, 308] {
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
