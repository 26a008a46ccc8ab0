//! Perception on a call: each camera frame looked at once (faces, the main
//! face's landmarks and expression), and the session's view of the user
//! built from those looks: live notes, the persona's visual awareness
//! queries answered as the state changes, and the end-of-call analysis.

use std::sync::Arc;

use super::queries::{self, Answer};
use super::signals::{Note, Observation, SignalConfig, SignalTracker, Summary, head_angles};
use super::{ExpressionNet, PerceptionError, face_crop};
use crate::face::{BlazeFace, DetectorConfig, FaceMesh, RgbImage};

/// Tiles a side the detector also looks at on a full look, besides the
/// whole frame: the short-range detector misses faces under about a tenth
/// of the frame (people further back), and 2×2 tiles find them (face-api's
/// demo photos: 5 people where one pass found 2).
const DETECTION_TILES: u32 = 2;

/// How thoroughly a frame is searched for faces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// The whole frame and 2×2 tiles of it: everyone, small faces included.
    Full,
    /// The whole frame only, at about a third of a full look's cost: the
    /// larger faces, so the count is a lower bound ([`Observation::quick`]).
    Quick,
}

/// The nets perception runs per frame, loaded once and shared by every session.
#[derive(Clone)]
pub struct Perceiver {
    detector: Arc<BlazeFace>,
    mesher: Arc<FaceMesh>,
    expressions: Arc<ExpressionNet>,
}

impl std::fmt::Debug for Perceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Perceiver")
    }
}

impl Perceiver {
    pub fn new(detector: Arc<BlazeFace>, mesher: Arc<FaceMesh>, expressions: Arc<ExpressionNet>) -> Self {
        Self { detector, mesher, expressions }
    }

    /// What `image`, shown at `t` seconds on the session clock, shows: how
    /// many faces (a full look), and the largest one's expression and head turn.
    pub fn observe(&self, image: &RgbImage, t: f64) -> Result<Observation, PerceptionError> {
        self.observe_batch(&[(image, t, Detail::Full)])
            .pop()
            .unwrap_or_else(|| Ok(Observation { t, ..Default::default() }))
    }

    /// [`Self::observe`] for several frames (of different sessions), each
    /// searched for faces in its own detail: faces and landmarks frame by
    /// frame, the expressions of every frame's main face as one batch.
    /// Each frame gets its own result.
    pub fn observe_batch(&self, frames: &[(&RgbImage, f64, Detail)]) -> Vec<Result<Observation, PerceptionError>> {
        // Faces, head turn and crop of each frame's largest face.
        let looks: Vec<Result<(Observation, Option<RgbImage>), PerceptionError>> = frames
            .iter()
            .map(|&(image, t, detail)| {
                let tiles = if detail == Detail::Full { DETECTION_TILES } else { 1 };
                let quick = detail == Detail::Quick;
                let faces = self.detector.detect_tiled(image, &DetectorConfig::default(), tiles)?;
                let main = faces
                    .iter()
                    .max_by(|a, b| (a.bbox.width * a.bbox.height).total_cmp(&(b.bbox.width * b.bbox.height)));
                let Some(face) = main else { return Ok((Observation { t, quick, ..Default::default() }, None)) };
                let mesh = self.mesher.landmarks(image, face)?;
                let points: Vec<[f32; 2]> = mesh.points.iter().map(|p| [p[0], p[1]]).collect();
                let seen = Observation { t, faces: faces.len(), quick, expression: None, head: head_angles(&points) };
                Ok((seen, face_crop(image, &face.bbox)))
            })
            .collect();
        let crops: Vec<&RgbImage> = looks.iter().filter_map(|l| l.as_ref().ok()?.1.as_ref()).collect();
        // A failed batch fails each frame that had a face, with its message.
        let mut expressions = match crops.is_empty() {
            true => Ok(Vec::new().into_iter()),
            false => self.expressions.probabilities_batch(&crops).map(Vec::into_iter).map_err(|e| e.to_string()),
        };
        looks
            .into_iter()
            .map(|look| {
                let (mut seen, crop) = look?;
                if crop.is_some() {
                    match &mut expressions {
                        Ok(probabilities) => seen.expression = probabilities.next(),
                        Err(e) => return Err(PerceptionError::Candle(candle_core::Error::Msg(e.clone()))),
                    }
                }
                Ok(seen)
            })
            .collect()
    }
}

/// One session's view of the user, from its observations in time order.
#[derive(Debug, Clone)]
pub struct UserView {
    tracker: SignalTracker,
    /// The persona's visual awareness queries and their current answers.
    queries: Vec<(String, Option<bool>)>,
    timeline: Vec<Note>,
}

/// What the call showed, for `application.perception_analysis`.
#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    pub summary: Summary,
    /// The notes of the call, in order.
    pub timeline: Vec<Note>,
    /// The persona's analysis queries and their answers.
    pub answers: Vec<(String, String)>,
}

impl UserView {
    pub fn new(config: SignalConfig, visual_queries: &[String]) -> Self {
        Self {
            tracker: SignalTracker::new(config),
            queries: visual_queries.iter().map(|q| (q.clone(), None)).collect(),
            timeline: Vec::new(),
        }
    }

    /// Takes one observation; returns the notes it brings: changes of the
    /// user's state, and visual awareness queries whose answer changed.
    pub fn observe(&mut self, o: &Observation) -> Vec<Note> {
        let mut notes = self.tracker.observe(o);
        let state = self.tracker.state();
        for (question, last) in &mut self.queries {
            let now = match queries::live(question, state) {
                Answer::Yes => Some(true),
                Answer::No => Some(false),
                Answer::Unknown | Answer::Unanswerable => None,
            };
            if now.is_some() && now != *last {
                let word = if now == Some(true) { "yes" } else { "no" };
                notes.push(Note { t: o.t, text: format!("{} {word}", question.trim()) });
            }
            if now.is_some() {
                *last = now;
            }
        }
        self.timeline.extend(notes.iter().cloned());
        notes
    }

    pub fn present(&self) -> bool {
        self.tracker.state().present
    }

    /// The end-of-call analysis, answering `analysis_queries`.
    pub fn analysis(&self, analysis_queries: &[String]) -> Analysis {
        let summary = self.tracker.summary();
        let answers = analysis_queries.iter().map(|q| (q.clone(), queries::after_call(q, &summary))).collect();
        Analysis { summary, timeline: self.timeline.clone(), answers }
    }
}
