//! The `tete` binary's library: command line, HTTP service, and (as they
//! land) the API, storage, webhooks and the WebRTC edge.

pub mod api;
pub mod cli;
pub mod conversations;
pub mod db;
pub mod edge;
pub mod http;
pub mod ids;
pub mod lifecycle;
pub mod recording;
pub mod training;
pub mod webhooks;
