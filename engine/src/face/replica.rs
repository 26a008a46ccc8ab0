//! A replica from a photo: the face found and meshed, the portrait framed
//! as a head-and-shoulders shot at the output size, and the landmarks the
//! renderer moves.

use std::path::Path;

use image::imageops::{self, FilterType};
use serde::{Deserialize, Serialize};

use super::video::LearnedMouths;
use super::{BlazeFace, FaceError, FaceMesh, LANDMARKS, RgbImage};

/// How a replica is framed and what a usable photo is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplicaConfig {
    /// Side of the square output frame in pixels (a multiple of 8).
    pub size: u32,
    /// Forehead-to-chin height as a fraction of the frame.
    pub face_fraction: f32,
    /// Smallest usable face: detection-box width in the photo's pixels.
    pub min_face_px: f32,
    /// Faces smaller than this fraction of the largest one are ignored
    /// (people far in the background) when counting faces.
    pub other_face_fraction: f32,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        Self { size: 512, face_fraction: 0.42, min_face_px: 64.0, other_face_fraction: 0.5 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("no face was found in the image")]
    NoFace,
    #[error("{count} faces were found; a replica needs exactly one person in view")]
    SeveralFaces { count: usize },
    #[error("the face is {width:.0} pixels wide; at least {min:.0} are needed")]
    FaceTooSmall { width: f32, min: f32 },
    #[error("frame size {0} must be a non-zero multiple of 8")]
    BadSize(u32),
    #[error("the image could not be read: {0}")]
    Image(String),
    #[error("the video could not be read: {0}")]
    Video(String),
    #[error("the video is {seconds:.1} s long; at least {min:.1} s are needed")]
    TooShort { seconds: f32, min: f32 },
    #[error("the head moves too much ({motion:.2} face widths); the person should face the camera and keep still")]
    TooMuchMotion { motion: f32 },
    #[error("replica files in {path}: {reason}")]
    Files { path: String, reason: String },
    /// Boxed: the face models' errors are large, and every result of
    /// this module would carry their size.
    #[error(transparent)]
    Face(Box<FaceError>),
    #[error("rendering the replica: {0}")]
    Render(#[from] tete_kernels::KernelError),
}

impl From<FaceError> for ReplicaError {
    fn from(e: FaceError) -> Self {
        Self::Face(Box::new(e))
    }
}

/// What the renderer needs of a person: the framed portrait and its mesh.
#[derive(Debug, Clone)]
pub struct Replica {
    /// Side of the square portrait.
    pub size: u32,
    /// RGBA8 pixels (R in the low byte), row-major.
    pub portrait: Vec<u32>,
    /// The 468 FaceMesh landmarks in portrait pixels.
    pub landmarks: Vec<[f32; 2]>,
    /// The idle loop from a video: consecutive frames of the person still
    /// and listening, framed exactly as the portrait, each with its own
    /// landmarks (and no loop of its own). Empty for a photo.
    pub idle: Vec<Replica>,
    /// Mouth shapes learned from a video's talking part, in face heights,
    /// so the same for the portrait and every idle frame (each carries a
    /// copy). Empty for a photo: the rig's parametric mouth alone.
    pub mouths: LearnedMouths,
}

#[derive(Serialize, Deserialize)]
struct RigFile {
    size: u32,
    landmarks: Vec<[f32; 2]>,
    /// Landmarks of each idle-loop frame (`idle/NNN.png`).
    #[serde(default)]
    idle: Vec<Vec<[f32; 2]>>,
    /// Learned mouth shapes (absent in replicas made before they existed).
    #[serde(default)]
    mouths: LearnedMouths,
}

/// Where a head-and-shoulders square lies in a source picture: fixed from
/// one frame and reused for the others, so a loop never jitters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Framing {
    x0: f32,
    y0: f32,
    side: u32,
    size: u32,
}

impl Framing {
    /// The square around the face `points` show in a `width`×`height`
    /// picture: forehead to chin at the configured share, the face a
    /// little above the middle to leave room for shoulders.
    pub(crate) fn around(points: &[[f32; 2]], width: u32, height: u32, config: &ReplicaConfig) -> Self {
        let top = points[super::rig::FOREHEAD];
        let chin = points[super::rig::CHIN];
        let face_height = ((chin[0] - top[0]).powi(2) + (chin[1] - top[1]).powi(2)).sqrt();
        let (w, h) = (width as f32, height as f32);
        let side = (face_height / config.face_fraction).min(w).min(h).max(8.0);
        let centre_x = (top[0] + chin[0]) / 2.0;
        let centre_y = (top[1] + chin[1]) / 2.0 + 0.1 * side;
        Self {
            x0: (centre_x - side / 2.0).clamp(0.0, w - side).round(),
            y0: (centre_y - side / 2.0).clamp(0.0, h - side).round(),
            side: (side.round() as u32).min(width).min(height),
            size: config.size,
        }
    }

