//! Mouth shapes learned from the talking part of a video: how this person's
//! lips and jaw really move, one shape per viseme the video shows.
//!
//! Every measured frame's landmarks are brought into the portrait frame's
//! place by a similarity transform fitted (least squares) on landmarks the
//! mouth does not move: the eye corners and the nose. The still segment's
//! mean is the mouth at rest. Each frame of the speech (lips moving, and
//! the short closures between) is described by its displacement of the
//! mouth's landmarks from rest, in face heights, and by the [`MouthShape`]
//! of the parametric rig it looks most like. Each viseme takes the frames
//! whose shape is nearest its own.
//!
//! FaceMesh does not see a mouth's motion in proportion to it: on the
//! astronaut rendered with the parametric rig and encoded at 256×256, it
//! sees about two thirds of the jaw's drop, a mouth opened a third as
//! narrower, and a fully pursed one as less narrow than a half-pursed one.
//! So the rig is looked at with the same eyes: the portrait rendered with
//! a grid of parametric mouths, scaled to the face's size in the video and
//! measured like its frames. A frame's shape is interpolated between the
//! grid's mouths seen nearest to it, and a learned shape keeps what is
//! seen of the rig at its own shape, so that only how the person differs
//! from the rig is added to it ([`crate::face::Rig`]).

use serde::{Deserialize, Serialize};

use crate::face::animate::viseme_shape;
use crate::face::replica::ReplicaError;
use crate::face::rig::{CHIN, FOREHEAD, MouthShape, dist, mouth_landmarks};
use crate::tts::viseme::Viseme;

/// Landmarks that stay put while the mouth moves: eye corners (33, 133,
/// 362, 263), the nose bridge (168, 6) and the nose tip (1).
const STABLE: [usize; 7] = [33, 133, 362, 263, 168, 6, 1];
/// Inner lips at the middle, upper and lower.
const LIPS: (usize, usize) = (13, 14);
/// The outer corners, whose distance is the mouth's width.
const CORNERS: (usize, usize) = (61, 291);
/// Where the jaw's drop is read: the lower lip inside and out, the chin.
const DROP: [usize; 3] = [14, 17, 152];
/// A frame's lips move when the lip gap or the jaw is this much (in face
/// heights) beyond rest, or the mouth's width changes by this share.
const MOVE: f32 = 0.015;
const MOVE_WIDTH: f32 = 0.05;
/// A frame with the lips still is part of the speech (a closure, as in p,
/// b, m) when lips move within this many seconds before and after it.
const CLOSURE: f32 = 0.6;
/// The parametric mouths the rig is looked at in: jaw openings, and lips
/// from fully round (-1) through neither to fully wide (1).
const GRID_OPEN: [f32; 4] = [0.0, 0.3, 0.6, 0.9];
const GRID_SPREAD: [f32; 5] = [-1.0, -0.5, 0.0, 0.5, 1.0];
/// A frame's shape is the mean of this many of the rig's nearest mouths.
const GRID_NEAREST: usize = 3;
/// Frames averaged into one learned shape, at most.
const PER_SHAPE: usize = 3;
/// The visemes a video can teach (silence is the rest itself).
const VISEMES: [Viseme; 14] = [
    Viseme::PP,
    Viseme::FF,
    Viseme::TH,
    Viseme::DD,
    Viseme::Kk,
    Viseme::CH,
    Viseme::SS,
    Viseme::Nn,
    Viseme::RR,
    Viseme::Aa,
    Viseme::E,
    Viseme::I,
    Viseme::O,
    Viseme::U,
];

/// One viseme's mouth as the video showed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LearnedMouth {
    pub viseme: Viseme,
    /// How many frames were averaged.
    pub frames: usize,
    /// The mean [`MouthShape`] of those frames: where in the parametric
    /// rig's terms this shape lies (near `viseme_shape(viseme)`).
    pub shape: MouthShape,
    /// Each mouth landmark's displacement from rest, in face heights
    /// (x right, y down), as (landmark, [dx, dy]).
    pub moves: Vec<(usize, [f32; 2])>,
    /// The same, as seen of the parametric rig at `shape` (the portrait
    /// rendered and measured like the video's frames).
    pub parametric: Vec<(usize, [f32; 2])>,
}

/// The mouth shapes learned from a video; empty for a photo, or a video
/// in which the person does not talk.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LearnedMouths {
    pub shapes: Vec<LearnedMouth>,
}

impl LearnedMouths {
    pub fn is_empty(&self) -> bool {
        self.shapes.is_empty()
    }

    pub fn get(&self, viseme: Viseme) -> Option<&LearnedMouth> {
        self.shapes.iter().find(|s| s.viseme == viseme)
    }
}

