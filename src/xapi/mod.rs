//! xAPI: the ledger's applied commands as xAPI statements (`docs/xapi.md`).
//!
//! - [`statement`]: the mapping — pure functions from a ledger record to a statement, with
//!   deterministic ids.
//! - [`ledger`]: reading applied commands and the catalogue's titles.
//! - [`lrs`]: posting statements to a Learning Record Store.
//! - [`forward`]: the `xapi-forward` subcommand — follows the events and posts their
//!   statements to an LRS, or backfills a learner's or a track's history.
//!
//! The API serves the same statements from the ledger: `GET /xapi/statements`
//! ([`crate::api`]'s `xapi` routes).

mod config;
pub mod forward;
pub(crate) mod ledger;
pub mod lrs;
pub mod statement;

pub use config::XapiConfig;
pub(crate) use statement::Statement;
