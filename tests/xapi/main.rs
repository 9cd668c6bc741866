//! The xAPI forwarder against a real LRS: Ralph (`ralph-malph`, file-system backend, basic
//! auth), installed by `tests/xapi/setup.sh` on the first run and started per test on a free
//! loopback port with its own data directory. Learners go through the real workflow, applier
//! and events; the statements read back from Ralph are checked against the ledger.

#[path = "../common/mod.rs"]
mod common;

mod forwarding;
mod process;
mod ralph;
mod statements;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use async_nats::jetstream;
use chrono::{DateTime, Utc};
use common::temporal::{temporal_config, write_path};
use common::{delete_streams, eventually, isolated_nats};
use learning_progress::applier::{self, ApplierConfig, Seams};
use learning_progress::db::tracks::{Track, create_track};
use learning_progress::messaging::{NatsConfig, header_str};
use learning_progress::model::ProgressEvent;
use learning_progress::workflow::{self, AssessmentRecorded, TemporalConfig, client};
use learning_progress::xapi::XapiConfig;
use learning_progress::xapi::forward::{self, Deps, ForwardConfig, Metrics};
use learning_progress::xapi::lrs::XapiVersion;
use learning_progress::xapi::statement::{registration, statement_id, verbs};
use ralph::Ralph;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(60);
const USER: &str = "forwarder";
const PASSWORD: &str = "a-test-password";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn xapi_config() -> XapiConfig {
    XapiConfig {
        home_page: "https://project.supabase.example".to_owned(),
        activity_base: "https://lp.example/activities".to_owned(),
        language: "en".to_owned(),
    }
}

/// The worker and the applier, in this process, while [`drive`] takes `learners` through
/// `track`; returns the streams the events are in.
async fn with_learners(
    pool: &PgPool,
    track: &Track,
    learners: &[Uuid],
) -> (NatsConfig, jetstream::Context) {
    let temporal = temporal_config();
    let (nats, js) = isolated_nats().await;
    let temporal_client = workflow::connect(&temporal, "test").await.unwrap();
    let shutdown = CancellationToken::new();
    let (worker, applier) = write_path(&temporal, &temporal_client, &nats, &js, pool, &shutdown);
    let test = async {
        drive(pool, &temporal_client, &temporal, track, learners).await;
        shutdown.cancel();
    };
    let (worker, ()) = tokio::join!(worker, test);
    worker.expect("the worker ran and stopped cleanly");
    applier.await.unwrap().unwrap();
    (nats, js)
}

/// Drives `learners` through every unit of `track` (its third unit an assessment: a failed
/// attempt, then a passed one), and waits until the ledger has applied all their commands:
/// seven each.
async fn drive(
    pool: &PgPool,
    client: &temporalio_client::Client,
    temporal: &TemporalConfig,
    track: &Track,
    learners: &[Uuid],
) {
    for &user in learners {
        client::start_track(client, temporal, pool, user, track.id)
            .await
            .unwrap();
        for (index, unit) in track.units.iter().enumerate() {
            if index == 2 {
                for (score, passed) in [(3.0, false), (9.0, true)] {
                    let attempt = AssessmentRecorded {
                        unit_id: unit.id,
                        attempt_id: Uuid::new_v4(),
                        score,
                        max_score: 10.0,
                        passed,
                    };
                    client::record_assessment(client, user, track.id, attempt)
                        .await
                        .unwrap();
                }
            }
            client::complete_unit(client, user, track.id, unit.id)
                .await
                .unwrap();
        }
    }
    let expected = 7 * learners.len() as i64;
    eventually(WAIT, "every command applied", || async {
        let applied: i64 = sqlx::query_scalar(
            "select count(*) from progress_ledger where outcome = 'applied' and user_id = any($1)",
        )
        .bind(learners)
        .fetch_one(pool)
        .await
        .ok()?;
        (applied == expected).then_some(())
    })
    .await;
}

