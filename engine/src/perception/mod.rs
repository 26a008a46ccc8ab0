//! Perception: what the engine reads off the user's face, frame by frame,
//! to steer the conversation. First brick: face-api's expression net
//! ([`ExpressionNet`], seven expressions from a face crop), in candle on
//! the CPU, from the weights `tete models fetch` converts out of the
//! `@vladmandic/face-api` npm package. Faces are found by
//! [`crate::face::BlazeFace`]; this module only looks at the crops.

pub mod expression;

pub use expression::{Expression, ExpressionNet};

/// Perception loads its nets and checks its inputs as the face stage does,
/// so it reports the same errors.
pub use crate::face::FaceError as PerceptionError;