/// FaceMesh's landmarks on the portrait rendered with the parametric
/// mouth `m`; `None` when no face is found there.
pub(super) type See<'a> = dyn FnMut(MouthShape) -> Result<Option<Vec<[f32; 2]>>, ReplicaError> + 'a;

/// What a video's speech taught.
#[derive(Debug, Default)]
pub(super) struct Learned {
    pub(super) mouths: LearnedMouths,
    /// Each measured frame's mouth shape, when it is part of the speech.
    pub(super) speaking: Vec<Option<MouthShape>>,
}

/// What a mouth's displacements from rest do, in face heights: how far
/// the lower lip and the chin drop, how much the lips part, and how much
/// wider the mouth gets, as a share of its width.
struct Motion {
    drop: f32,
    gap: f32,
    widening: f32,
}

impl Motion {
    fn of(rest: &[[f32; 2]], h: f32, moves: &[[f32; 2]]) -> Self {
        let at = |landmark: usize| {
            let k = mouth_landmarks().position(|i| i == landmark).expect("a mouth landmark");
            [rest[landmark][0] + moves[k][0] * h, rest[landmark][1] + moves[k][1] * h]
        };
        let drop = DROP.iter().map(|&i| at(i)[1] - rest[i][1]).sum::<f32>() / DROP.len() as f32 / h;
        let gap = (dist(at(LIPS.0), at(LIPS.1)) - dist(rest[LIPS.0], rest[LIPS.1])) / h;
        let width = dist(rest[CORNERS.0], rest[CORNERS.1]).max(1.0);
        Self { drop, gap, widening: (dist(at(CORNERS.0), at(CORNERS.1)) - width) / width }
    }

    fn moving(&self) -> bool {
        self.gap > MOVE || self.drop > MOVE || self.widening.abs() > MOVE_WIDTH
    }
}

/// A face at rest in the portrait's place: where its landmarks are and
/// its forehead-to-chin height.
struct Rest {
    points: Vec<[f32; 2]>,
    h: f32,
}

impl Rest {
    /// The mean of `faces` (already aligned); `None` without any, or for
    /// a face of no height.
    fn mean<'a>(faces: impl Iterator<Item = &'a Vec<[f32; 2]>>) -> Option<Self> {
        let faces: Vec<_> = faces.collect();
        let n = faces.len() as f32;
        let mut points = vec![[0.0f32; 2]; faces.first()?.len()];
        for face in &faces {
            for (r, p) in points.iter_mut().zip(face.iter()) {
                r[0] += p[0] / n;
                r[1] += p[1] / n;
            }
        }
        let h = dist(points[FOREHEAD], points[CHIN]);
        (h >= 1.0).then_some(Self { points, h })
    }

    /// Each mouth landmark's displacement from rest, in face heights.
    fn moves(&self, face: &[[f32; 2]]) -> Vec<[f32; 2]> {
        let (rest, h) = (&self.points, self.h);
        mouth_landmarks().map(|i| [(face[i][0] - rest[i][0]) / h, (face[i][1] - rest[i][1]) / h]).collect()
    }

    fn motion(&self, moves: &[[f32; 2]]) -> Motion {
        Motion::of(&self.points, self.h, moves)
    }
}

/// The parametric rig as the measurement sees it: its rest, and the
/// displacements seen for each mouth asked for (kept, as several visemes
/// may take the same frames).
struct RigSeen<'s, 'a> {
    see: &'s mut See<'a>,
    portrait: &'s [[f32; 2]],
    rest: Rest,
    seen: Vec<(MouthShape, Vec<[f32; 2]>)>,
}

impl<'s, 'a> RigSeen<'s, 'a> {
    fn new(see: &'s mut See<'a>, portrait: &'s [[f32; 2]]) -> Result<Option<Self>, ReplicaError> {
        let Some(face) = see(MouthShape::default())? else { return Ok(None) };
        let Some(rest) = Rest::mean(std::iter::once(&align(&face, portrait))) else { return Ok(None) };
        Ok(Some(Self { see, portrait, rest, seen: Vec::new() }))
    }

    fn moves(&mut self, m: MouthShape) -> Result<Option<Vec<[f32; 2]>>, ReplicaError> {
        if let Some((_, moves)) = self.seen.iter().find(|(shape, _)| *shape == m) {
            return Ok(Some(moves.clone()));
        }
        let Some(face) = (self.see)(m)? else { return Ok(None) };
        let moves = self.rest.moves(&align(&face, self.portrait));
        self.seen.push((m, moves.clone()));
        Ok(Some(moves))
    }
}

