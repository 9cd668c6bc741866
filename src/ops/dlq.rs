//! Dead letters for operators: list them, show one, send them back to the commands stream,
//! purge them.
//!
//! A dead letter is the original command's bytes and headers on `<prefix>.dlq.<reason>`, with
//! why (`lp-dlq-reason`, `lp-dlq-error`) and where it came from (`lp-dlq-subject`,
//! `lp-dlq-stream-seq`); see `applier::dlq`. Redriving republishes the original to its
//! original subject, with its own headers restored, and then removes the dead letter. The
//! applier decides again as for any delivery: a command whose cause is fixed (a publisher that
//! sent an unknown type, a newer applier) is applied; one that fails again becomes a new dead
//! letter, once — redriving is a person's act, never a loop. A command the ledger recorded as
//! rejected (a unit not on its track) stays rejected: its id is taken, and later commands of
//! its learner were applied after it.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream::Stream};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::messaging::NatsConfig;

/// One dead letter, as stored.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// Its sequence in the dead-letter stream: how an operator names it.
    pub seq: u64,
    pub stored_at: DateTime<Utc>,
    pub reason: String,
    pub error: String,
    /// The subject the original was published on.
    pub subject: String,
    pub user_id: Option<Uuid>,
    pub track_id: Option<Uuid>,
    /// How often the applier received the original before dead-lettering it.
    pub deliveries: Option<u64>,
    #[serde(skip)]
    pub headers: HeaderMap,
    #[serde(skip)]
    pub payload: Bytes,
}

impl DeadLetter {
    fn from_stored(message: jetstream::message::StreamMessage) -> DeadLetter {
        let header = |name: &str| {
            message
                .headers
                .get(name)
                .map(|value| value.as_str().to_owned())
        };
        let subject = header("lp-dlq-subject").unwrap_or_default();
        // `<prefix>.cmd.<user>.<track>`, or the payload's ids when the subject says nothing
        let mut tokens = subject.rsplit('.');
        let (track, user) = (tokens.next(), tokens.next());
        let parse = |token: Option<&str>| token.and_then(|t| t.parse::<Uuid>().ok());
        let from_payload = serde_json::from_slice::<Ids>(&message.payload).ok();
        DeadLetter {
            seq: message.sequence,
            stored_at: DateTime::from_timestamp_nanos(
                i64::try_from(message.time.unix_timestamp_nanos()).unwrap_or(i64::MAX),
            ),
            reason: header("lp-dlq-reason").unwrap_or_else(|| "unknown".to_owned()),
            error: header("lp-dlq-error").unwrap_or_default(),
            user_id: parse(user).or(from_payload.as_ref().and_then(|ids| ids.user_id)),
            track_id: parse(track).or(from_payload.as_ref().and_then(|ids| ids.track_id)),
            deliveries: header("lp-dlq-deliveries").and_then(|d| d.parse().ok()),
            subject,
            headers: message.headers,
            payload: message.payload,
        }
    }

    /// How long ago it was dead-lettered.
    pub(crate) fn age(&self) -> Duration {
        (Utc::now() - self.stored_at).to_std().unwrap_or_default()
    }

    /// The original's headers as it was published: renamed JetStream headers restored,
    /// the dead letter's own left out.
    fn original_headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, values) in self.headers.iter() {
            let name: &str = name.as_ref();
            let lower = name.to_ascii_lowercase();
            let restored = match lower.strip_prefix("lp-dlq-original-") {
                Some(_) => &name["lp-dlq-original-".len()..],
                None if lower.starts_with("lp-dlq-") || lower.starts_with("nats-") => continue,
                None => name,
            };
            // expectations were about the stream as it was then
            if restored.to_ascii_lowercase().starts_with("nats-expected-") {
                continue;
            }
            for value in values {
                headers.append(restored, value.as_str());
            }
        }
        headers
    }
}

#[derive(serde::Deserialize)]
struct Ids {
    user_id: Option<Uuid>,
    track_id: Option<Uuid>,
}

/// Which dead letters a command is about; every set field must match.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Named by sequence; empty: any.
    pub seqs: Vec<u64>,
    pub reason: Option<String>,
    pub user: Option<Uuid>,
    pub older_than: Option<Duration>,
}

