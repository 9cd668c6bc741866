//! Backfill: a learner's or a track's existing history, read from the ledger in the order it
//! was applied and sent to the LRS in batches. Statements the LRS already holds are taken again
//! as duplicates, so a backfill can overlap the forwarder or an earlier backfill.

use std::fmt;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::ForwardConfig;
use crate::xapi::lrs::{Lrs, PostError};
use crate::xapi::{XapiConfig, ledger, statement};

/// Attempts per batch before a backfill gives up on an LRS that keeps failing.
const ATTEMPTS: u32 = 6;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct BackfillReport {
    pub sent: u64,
    /// Statement ids the LRS refused, with its answer.
    pub refused: Vec<(uuid::Uuid, String)>,
}

impl fmt::Display for BackfillReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sent {} statements", self.sent)?;
        for (id, answer) in &self.refused {
            write!(f, "\nrefused {id}: {answer}")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum BackfillError {
    #[error(transparent)]
    Client(#[from] crate::xapi::lrs::ClientError),
    #[error("reading the ledger")]
    Database(#[from] sqlx::Error),
    #[error("after {ATTEMPTS} attempts, {sent} statements sent")]
    Lrs {
        sent: u64,
        #[source]
        source: PostError,
    },
    #[error("interrupted after {sent} statements sent")]
    Interrupted { sent: u64 },
    #[error("the LRS refused {} statements; {} sent:{}", .0.refused.len(), .0.sent,
            .0.refused.iter().map(|(id, answer)| format!("\n  {id}: {answer}")).collect::<String>())]
    Refused(BackfillReport),
}

/// Sends the applied history of `config.backfill_user` and/or `config.backfill_track`.
pub(crate) async fn backfill(
    pool: &PgPool,
    xapi: &XapiConfig,
    config: &ForwardConfig,
    shutdown: &CancellationToken,
) -> Result<BackfillReport, BackfillError> {
    let lrs = Lrs::new(&config.lrs)?;
    let filter = ledger::Filter {
        user_id: config.backfill_user,
        track_id: config.backfill_track,
        ..Default::default()
    };
    let mut report = BackfillReport::default();
    let mut after = None;
    loop {
        let page = ledger::applied(pool, &filter, true, after, config.batch_size.into()).await?;
        let Some(last) = page.last() else { break };
        after = Some((last.applied_at, last.command.command_id));
        let statements: Vec<_> = page
            .iter()
            .map(|record| statement::statement(xapi, record, false))
            .collect();
        send(&lrs, config, &statements, &mut report, shutdown).await?;
    }
    if report.refused.is_empty() {
        Ok(report)
    } else {
        Err(BackfillError::Refused(report))
    }
}

/// One batch, retried with backoff; refused as a whole, then one by one.
async fn send(
    lrs: &Lrs,
    config: &ForwardConfig,
    statements: &[statement::Statement],
    report: &mut BackfillReport,
    shutdown: &CancellationToken,
) -> Result<(), BackfillError> {
    let mut attempt = 0;
    loop {
        let outcome = match lrs.post(statements).await {
            Err(PostError::Refused { .. }) if statements.len() > 1 => {
                for statement in statements {
                    Box::pin(send(
                        lrs,
                        config,
                        std::slice::from_ref(statement),
                        report,
                        shutdown,
                    ))
                    .await?;
                }
                return Ok(());
            }
            Err(PostError::Refused { status, answer }) => {
                report
                    .refused
                    .push((statements[0].id(), format!("{status}: {answer}")));
                return Ok(());
            }
            outcome => outcome,
        };
        match outcome {
            Ok(()) => {
                report.sent += statements.len() as u64;
                return Ok(());
            }
            Err(source) if attempt + 1 >= ATTEMPTS => {
                return Err(BackfillError::Lrs {
                    sent: report.sent,
                    source,
                });
            }
            Err(error) => {
                let backoff = config.backoff(attempt);
                tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "backfill batch not taken; retrying");
                attempt += 1;
                tokio::select! {
                    _ = shutdown.cancelled() => return Err(BackfillError::Interrupted { sent: report.sent }),
                    _ = tokio::time::sleep(backoff) => {}
                }
            }
        }
    }
}
