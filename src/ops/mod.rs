//! Operations a person running the service needs, one subcommand each (see `main.rs`).
//!
//! - [`dlq`]: dead letters — list, show, redrive, purge.

pub mod dlq;
pub mod dlq_command;