/// Learns the mouth shapes of the speech in the measured frames `faces`
/// (at `times`), against the rest seen over `still` (first and last
/// measured frame of the still segment), in the place of the `portrait`'s
/// landmarks; `see` shows the parametric rig. Each viseme takes the mean
/// of up to three speech frames whose shape is within `tolerance` of its
/// own, nearest first; visemes no frame comes near are left out.
pub(super) fn learn(
    faces: &[Option<&[[f32; 2]]>],
    times: &[f32],
    still: (usize, usize),
    portrait: &[[f32; 2]],
    see: &mut See<'_>,
    tolerance: f32,
) -> Result<Learned, ReplicaError> {
    let nothing = || Learned { mouths: LearnedMouths::default(), speaking: vec![None; faces.len()] };
    let aligned: Vec<Option<Vec<[f32; 2]>>> = faces.iter().map(|f| f.map(|points| align(points, portrait))).collect();
    let Some(rest) = Rest::mean(aligned[still.0..=still.1].iter().flatten()) else { return Ok(nothing()) };
    let frames: Vec<Option<(Motion, Vec<[f32; 2]>)>> = aligned
        .iter()
        .map(|face| {
            let moves = rest.moves(face.as_ref()?);
            Some((rest.motion(&moves), moves))
        })
        .collect();
    let moving: Vec<bool> = frames.iter().map(|f| f.as_ref().is_some_and(|(motion, _)| motion.moving())).collect();
    let speech = speaking(&moving, times, still);
    if !speech.contains(&true) {
        return Ok(nothing());
    }
    let Some(mut rig) = RigSeen::new(see, portrait)? else { return Ok(nothing()) };
    let mut grid = Vec::with_capacity(GRID_OPEN.len() * GRID_SPREAD.len());
    for open in GRID_OPEN {
        for spread in GRID_SPREAD {
            let shape = MouthShape { open, wide: spread.max(0.0), round: (-spread).max(0.0) };
            if let Some(moves) = rig.moves(shape)? {
                grid.push((shape, moves));
            }
        }
    }
    let shapes: Vec<Option<MouthShape>> = frames
        .iter()
        .zip(&speech)
        .map(|(frame, &speaking)| {
            let (_, moves) = frame.as_ref().filter(|_| speaking)?;
            describe(moves, &grid)
        })
        .collect();

    let mut mouths = LearnedMouths::default();
    for viseme in VISEMES {
        let target = viseme_shape(viseme).0;
        let mut near: Vec<(f32, MouthShape, &[[f32; 2]])> = shapes
            .iter()
            .zip(&frames)
            .filter_map(|(shape, frame)| Some((shape.as_ref()?.distance(target), (*shape)?, &frame.as_ref()?.1[..])))
            .filter(|(d, ..)| *d <= tolerance)
            .collect();
        near.sort_by(|a, b| a.0.total_cmp(&b.0));
        near.truncate(PER_SHAPE);
        if near.is_empty() {
            continue;
        }
        let n = near.len() as f32;
        let mean = |f: fn(&MouthShape) -> f32| near.iter().map(|(_, s, _)| f(s)).sum::<f32>() / n;
        let shape = MouthShape { open: mean(|s| s.open), wide: mean(|s| s.wide), round: mean(|s| s.round) };
        let Some(parametric) = rig.moves(shape)? else { continue };
        let moves = (0..parametric.len())
            .map(|k| near.iter().fold([0.0f32; 2], |d, (_, _, m)| [d[0] + m[k][0] / n, d[1] + m[k][1] / n]))
            .collect::<Vec<_>>();
        let by_landmark = |v: Vec<[f32; 2]>| mouth_landmarks().zip(v).collect();
        mouths.shapes.push(LearnedMouth {
            viseme,
            frames: near.len(),
            shape,
            moves: by_landmark(moves),
            parametric: by_landmark(parametric),
        });
    }
    Ok(Learned { mouths, speaking: shapes })
}

