//! The service's binary, run as an operator would, against the test's database and streams.

use std::process::{Command, Output, Stdio};

use learning_progress::messaging::NatsConfig;
use sqlx::PgPool;

/// The URL of the test's own database (`#[sqlx::test]` makes one per test).
pub async fn database_url(pool: &PgPool) -> String {
    let database: String = sqlx::query_scalar("select current_database()")
        .fetch_one(pool)
        .await
        .unwrap();
    format!("postgres://postgres@127.0.0.1:5432/{database}")
}

/// `nats` as the binary's environment: the server, the subjects' prefix, the streams and
/// their limits.
pub fn nats_env(nats: &NatsConfig) -> Vec<(&'static str, String)> {
    vec![
        ("NATS_URL", nats.url.clone()),
        ("NATS_SUBJECT_PREFIX", nats.subject_prefix.clone()),
        ("NATS_COMMANDS_STREAM", nats.commands_stream.clone()),
        ("NATS_EVENTS_STREAM", nats.events_stream.clone()),
        ("NATS_DLQ_STREAM", nats.dlq_stream.clone()),
        ("NATS_STREAM_MAX_AGE_HOURS", nats.max_age_hours.to_string()),
        ("NATS_EVENTS_MAX_BYTES", nats.events_max_bytes.to_string()),
        ("NATS_DLQ_MAX_BYTES", nats.dlq_max_bytes.to_string()),
        (
            "NATS_COMMANDS_MAX_BYTES",
            nats.commands_max_bytes.to_string(),
        ),
    ]
}

/// The binary with `nats` in its environment and no terminal on its input.
pub fn binary(nats: &NatsConfig) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_learning-progress"));
    command.envs(nats_env(nats)).stdin(Stdio::null());
    command
}

/// Runs the binary with `args` on the test's database, streams and Temporal, off the runtime's
/// threads.
pub async fn cli(pool: &PgPool, nats: &NatsConfig, args: &[&str]) -> Output {
    let mut command = binary(nats);
    command
        .args(args)
        .env("DATABASE_URL", database_url(pool).await)
        .env(
            "TEMPORAL_ADDRESS",
            super::temporal::temporal_config().address_or_default(),
        );
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}
