//! Perception: what the engine reads off the user's face, frame by frame,
//! to steer the conversation. First brick: face-api's expression net
//! ([`ExpressionNet`], seven expressions from a face crop), in candle on
//! the CPU, from the weights `tete models fetch` converts out of the
//! `@vladmandic/face-api` npm package. Faces are found by
//! [`crate::face::BlazeFace`]; this module only looks at the crops.

pub mod expression;

pub use expression::{Expression, ExpressionNet};

#[derive(Debug, thiserror::Error)]
pub enum PerceptionError {
    #[error("loading {model} weights from {path}: {source}")]
    Load { model: &'static str, path: String, source: candle_core::Error },
    #[error("{model} weights lack {name} (is this the right tfjs conversion?)")]
    Missing { model: &'static str, name: String },
    #[error("{model} tensor {name} has shape {actual:?}, expected {expected:?}")]
    Shape { model: &'static str, name: String, actual: Vec<usize>, expected: Vec<usize> },
    #[error("the image is {width}×{height} pixels: nothing to look at")]
    EmptyImage { width: u32, height: u32 },
    #[error("input tensor has shape {actual:?}, expected {expected:?}")]
    Input { actual: Vec<usize>, expected: Vec<usize> },
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
}
