//! Perception: what the engine reads off the user's face, frame by frame,
//! to steer the conversation. face-api's expression net ([`ExpressionNet`],
//! seven expressions from a face crop) runs in candle on the CPU, from the
//! weights `tete models fetch` converts out of the `@vladmandic/face-api`
//! npm package; faces and landmarks come from the face stage's BlazeFace
//! and FaceMesh. [`Perceiver`] looks at one frame; [`signals`] smooths the
//! looks into the user's state and notes; [`UserView`] adds the persona's
//! questions ([`queries`]) and makes the end-of-call [`Analysis`].

pub mod expression;
pub mod live;
pub mod queries;
pub mod signals;

pub use expression::{Expression, ExpressionNet};
pub use live::{Analysis, Detail, Perceiver, UserView};
pub use signals::{Note, Observation, SignalConfig, SignalTracker, Summary, UserState, head_angles};

/// Perception loads its nets and checks its inputs as the face stage does,
/// so it reports the same errors.
pub use crate::face::FaceError as PerceptionError;

/// The crop of a detected face the expression net reads: the box clipped
/// to the image, then its corner and size floored, as face-api's
/// `extractFaceTensors` does. `None` when nothing of it is in the image.
pub fn face_crop(image: &crate::face::RgbImage, bbox: &crate::face::BoundingBox) -> Option<crate::face::RgbImage> {
    let (x, y) = (bbox.xmin.max(0.0), bbox.ymin.max(0.0));
    let w = (bbox.xmin + bbox.width - x).min(image.width() as f32 - x);
    let h = (bbox.ymin + bbox.height - y).min(image.height() as f32 - y);
    let [x0, y0, w, h] = [x, y, w, h].map(|v| v.max(0.0).floor() as u32);
    (w > 0 && h > 0).then(|| image::imageops::crop_imm(image, x0, y0, w, h).to_image())
}