/// A mouth's shape in the rig's terms: the mean of the rig's mouths in
/// `grid` seen nearest to its displacements `moves`, weighted by the
/// inverse square of their distance, with wide and round as one spread
/// (a mouth is not both).
fn describe(moves: &[[f32; 2]], grid: &[(MouthShape, Vec<[f32; 2]>)]) -> Option<MouthShape> {
    let mut near: Vec<(f32, MouthShape)> = grid
        .iter()
        .map(|(shape, seen)| {
            let d2 = moves.iter().zip(seen).map(|(a, b)| (a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sum::<f32>();
            (d2, *shape)
        })
        .collect();
    near.sort_by(|a, b| a.0.total_cmp(&b.0));
    near.truncate(GRID_NEAREST);
    let weights: Vec<f32> = near.iter().map(|(d2, _)| 1.0 / (d2 + 1e-8)).collect();
    let total: f32 = weights.iter().sum();
    let mean =
        |f: &dyn Fn(&MouthShape) -> f32| near.iter().zip(&weights).map(|((_, s), w)| w / total * f(s)).sum::<f32>();
    let spread = mean(&|s| s.wide - s.round);
    (!near.is_empty()).then(|| MouthShape { open: mean(&|s| s.open), wide: spread.max(0.0), round: (-spread).max(0.0) })
}

/// Which frames are speech: outside the still segment, lips `moving`, or
/// still between moving frames no more than [`CLOSURE`] seconds away on
/// both sides.
fn speaking(moving: &[bool], times: &[f32], still: (usize, usize)) -> Vec<bool> {
    let moving = |i: usize| moving[i] && !(still.0..=still.1).contains(&i);
    let near = |i: usize, j: usize| moving(j) && (times[j] - times[i]).abs() <= CLOSURE;
    (0..times.len())
        .map(|i| {
            let between = (0..i).any(|j| near(i, j)) && (i + 1..times.len()).any(|j| near(i, j));
            !(still.0..=still.1).contains(&i) && (moving(i) || between)
        })
        .collect()
}

/// `points` moved by the similarity transform (rotation, uniform scale,
/// translation) that best maps their [`STABLE`] landmarks onto
/// `reference`'s, in the least-squares sense.
fn align(points: &[[f32; 2]], reference: &[[f32; 2]]) -> Vec<[f32; 2]> {
    let n = STABLE.len() as f32;
    let centre = |p: &[[f32; 2]]| STABLE.iter().fold([0.0f32; 2], |c, &i| [c[0] + p[i][0] / n, c[1] + p[i][1] / n]);
    let (from, to) = (centre(points), centre(reference));
    // With both sets centred, the best x' = a·x − b·y, y' = b·x + a·y has
    // a = Σ(x·x' + y·y') / Σ|p|² and b = Σ(x·y' − y·x') / Σ|p|².
    let (mut a, mut b, mut norm) = (0.0f32, 0.0f32, 0.0f32);
    for &i in &STABLE {
        let (x, y) = (points[i][0] - from[0], points[i][1] - from[1]);
        let (u, v) = (reference[i][0] - to[0], reference[i][1] - to[1]);
        a += x * u + y * v;
        b += x * v - y * u;
        norm += x * x + y * y;
    }
    if norm <= f32::EPSILON {
        return points.to_vec();
    }
    let (a, b) = (a / norm, b / norm);
    points
        .iter()
        .map(|p| {
            let (x, y) = (p[0] - from[0], p[1] - from[1]);
            [a * x - b * y + to[0], b * x + a * y + to[1]]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A face of 468 landmarks spread over a 200-pixel square.
    fn face() -> Vec<[f32; 2]> {
        (0..468).map(|i| [100.0 + (i * 37 % 200) as f32, 50.0 + (i * 53 % 200) as f32]).collect()
    }

    #[test]
    fn alignment_undoes_rotation_scale_and_shift() {
        let reference = face();
        let (sin, cos) = 0.2f32.sin_cos();
        let moved: Vec<[f32; 2]> = reference
            .iter()
            .map(|p| [1.3 * (cos * p[0] - sin * p[1]) + 17.0, 1.3 * (sin * p[0] + cos * p[1]) - 9.0])
            .collect();
        let back = align(&moved, &reference);
        for (i, (b, r)) in back.iter().zip(&reference).enumerate() {
            assert!(dist(*b, *r) < 1e-2, "landmark {i}: {b:?} vs {r:?}");
        }
    }

    /// A mouth as a measurement that sees little of it might: the lower
    /// lip and jaw dropping `0.06·open` face heights, the lips spreading
    /// by `0.05·wide` and pursing by `0.07·round` of their distance from
    /// the middle.
    fn mouth(rest: &[[f32; 2]], m: MouthShape) -> Vec<[f32; 2]> {
        let (centre, h) = (rest[0], dist(rest[FOREHEAD], rest[CHIN]));
        let mut face = rest.to_vec();
        for i in mouth_landmarks() {
            let dx = (rest[i][0] - centre[0]) * (0.05 * m.wide - 0.07 * m.round);
            let dy = if rest[i][1] > rest[LIPS.0][1] + 1.0 { 0.06 * m.open * h } else { 0.0 };
            face[i] = [rest[i][0] + dx, rest[i][1] + dy];
        }
        face
    }

    /// Still frames, then two frames with one mouth, a closure, the other
    /// mouth, then still frames long after: the speech is the moving
    /// frames and the closure between them; each is described as the
    /// mouth it shows, and teaches the viseme nearest it.
    #[test]
    fn the_speech_is_described_in_the_rigs_terms_and_learned() {
        let rest = face();
        // Both on the grid the rig is looked at in.
        let (a, i) = (MouthShape { open: 0.9, wide: 0.0, round: 0.0 }, MouthShape { open: 0.3, wide: 0.0, round: 1.0 });
        let (open, round) = (mouth(&rest, a), mouth(&rest, i));
        let frames: Vec<&[[f32; 2]]> = vec![&rest, &rest, &rest, &open, &open, &rest, &round, &rest, &rest, &rest];
        let faces: Vec<Option<&[[f32; 2]]>> = frames.into_iter().map(Some).collect();
        let times = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 2.2, 3.0];
        let mut renders = 0;
        let mut see = |m: MouthShape| -> Result<Option<Vec<[f32; 2]>>, ReplicaError> {
            renders += 1;
            Ok(Some(mouth(&rest, m)))
        };
        let learned = learn(&faces, &times, (0, 2), &rest, &mut see, 0.25).unwrap();
        let speech: Vec<bool> = learned.speaking.iter().map(Option::is_some).collect();
        assert_eq!(speech, [false, false, false, true, true, true, true, false, false, false]);
        for (k, want) in [(3, a), (6, i), (5, MouthShape::default())] {
            let shape = learned.speaking[k].unwrap();
            assert!(shape.distance(want) < 0.02, "frame {k}: {shape:?}, shown {want:?}");
        }
        let aa = learned.mouths.get(Viseme::Aa).expect("Aa");
        let u = learned.mouths.get(Viseme::U).expect("U");
        let pp = learned.mouths.get(Viseme::PP).expect("PP");
        assert_eq!((aa.frames, u.frames, pp.frames), (2, 1, 1));
        // What was seen of the rig at the learned shape is what the frames show.
        for shape in [aa, u, pp] {
            for (seen, rig) in shape.moves.iter().zip(&shape.parametric) {
                assert!(seen.0 == rig.0 && dist(seen.1, rig.1) < 2e-3, "{:?}: {seen:?} vs {rig:?}", shape.viseme);
            }
        }
        // Rest, the grid, and one for each learned shape off the grid.
        let grid = GRID_OPEN.len() * GRID_SPREAD.len();
        assert!(renders <= 1 + grid + learned.mouths.shapes.len(), "{renders} renders");
        assert!(learned.mouths.get(Viseme::O).is_none(), "nothing near O: {:?}", learned.mouths);

        // Between the grid's mouths (0.3 apart in opening, 0.5 in spread),
        // shapes are interpolated to within 0.15.
        let rest_moves = vec![[0.0f32; 2]; mouth_landmarks().count()];
        let h = dist(rest[FOREHEAD], rest[CHIN]);
        let moves = |m: MouthShape| -> Vec<[f32; 2]> {
            let face = mouth(&rest, m);
            mouth_landmarks().map(|i| [(face[i][0] - rest[i][0]) / h, (face[i][1] - rest[i][1]) / h]).collect()
        };
        let grid: Vec<(MouthShape, Vec<[f32; 2]>)> = GRID_OPEN
            .iter()
            .flat_map(|&open| GRID_SPREAD.map(|s| MouthShape { open, wide: s.max(0.0), round: (-s).max(0.0) }))
            .map(|m| (m, moves(m)))
            .collect();
        let still = describe(&rest_moves, &grid).unwrap();
        assert!(still.distance(MouthShape::default()) < 1e-5, "rest described as {still:?}");
        for m in [(0.45, 0.25, 0.0), (0.75, 0.0, 0.3), (0.2, 0.0, 0.8), (0.35, 0.6, 0.0)] {
            let m = MouthShape { open: m.0, wide: m.1, round: m.2 };
            let got = describe(&moves(m), &grid).unwrap();
            assert!(got.distance(m) < 0.15, "{m:?} described as {got:?}");
        }

        // Without speech, nothing is rendered or learned.
        let still: Vec<Option<&[[f32; 2]]>> = vec![Some(&rest); 6];
        let mut see = |_: MouthShape| -> Result<Option<Vec<[f32; 2]>>, ReplicaError> { panic!("no render needed") };
        let learned = learn(&still, &times[..6], (0, 2), &rest, &mut see, 0.25).unwrap();
        assert!(learned.mouths.is_empty() && learned.speaking.iter().all(Option::is_none));
    }
}
