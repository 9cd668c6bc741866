//! learning-progress: stores and serves every learner's progress through learning tracks.
//!
//! Writes are message-driven: the `LearningPathWorkflow` (Temporal) publishes
//! [`model::ProgressCommand`]s to NATS JetStream, the applier applies them exactly once to
//! PostgreSQL and publishes a progress event per change. Reads are cached: the API answers from
//! a moka cache kept fresh by those events.
//!
//! - [`model`]: the pure core — commands, the snapshot, the merge rules. No I/O.
//! - [`db`]: PostgreSQL — pool, migrations, tracks and the progress CRUD.
//! - [`messaging`]: NATS JetStream — streams, subjects, CloudEvents headers, publishing.
//! - [`config`]: flags and environment, parsed once per component.
//! - [`workflow`]: Temporal — the `LearningPathWorkflow`, its activities, worker and client.
//! - [`applier`]: the durable consumer that applies commands and publishes events.
//! - [`api`]: the read service — HTTP routes, the event-fed snapshot cache, metrics.
//! - [`auth`]: Supabase access tokens — verification (HS256 secret, JWKS keys) and dev tokens.
//! - [`simulate`]: drives many learners through real workflows and checks every row.
//! - [`all`]: worker, applier and API in one process.
//! - [`ops`]: what operators run — dead letters, lag, verify and rebuild, export, erasing a
//!   learner.
//! - [`track_changes`]: units added to, removed from or moved within a track learners are on.
//! - [`xapi`]: the ledger as xAPI statements — the mapping, the read view, forwarding to an
//!   LRS.
//! - [`schemas`]: the JSON Schemas of the command and event payloads, for agents.
//! - [`shutdown`]: one Ctrl-C/SIGTERM token fanned out to every component.
//! - [`telemetry`]: tracing setup.
//! - [`meter`]: how far a long command has got, on stderr.
//!
//! `ARCHITECTURE.md` draws the processes and says where each invariant lives.

pub mod all;
pub mod api;
pub mod applier;
pub mod auth;
pub mod config;
pub mod db;
pub mod messaging;
pub(crate) mod meter;
pub mod model;
pub mod ops;
pub mod schemas;
pub mod shutdown;
pub mod simulate;
pub mod telemetry;
pub mod track_changes;
pub mod workflow;
pub mod xapi;
