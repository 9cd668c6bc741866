//! NATS JetStream: configuration, connecting, the three streams, subjects and the CloudEvents
//! headers.
//!
//! Stream names and the subject prefix are configuration, so tests and several deployments can
//! share one NATS account without overlapping subjects.

mod connect;
mod headers;
mod publish;
mod streams;

pub use connect::{ConnectError, connect, options};
pub use headers::{CloudEvent, cloud_event_headers, header_str};
pub use publish::{
    SOURCE, is_permanent, publish_command, publish_command_copy, publish_erased, publish_event,
};
pub use streams::{MAX_COMMAND_BYTES, StreamSetupError, delete_streams, ensure_streams};

use std::path::PathBuf;
use std::time::Duration;

use uuid::Uuid;

#[derive(Debug, Clone, clap::Args)]
pub struct NatsConfig {
    /// NATS server URL(s), comma separated.
    #[arg(
        long = "nats-url",
        env = "NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub url: String,

    /// First token of every subject: `<prefix>.cmd.…`, `<prefix>.evt.…`, `<prefix>.dlq.…`.
    #[arg(long, env = "NATS_SUBJECT_PREFIX", default_value = "progress")]
    pub subject_prefix: String,

    /// Stream holding progress commands.
    #[arg(
        long,
        env = "NATS_COMMANDS_STREAM",
        default_value = "PROGRESS_COMMANDS"
    )]
    pub commands_stream: String,

    /// Stream holding progress events.
    #[arg(long, env = "NATS_EVENTS_STREAM", default_value = "PROGRESS_EVENTS")]
    pub events_stream: String,

    /// Stream holding dead letters.
    #[arg(long, env = "NATS_DLQ_STREAM", default_value = "PROGRESS_DLQ")]
    pub dlq_stream: String,

    /// How long the events stream keeps events for subscribers (commands and dead letters
    /// are never aged out).
    #[arg(long, env = "NATS_STREAM_MAX_AGE_HOURS", default_value_t = 24 * 7)]
    pub max_age_hours: u64,

    /// Most bytes the events stream keeps; the oldest events go first.
    #[arg(long, env = "NATS_EVENTS_MAX_BYTES", default_value_t = 1 << 30)]
    pub events_max_bytes: i64,

    /// Most bytes of dead letters kept; beyond it new ones are refused (and retried), never
    /// old ones dropped. Handle them before it fills.
    #[arg(long, env = "NATS_DLQ_MAX_BYTES", default_value_t = 1 << 30)]
    pub dlq_max_bytes: i64,

    /// Most bytes of unapplied commands; beyond it publishes are refused (and retried), never
    /// a command dropped. -1: as much as the server allows.
    #[arg(long, env = "NATS_COMMANDS_MAX_BYTES", default_value_t = -1, allow_negative_numbers = true)]
    pub commands_max_bytes: i64,

    /// Window in which JetStream drops a republished message with the same `Nats-Msg-Id`.
    #[arg(long, env = "NATS_DUPLICATE_WINDOW_SECS", default_value_t = 120)]
    pub duplicate_window_secs: u64,

    /// Stream replicas: 1 on a single server, 3 in a cluster.
    #[arg(long, env = "NATS_REPLICAS", default_value_t = 1)]
    pub replicas: usize,

    /// A NATS credentials file (the user's JWT and NKey seed) for this component's role;
    /// deploy/README.md lists what each role may do.
    #[arg(long, env = "NATS_CREDS")]
    pub creds: Option<PathBuf>,

    /// CA certificate(s) (PEM) the server's TLS certificate must chain to; implies TLS.
    #[arg(long, env = "NATS_TLS_CA")]
    pub tls_ca: Option<PathBuf>,

    /// Client certificate (PEM) for servers that verify clients; needs `NATS_TLS_KEY`.
    #[arg(long, env = "NATS_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The client certificate's private key (PEM); needs `NATS_TLS_CERT`.
    #[arg(
        long,
        env = "NATS_TLS_KEY",
        requires = "tls_cert",
        hide_env_values = true
    )]
    pub tls_key: Option<PathBuf>,
}

impl NatsConfig {
    /// A configuration whose streams and subjects are unique to `tag`, for tests and
    /// side-by-side deployments on one server.
    pub fn isolated(url: impl Into<String>, tag: &str) -> NatsConfig {
        let upper = tag.to_uppercase();
        NatsConfig {
            url: url.into(),
            subject_prefix: format!("{tag}.progress"),
            commands_stream: format!("{upper}_PROGRESS_COMMANDS"),
            events_stream: format!("{upper}_PROGRESS_EVENTS"),
            dlq_stream: format!("{upper}_PROGRESS_DLQ"),
            max_age_hours: 1,
            // small, so many tests' streams fit beside each other in one server's storage
            events_max_bytes: 64 << 20,
            dlq_max_bytes: 64 << 20,
            commands_max_bytes: 64 << 20,
            duplicate_window_secs: 120,
            replicas: 1,
            creds: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
        }
    }

    /// TLS is required as soon as a CA or a client certificate is configured, so a server (or
    /// a man in the middle) offering plain text is refused rather than trusted.
    pub(crate) fn tls_required(&self) -> bool {
        self.tls_ca.is_some() || self.tls_cert.is_some()
    }

    pub(crate) fn events_max_age(&self) -> Duration {
        Duration::from_secs(self.max_age_hours * 3600)
    }

    pub(crate) fn duplicate_window(&self) -> Duration {
        Duration::from_secs(self.duplicate_window_secs)
    }

    pub fn command_subject(&self, user_id: Uuid, track_id: Uuid) -> String {
        format!("{}.cmd.{user_id}.{track_id}", self.subject_prefix)
    }

    pub fn event_subject(&self, user_id: Uuid, track_id: Uuid) -> String {
        format!("{}.evt.{user_id}.{track_id}", self.subject_prefix)
    }

    /// Events of every learner.
    pub(crate) fn events_filter(&self) -> String {
        format!("{}.evt.>", self.subject_prefix)
    }

    pub fn dlq_subject(&self, reason: &str) -> String {
        format!("{}.dlq.{reason}", self.subject_prefix)
    }

    /// The servers in `url`: one, or a cluster's nodes comma separated. The client starts with
    /// one of them and fails over to the others (and to any the cluster announces).
    pub fn servers(&self) -> Vec<&str> {
        self.url
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect()
    }
}
