//! Audio in: decoding uploaded files and resampling any rate to what a stage needs.

pub mod decode;
mod ogg_opus;
pub mod resample;

pub use decode::{AudioFormat, DecodeError, Decoded, decode, decode_to};
pub use resample::{ResampleError, StreamResampler, resample};
