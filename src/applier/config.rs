//! The applier's settings, from flags or the environment.

use std::time::Duration;

use super::sql::Timeouts;

#[derive(Debug, Clone, clap::Args)]
pub struct ApplierConfig {
    /// Durable consumer shared by every applier instance.
    #[arg(long, env = "APPLIER_DURABLE", default_value = "progress-applier")]
    pub durable: String,

    /// Most commands applied in one transaction.
    #[arg(long, env = "APPLIER_BATCH_SIZE", default_value_t = 500)]
    pub batch_size: usize,

    /// Seconds JetStream waits for an ack before redelivering a command.
    #[arg(long, env = "APPLIER_ACK_WAIT_SECS", default_value_t = 30)]
    pub ack_wait_secs: u64,

    /// Commands in flight per consumer (all instances together); bounds memory and redelivery.
    #[arg(long, env = "APPLIER_MAX_ACK_PENDING", default_value_t = 20_000)]
    pub max_ack_pending: i64,

    /// Batches in their transactions at once; 1 commits one batch after the other.
    #[arg(long, env = "APPLIER_COMMITS_IN_FLIGHT", default_value_t = 2)]
    pub commits_in_flight: usize,

    /// Longest pause between retries of a batch that failed for a transient reason.
    #[arg(long, env = "APPLIER_MAX_BACKOFF_MS", default_value_t = 5_000)]
    pub max_backoff_ms: u64,

    /// How long a command may wait for a missing predecessor (a lower seq of its learner)
    /// before it is dead-lettered as `seq_gap`; the workflow re-publishes lost commands well
    /// within it.
    #[arg(long, env = "APPLIER_GAP_WAIT_SECS", default_value_t = 3_600)]
    pub gap_wait_secs: u64,

    /// Longest statement of a batch's transaction.
    #[arg(long, env = "APPLIER_STATEMENT_TIMEOUT_MS", default_value_t = 30_000)]
    pub statement_timeout_ms: u64,

    /// Longest wait for a learner's lock; only another applier's batch holds it, for
    /// milliseconds, unless that applier is partitioned away.
    #[arg(long, env = "APPLIER_LOCK_TIMEOUT_MS", default_value_t = 10_000)]
    pub lock_timeout_ms: u64,

    /// A transaction idle this long is ended by the server, releasing its locks: an applier
    /// cut off mid-batch cannot hold its learners until TCP notices.
    #[arg(long, env = "APPLIER_IDLE_IN_TRANSACTION_MS", default_value_t = 30_000)]
    pub idle_in_transaction_ms: u64,

    /// An applied command whose event JetStream has not confirmed this long after it was
    /// applied is announced again by a sweep (its applier died before publishing, and its
    /// message was lost); a redelivery normally does it first, within the ack wait.
    #[arg(long, env = "APPLIER_ANNOUNCE_AFTER_SECS", default_value_t = 60)]
    pub announce_after_secs: u64,
}

impl Default for ApplierConfig {
    /// The command line's defaults ([`crate::config::defaults`]).
    fn default() -> ApplierConfig {
        crate::config::defaults()
    }
}

impl ApplierConfig {
    pub(super) fn timeouts(&self) -> Timeouts {
        Timeouts {
            statement: Duration::from_millis(self.statement_timeout_ms),
            lock: Duration::from_millis(self.lock_timeout_ms),
            idle_in_transaction: Duration::from_millis(self.idle_in_transaction_ms),
        }
    }
}
