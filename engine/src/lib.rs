//! The tete inference engine: device selection, model packs, and (as they
//! land) the streaming stages and the frame scheduler.

pub mod asr;
pub mod audio;
pub mod device;
pub mod dialogue;
pub mod face;
pub mod features;
pub mod gpu;
pub mod hearing;
pub mod llm;
pub mod models;
pub mod perception;
pub mod remote;
pub mod scheduler;
pub mod session;
pub mod tts;
pub mod turn;
pub mod vad;

pub use device::{DeviceError, DeviceRequest, Devices, Primary};
