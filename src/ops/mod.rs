//! Operations a person running the service needs, one subcommand each (see `main.rs`).
//!
//! - [`dlq`]: dead letters — list, show, redrive, purge ([`dlq_command`] prints them).
//! - [`status`]: the write path's lag and failures ([`status_command`] prints them).
//! - [`export`]: a track's rows for reporting tools ([`export_command`] writes them).
//! - [`rebuild`]: `verify` and `rebuild`, every row against the merge of its ledger
//!   ([`rebuild_command`] drives them).
//! - [`erase`]: a learner's erasure (GDPR) — everything held about them, and a tombstone
//!   ([`erase_command`] prints it).

pub mod dlq;
pub mod dlq_command;
pub mod erase;
pub mod erase_command;
pub mod export;
pub mod export_command;
pub mod rebuild;
pub mod rebuild_command;
pub mod status;
pub mod status_command;
