//! Helpers shared by the integration tests: isolated NATS names, waiting on conditions with a
//! deadline, reading a stream, and a TCP proxy that can cut a connection to a real server
//! (`nats`, re-exported here); in the other modules, learners' commands, the service's binary,
//! the read API and a Temporal worker.
#![allow(dead_code)]

pub mod api;
pub mod binary;
pub mod commands;
mod nats;
pub mod temporal;

#[allow(unused_imports)] // not every test binary uses every helper
pub use nats::*;