    /// Side of the square in the source picture's pixels.
    pub(crate) fn side(&self) -> u32 {
        self.side
    }

    /// Crops and scales a picture and moves its landmarks with it.
    pub(crate) fn apply(&self, photo: &RgbImage, points: &[[f32; 2]]) -> Replica {
        let crop = imageops::crop_imm(photo, self.x0 as u32, self.y0 as u32, self.side, self.side).to_image();
        let scaled = imageops::resize(&crop, self.size, self.size, FilterType::CatmullRom);
        let scale = self.size as f32 / self.side as f32;
        Replica {
            size: self.size,
            portrait: scaled.pixels().map(|p| u32::from_le_bytes([p[0], p[1], p[2], 255])).collect(),
            landmarks: points.iter().map(|&[x, y]| [(x - self.x0) * scale, (y - self.y0) * scale]).collect(),
            idle: Vec::new(),
            mouths: LearnedMouths::default(),
        }
    }
}

impl Replica {
    /// Builds a replica from a photo with exactly one clear face.
    pub fn from_photo(
        detector: &BlazeFace,
        mesher: &FaceMesh,
        photo: &RgbImage,
        config: &ReplicaConfig,
    ) -> Result<Self, ReplicaError> {
        if config.size == 0 || !config.size.is_multiple_of(8) {
            return Err(ReplicaError::BadSize(config.size));
        }
        let detections = detector.detect(photo)?;
        let largest = detections.iter().map(|d| d.bbox.width).fold(0.0f32, f32::max);
        let people: Vec<_> =
            detections.iter().filter(|d| d.bbox.width >= config.other_face_fraction * largest).collect();
        let face = match people.as_slice() {
            [] => return Err(ReplicaError::NoFace),
            [one] => *one,
            many => return Err(ReplicaError::SeveralFaces { count: many.len() }),
        };
        let width = face.bbox.width;
        if width < config.min_face_px {
            return Err(ReplicaError::FaceTooSmall { width, min: config.min_face_px });
        }
        let mesh = mesher.landmarks(photo, face)?;
        if mesh.presence < 0.5 {
            return Err(ReplicaError::NoFace);
        }
        let points: Vec<[f32; 2]> = mesh.points.iter().map(|p| [p[0], p[1]]).collect();
        Ok(Self::frame(photo, &points, config))
    }

    /// Crops a head-and-shoulders square around the face and scales it to
    /// the output size, moving the landmarks with it.
    pub(crate) fn frame(photo: &RgbImage, points: &[[f32; 2]], config: &ReplicaConfig) -> Self {
        Framing::around(points, photo.width(), photo.height(), config).apply(photo, points)
    }

    /// Gives the portrait and every idle frame these learned mouth shapes.
    pub fn set_mouths(&mut self, mouths: LearnedMouths) {
        for frame in &mut self.idle {
            frame.mouths = mouths.clone();
        }
        self.mouths = mouths;
    }

    /// The replica at another output size: the portrait and every idle
    /// frame resampled (Catmull-Rom), the landmarks scaled with them. The
    /// learned mouths are in face heights and stay as they are.
    pub fn resized(&self, size: u32) -> Result<Self, ReplicaError> {
        if size == 0 || !size.is_multiple_of(8) {
            return Err(ReplicaError::BadSize(size));
        }
        if size == self.size {
            return Ok(self.clone());
        }
        let bytes: Vec<u8> = self.portrait.iter().flat_map(|p| p.to_le_bytes()).collect();
        let image = image::RgbaImage::from_raw(self.size, self.size, bytes)
            .ok_or_else(|| ReplicaError::Image(format!("the portrait is not {0}×{0} pixels", self.size)))?;
        let scaled = imageops::resize(&image, size, size, FilterType::CatmullRom);
        let portrait = scaled.pixels().map(|p| u32::from_le_bytes([p[0], p[1], p[2], 255])).collect();
        let scale = size as f32 / self.size as f32;
        Ok(Self {
            size,
            portrait,
            landmarks: self.landmarks.iter().map(|&[x, y]| [x * scale, y * scale]).collect(),
            idle: self.idle.iter().map(|frame| frame.resized(size)).collect::<Result<_, _>>()?,
            mouths: self.mouths.clone(),
        })
    }

    /// The portrait as an image (for saving and inspection).
    pub fn portrait_image(&self) -> RgbImage {
        let bytes: Vec<u8> = self.portrait.iter().flat_map(|p| p.to_le_bytes()[..3].to_vec()).collect();
        RgbImage::from_raw(self.size, self.size, bytes).expect("size² pixels of 3 bytes")
    }