/// The ledger's applied commands of `learners`: id, type, payload.
async fn ledger(pool: &PgPool, learners: &[Uuid]) -> Vec<(Uuid, String, Value)> {
    sqlx::query_as::<_, (Uuid, String, sqlx::types::Json<Value>)>(
        "select command_id, kind, payload from progress_ledger
         where outcome = 'applied' and user_id = any($1) order by user_id, seq",
    )
    .bind(learners)
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .map(|(id, kind, payload)| (id, kind, payload.0))
    .collect()
}

/// Checks the LRS's statements against the ledger: one per applied command, with its id, its
/// verb and, for assessments, its result.
fn check_against_ledger(statements: &[Value], ledger: &[(Uuid, String, Value)]) {
    let by_id: BTreeMap<String, &Value> = statements
        .iter()
        .map(|s| (s["id"].as_str().unwrap().to_owned(), s))
        .collect();
    assert_eq!(by_id.len(), statements.len(), "no statement twice");
    assert_eq!(statements.len(), ledger.len(), "one statement per command");
    for (command_id, kind, payload) in ledger {
        let id = statement_id(*command_id).to_string();
        let statement = by_id
            .get(&id)
            .unwrap_or_else(|| panic!("no statement for {kind} {command_id}"));
        let verb = statement["verb"]["id"].as_str().unwrap();
        let expected = match (kind.as_str(), payload["passed"].as_bool()) {
            ("track_started", _) => "http://adlnet.gov/expapi/verbs/attempted",
            ("assessment_recorded", Some(true)) => "http://adlnet.gov/expapi/verbs/passed",
            ("assessment_recorded", _) => "http://adlnet.gov/expapi/verbs/failed",
            _ => "http://adlnet.gov/expapi/verbs/completed",
        };
        assert_eq!(verb, expected, "{kind} {command_id}");
        assert_eq!(
            statement["actor"]["account"]["name"], payload["user_id"],
            "{id}"
        );
        if kind == "assessment_recorded" {
            let result = &statement["result"];
            assert_eq!(result["success"], payload["passed"]);
            assert_eq!(result["score"]["raw"].as_f64(), payload["score"].as_f64());
            assert_eq!(
                result["score"]["max"].as_f64(),
                payload["max_score"].as_f64()
            );
            let scaled =
                payload["score"].as_f64().unwrap() / payload["max_score"].as_f64().unwrap();
            assert_eq!(result["score"]["scaled"].as_f64(), Some(scaled));
        }
    }
}

fn forward_config(ralph: &Ralph, version: XapiVersion) -> ForwardConfig {
    ForwardConfig {
        batch_size: 5,
        xapi_durable: format!("xapi-{}", Uuid::new_v4().simple()),
        ..ForwardConfig::new(ralph.lrs(version))
    }
}

/// Runs a forwarder in this process until `done` says what it waits for has happened.
async fn forward_until<F, Fut>(
    pool: &PgPool,
    nats: &NatsConfig,
    js: &jetstream::Context,
    config: ForwardConfig,
    done: F,
) -> Metrics
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
{
    let shutdown = CancellationToken::new();
    let metrics = Metrics::new();
    let deps = Deps {
        js: js.clone(),
        pool: pool.clone(),
        nats: nats.clone(),
    };
    let forwarder = tokio::spawn(forward::run(
        deps,
        xapi_config(),
        config,
        metrics.clone(),
        shutdown.clone(),
    ));
    done().await;
    shutdown.cancel();
    forwarder
        .await
        .unwrap()
        .expect("the forwarder stopped cleanly");
    metrics
}

/// The durable's events not yet acknowledged (pending plus in flight); `None` before it exists.
async fn consumer_pending(
    js: &jetstream::Context,
    nats: &NatsConfig,
    durable: &str,
) -> Option<u64> {
    let info = consumer_info(js, nats, durable).await?;
    Some(info.num_pending + info.num_ack_pending as u64)
}

async fn consumer_info(
    js: &jetstream::Context,
    nats: &NatsConfig,
    durable: &str,
) -> Option<jetstream::consumer::Info> {
    let stream = js.get_stream(&nats.events_stream).await.ok()?;
    stream.consumer_info(durable).await.ok()
}
