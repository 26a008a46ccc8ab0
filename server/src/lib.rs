//! The `tete` binary's library: command line, HTTP service, and (as they
//! land) the API, storage, webhooks and the WebRTC edge.

pub mod cli;
pub mod http;