    /// Writes `portrait.png`, `rig.json` and the idle loop (`idle/NNN.png`) into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), ReplicaError> {
        let files = |reason: String| ReplicaError::Files { path: dir.display().to_string(), reason };
        std::fs::create_dir_all(dir).map_err(|e| files(e.to_string()))?;
        self.portrait_image().save(dir.join("portrait.png")).map_err(|e| files(e.to_string()))?;
        if !self.idle.is_empty() {
            std::fs::create_dir_all(dir.join("idle")).map_err(|e| files(e.to_string()))?;
        }
        for (k, frame) in self.idle.iter().enumerate() {
            frame.portrait_image().save(dir.join(idle_file(k))).map_err(|e| files(e.to_string()))?;
        }
        let idle = self.idle.iter().map(|f| f.landmarks.clone()).collect();
        let rig = RigFile { size: self.size, landmarks: self.landmarks.clone(), idle, mouths: self.mouths.clone() };
        let json = serde_json::to_vec(&rig).map_err(|e| files(e.to_string()))?;
        std::fs::write(dir.join("rig.json"), json).map_err(|e| files(e.to_string()))
    }

    /// Reads a replica written by [`Replica::save`], checking that the
    /// files agree with each other.
    pub fn load(dir: &Path) -> Result<Self, ReplicaError> {
        let files = |reason: String| ReplicaError::Files { path: dir.display().to_string(), reason };
        let json = std::fs::read(dir.join("rig.json")).map_err(|e| files(format!("rig.json: {e}")))?;
        let rig: RigFile = serde_json::from_slice(&json).map_err(|e| files(format!("rig.json: {e}")))?;
        if rig.landmarks.len() != LANDMARKS || rig.size == 0 || !rig.size.is_multiple_of(8) {
            return Err(files(format!("rig.json has {} landmarks at size {}", rig.landmarks.len(), rig.size)));
        }
        if let Some(bad) =
            rig.mouths.shapes.iter().find(|s| s.moves.iter().chain(&s.parametric).any(|(i, _)| *i >= LANDMARKS))
        {
            return Err(files(format!("the learned {:?} mouth moves a landmark past {LANDMARKS}", bad.viseme)));
        }
        let read = |name: &str| {
            let image = image::open(dir.join(name)).map_err(|e| files(format!("{name}: {e}")))?;
            if image.width() != rig.size || image.height() != rig.size {
                return Err(files(format!("{name} is {}×{}, rig says {}", image.width(), image.height(), rig.size)));
            }
            Ok(image.to_rgb8().pixels().map(|p| u32::from_le_bytes([p[0], p[1], p[2], 255])).collect::<Vec<u32>>())
        };
        let mut idle = Vec::with_capacity(rig.idle.len());
        for (k, landmarks) in rig.idle.into_iter().enumerate() {
            if landmarks.len() != LANDMARKS {
                return Err(files(format!("idle frame {k} has {} landmarks", landmarks.len())));
            }
            let portrait = read(&idle_file(k))?;
            idle.push(Replica {
                size: rig.size,
                portrait,
                landmarks,
                idle: Vec::new(),
                mouths: LearnedMouths::default(),
            });
        }
        let mut replica = Self {
            size: rig.size,
            portrait: read("portrait.png")?,
            landmarks: rig.landmarks,
            idle,
            mouths: LearnedMouths::default(),
        };
        replica.set_mouths(rig.mouths);
        Ok(replica)
    }
}

fn idle_file(k: usize) -> String {
    format!("idle/{k:03}.png")
}

/// Decodes an uploaded or downloaded image, with a clear error.
pub fn decode_photo(bytes: &[u8]) -> Result<RgbImage, ReplicaError> {
    let image = image::load_from_memory(bytes).map_err(|e| ReplicaError::Image(e.to_string()))?;
    if image.width() == 0 || image.height() == 0 {
        return Err(ReplicaError::Image("the image is empty".into()));
    }
    Ok(image.to_rgb8())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resized_replica_keeps_its_picture_and_landmarks_in_place() {
        // Left half dark, right half bright, a landmark on the boundary.
        let still = |shift: u32| Replica {
            size: 64,
            portrait: (0..64 * 64)
                .map(|i| if (i % 64 + shift) < 32 { u32::from_le_bytes([20, 20, 20, 255]) } else { u32::MAX })
                .collect(),
            landmarks: (0..LANDMARKS).map(|i| [32.0, i as f32 / 8.0]).collect(),
            idle: Vec::new(),
            mouths: LearnedMouths::default(),
        };
        let replica = Replica { idle: vec![still(0), still(4)], ..still(0) };
        let big = replica.resized(128).unwrap();
        assert_eq!((big.size, big.portrait.len(), big.idle.len()), (128, 128 * 128, 2));
        assert_eq!(big.landmarks[8], [64.0, 2.0]);
        assert!(big.idle.iter().all(|f| f.size == 128 && f.landmarks[8] == [64.0, 2.0]));
        let luma = |p: u32| p.to_le_bytes()[0];
        assert_eq!((luma(big.portrait[10]), luma(big.portrait[120])), (20, 255));
        assert!(matches!(replica.resized(100), Err(ReplicaError::BadSize(100))));
        assert_eq!(replica.resized(64).unwrap().portrait, replica.portrait);
    }
}
