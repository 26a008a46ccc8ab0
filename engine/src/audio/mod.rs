//! Audio in: decoding uploaded files and resampling any rate to what a stage needs.