impl Filter {
    fn matches(&self, dead: &DeadLetter) -> bool {
        (self.seqs.is_empty() || self.seqs.contains(&dead.seq))
            && self.reason.as_ref().is_none_or(|r| *r == dead.reason)
            && self.user.is_none_or(|u| dead.user_id == Some(u))
            && self.older_than.is_none_or(|age| dead.age() >= age)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error(
        "the dead-letter stream {0} does not exist: no applier has run against this NATS \
         (check NATS_URL and NATS_DLQ_STREAM)"
    )]
    NoStream(String),
    #[error("looking up the dead-letter stream {0}")]
    Lookup(String, #[source] jetstream::context::GetStreamError),
    #[error("reading the dead-letter stream")]
    Info(#[from] jetstream::context::RequestError),
    #[error("reading dead letter {0}")]
    Read(u64, #[source] jetstream::stream::RawMessageError),
    #[error("no dead letter {0}")]
    NotFound(u64),
    #[error("dead letter {0} does not say where its original was published")]
    NoSubject(u64),
    #[error("republishing dead letter {0} to {1}")]
    Publish(u64, String, #[source] jetstream::context::PublishError),
    #[error("removing dead letter {0}")]
    Delete(u64, #[source] jetstream::stream::DeleteMessageError),
}

/// The dead-letter stream of `config`.
pub async fn stream(js: &jetstream::Context, config: &NatsConfig) -> Result<Stream, DlqError> {
    js.get_stream(&config.dlq_stream).await.map_err(|e| {
        let name = config.dlq_stream.clone();
        match e.kind() {
            jetstream::context::GetStreamErrorKind::JetStream(error)
                if error.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
            {
                DlqError::NoStream(name)
            }
            _ => DlqError::Lookup(name, e),
        }
    })
}

/// Every dead letter `filter` selects, oldest first.
pub async fn list(stream: &mut Stream, filter: &Filter) -> Result<Vec<DeadLetter>, DlqError> {
    let state = stream.info().await?.state.clone();
    let mut found = Vec::new();
    if state.messages == 0 {
        return Ok(found);
    }
    let seqs: Vec<u64> = if filter.seqs.is_empty() {
        (state.first_sequence..=state.last_sequence).collect()
    } else {
        filter.seqs.clone()
    };
    for seq in seqs {
        match stream.get_raw_message(seq).await {
            Ok(message) => {
                let dead = DeadLetter::from_stored(message);
                if filter.matches(&dead) {
                    found.push(dead);
                }
            }
            // removed (redriven, purged) or never there: a gap in the sequence
            Err(e) if e.kind() == jetstream::stream::RawMessageErrorKind::NoMessageFound => {}
            Err(e) => return Err(DlqError::Read(seq, e)),
        }
    }
    Ok(found)
}

/// One dead letter by sequence.
pub async fn show(stream: &mut Stream, seq: u64) -> Result<DeadLetter, DlqError> {
    let filter = Filter {
        seqs: vec![seq],
        ..Filter::default()
    };
    list(stream, &filter)
        .await?
        .pop()
        .ok_or(DlqError::NotFound(seq))
}

/// How many dead letters of each reason `dead` holds.
pub fn by_reason(dead: &[DeadLetter]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for letter in dead {
        *counts.entry(letter.reason.clone()).or_default() += 1;
    }
    counts
}

/// Republishes `dead`'s original to its original subject, then removes the dead letter.
/// The republished message's `Nats-Msg-Id` names the dead letter, so redriving the same one
/// twice (a crash between the two steps) stores it once.
pub async fn redrive(
    js: &jetstream::Context,
    stream: &Stream,
    config: &NatsConfig,
    dead: &DeadLetter,
) -> Result<(), DlqError> {
    if dead.subject.is_empty() {
        return Err(DlqError::NoSubject(dead.seq));
    }
    let mut headers = dead.original_headers();
    let original_id = headers
        .get("Nats-Msg-Id")
        .map(|id| id.as_str().to_owned())
        .unwrap_or_else(|| "-".to_owned());
    headers.insert(
        "Nats-Msg-Id",
        format!("{original_id}.redrive.{}.{}", config.dlq_stream, dead.seq).as_str(),
    );
    headers.insert(
        "lp-redriven-from",
        format!("{}/{}", config.dlq_stream, dead.seq).as_str(),
    );
    let publish_error = |e| DlqError::Publish(dead.seq, dead.subject.clone(), e);
    js.publish_with_headers(dead.subject.clone(), headers, dead.payload.clone())
        .await
        .map_err(publish_error)?
        .await
        .map_err(publish_error)?;
    remove(stream, dead.seq).await
}

/// Removes one dead letter; one already gone counts as removed.
pub async fn remove(stream: &Stream, seq: u64) -> Result<(), DlqError> {
    match stream.delete_message(seq).await {
        Ok(_) => Ok(()),
        Err(e) if e.to_string().contains("no message found") => Ok(()),
        Err(e) => Err(DlqError::Delete(seq, e)),
    }
}
