//! The xAPI forwarder against a real LRS: Ralph (`ralph-malph`, file-system backend, basic
//! auth), installed by `tests/xapi/setup.sh` on the first run and started per test on a free
//! loopback port with its own data directory. Learners go through the real workflow, applier
//! and events; the statements read back from Ralph are checked against the ledger.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_nats::jetstream;
use chrono::{DateTime, Utc};
use common::{delete_streams, eventually, isolated_nats};
use learning_progress::applier::{self, ApplierConfig, Seams};
use learning_progress::db::tracks::{Track, create_track};
use learning_progress::messaging::{NatsConfig, header_str};
use learning_progress::model::ProgressEvent;
use learning_progress::workflow::{self, AssessmentRecorded, TemporalConfig, WorkerDeps, client};
use learning_progress::xapi::XapiConfig;
use learning_progress::xapi::forward::{self, Deps, ForwardConfig, Metrics};
use learning_progress::xapi::lrs::{LrsConfig, XapiVersion};
use learning_progress::xapi::statement::{registration, statement_id, verbs};
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(60);
const USER: &str = "forwarder";
const PASSWORD: &str = "a-test-password";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Ralph's LRS on a free loopback port, with its own statements file and credentials.
struct Ralph {
    base: String,
    dir: PathBuf,
    data: PathBuf,
    _child: Child,
}

impl Drop for Ralph {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Ralph {
    async fn start() -> Ralph {
        let output = std::process::Command::new("bash")
            .arg(repo().join("tests/xapi/setup.sh"))
            .stderr(Stdio::inherit())
            .output()
            .expect("running tests/xapi/setup.sh");
        assert!(output.status.success(), "tests/xapi/setup.sh failed");
        let python = String::from_utf8(output.stdout).unwrap().trim().to_owned();
        let dir = std::env::temp_dir().join(format!("lp-ralph-{}", Uuid::new_v4().simple()));
        let data = dir.join("data");
        std::fs::create_dir_all(&data).unwrap();
        let env = [
            ("RALPH_RUNSERVER_BACKEND", "fs".to_owned()),
            ("RALPH_APP_DIR", dir.display().to_string()),
            (
                "RALPH_AUTH_FILE",
                dir.join("auth.json").display().to_string(),
            ),
            (
                "RALPH_BACKENDS__LRS__FS__DEFAULT_DIRECTORY_PATH",
                data.display().to_string(),
            ),
            ("RALPH_RUNSERVER_MAX_SEARCH_HITS_COUNT", "10000".to_owned()),
        ];
        let ralph = Path::new(&python).with_file_name("ralph");
        let auth = Command::new(&ralph)
            .args(["auth", "-u", USER, "-p", PASSWORD, "-s", "all", "-w"])
            .args(["-A", USER, "https://lrs.example"])
            .envs(env.clone())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .expect("ralph auth runs");
        assert!(auth.success(), "ralph auth failed");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&python)
            .arg(repo().join("tests/xapi/ralph_lrs.py"))
            .args(["127.0.0.1", &port.to_string()])
            .envs(env)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("ralph.log")).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("Ralph's LRS starts");
        let base = format!("http://127.0.0.1:{port}");
        let heartbeat = format!("{base}/__heartbeat__");
        eventually(WAIT, "Ralph's LRS to answer", || async {
            let response = reqwest::get(&heartbeat).await.ok()?;
            response.status().is_success().then_some(())
        })
        .await;
        Ralph {
            base,
            dir,
            data,
            _child: child,
        }
    }

    fn lrs(&self, version: XapiVersion) -> LrsConfig {
        LrsConfig {
            lrs_url: format!("{}/xAPI", self.base),
            lrs_username: Some(USER.to_owned()),
            lrs_password: Some(PASSWORD.to_owned()),
            lrs_token: None,
            xapi_version: version,
            lrs_timeout_secs: 10,
        }
    }

    /// Every statement the LRS serves, read through its Statement Resource.
    async fn statements(&self) -> Vec<Value> {
        let body: Value = reqwest::Client::new()
            .get(format!("{}/xAPI/statements?limit=10000", self.base))
            .basic_auth(USER, Some(PASSWORD))
            .header("X-Experience-API-Version", "1.0.3")
            .send()
            .await
            .expect("Ralph answers")
            .json()
            .await
            .expect("a StatementResult");
        body["statements"].as_array().cloned().unwrap_or_default()
    }

    /// How many statements Ralph's file holds, duplicates included.
    fn stored(&self) -> usize {
        std::fs::read_to_string(self.data.join("fs_lrs.jsonl"))
            .map(|text| text.lines().filter(|l| !l.trim().is_empty()).count())
            .unwrap_or(0)
    }

    async fn post(&self, statement: &Value) -> reqwest::StatusCode {
        reqwest::Client::new()
            .post(format!("{}/xAPI/statements", self.base))
            .basic_auth(USER, Some(PASSWORD))
            .header("X-Experience-API-Version", "1.0.3")
            .json(&json!([statement]))
            .send()
            .await
            .expect("Ralph answers")
            .status()
    }
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
    let temporal = TemporalConfig::new(
        std::env::var("TEMPORAL_ADDRESS").unwrap_or_else(|_| "127.0.0.1:7233".to_owned()),
        format!("xapi-{}", Uuid::new_v4()),
    );
    let (nats, js) = isolated_nats().await;
    let temporal_client = workflow::connect(&temporal, "test").await.unwrap();
    let shutdown = CancellationToken::new();
    let deps = WorkerDeps {
        client: temporal_client.clone(),
        jetstream: js.clone(),
        nats: nats.clone(),
        pool: pool.clone(),
    };
    let worker = workflow::run(&temporal, deps, shutdown.clone());
    let applier = tokio::spawn(applier::run(
        js.clone(),
        pool.clone(),
        nats.clone(),
        ApplierConfig::default(),
        Seams::default(),
        shutdown.clone(),
    ));
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

#[sqlx::test]
async fn learners_statements_reach_a_real_lrs_once_each_matching_the_ledger_even_when_replayed(
    pool: PgPool,
) {
    let ralph = Ralph::start().await;
    let track = create_track(&pool, "Rust basics", 3).await.unwrap();
    let learners = [Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()];
    let (nats, js) = with_learners(&pool, &track, &learners).await;
    let ledger = ledger(&pool, &learners).await;
    assert_eq!(ledger.len(), 21);

    let config = forward_config(&ralph, XapiVersion::V2_0_0);
    let metrics = forward_until(&pool, &nats, &js, config.clone(), || async {
        eventually(WAIT, "every statement in the LRS", || async {
            (ralph.statements().await.len() >= ledger.len()).then_some(())
        })
        .await;
    })
    .await;
    check_against_ledger(&ralph.statements().await, &ledger);
    assert_eq!(metrics.forwarded.get(), 21);
    assert_eq!(metrics.refused.get(), 0);
    // titles, parent and registration: one registration per learner and track
    let statements = ralph.statements().await;
    let unit = statements
        .iter()
        .find(|s| s["object"]["id"].as_str().unwrap().contains("/units/"))
        .unwrap();
    assert_eq!(
        unit["context"]["contextActivities"]["parent"][0]["definition"]["name"]["en"],
        "Rust basics"
    );
    let registrations: BTreeSet<&str> = statements
        .iter()
        .map(|s| s["context"]["registration"].as_str().unwrap())
        .collect();
    assert_eq!(registrations.len(), learners.len());

    // the read view gives the statements the LRS holds, but for what each store adds
    let shutdown = CancellationToken::new();
    let base = spawn_api(&pool, &nats, &shutdown).await;
    let (status, _, body) = view(&base, &admin_token(), &[]).await;
    assert_eq!(status, 200);
    let strip = |statement: &Value| {
        let mut statement = statement.clone();
        for added in ["stored", "authority", "version"] {
            statement.as_object_mut().unwrap().remove(added);
        }
        statement
    };
    let served: BTreeMap<String, Value> = body["statements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["id"].as_str().unwrap().to_owned(), strip(s)))
        .collect();
    let held: BTreeMap<String, Value> = statements
        .iter()
        .map(|s| (s["id"].as_str().unwrap().to_owned(), strip(s)))
        .collect();
    assert_eq!(served, held);
    shutdown.cancel();

    // a replay of the whole stream, by a forwarder with a new durable, stores nothing twice
    let replay = ForwardConfig {
        xapi_durable: format!("xapi-{}", Uuid::new_v4().simple()),
        ..config
    };
    let durable = replay.xapi_durable.clone();
    let replayed = forward_until(&pool, &nats, &js, replay, || async {
        eventually(WAIT, "the replay forwarded", || async {
            (consumer_pending(&js, &nats, &durable).await == Some(0)).then_some(())
        })
        .await;
    })
    .await;
    assert_eq!(
        replayed.forwarded.get(),
        21,
        "the LRS took the replay as duplicates"
    );
    assert_eq!(
        ralph.stored(),
        ledger.len(),
        "Ralph's file holds each statement once"
    );
    check_against_ledger(&ralph.statements().await, &ledger);
    delete_streams(&js, &nats).await;
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

#[sqlx::test]
async fn a_statement_the_lrs_refuses_is_dead_lettered_with_its_answer_and_the_rest_go_through(
    pool: PgPool,
) {
    let ralph = Ralph::start().await;
    let track = create_track(&pool, "SQL", 3).await.unwrap();
    let learners = [Uuid::new_v4(), Uuid::new_v4()];
    let (nats, js) = with_learners(&pool, &track, &learners).await;
    let ledger = ledger(&pool, &learners).await;
    // the LRS already holds another statement under the id of one command's statement
    let (taken, _, _) = &ledger[3];
    let squatter = json!({
        "id": statement_id(*taken),
        "actor": { "objectType": "Agent", "account": { "homePage": "https://elsewhere.example", "name": "someone" } },
        "verb": { "id": "http://adlnet.gov/expapi/verbs/experienced" },
        "object": { "objectType": "Activity", "id": "https://elsewhere.example/page" },
    });
    assert!(ralph.post(&squatter).await.is_success());
    // an erasure's tombstone on the events stream announces no command: no statement, and no
    // dead letter either
    let erased =
        learning_progress::model::ErasedEvent::new(Uuid::new_v4(), track.id, 3, Utc::now());
    learning_progress::messaging::publish_erased(&js, &nats, &erased)
        .await
        .unwrap()
        .await
        .unwrap();

    let config = forward_config(&ralph, XapiVersion::V1_0_3);
    let durable = config.xapi_durable.clone();
    let metrics = forward_until(&pool, &nats, &js, config, || async {
        eventually(WAIT, "every event handled", || async {
            (consumer_pending(&js, &nats, &durable).await == Some(0)).then_some(())
        })
        .await;
    })
    .await;
    assert_eq!(metrics.refused.get(), 1);
    assert_eq!(metrics.forwarded.get(), ledger.len() as u64 - 1);
    let ours: Vec<Value> = ralph
        .statements()
        .await
        .into_iter()
        .filter(|s| s["verb"]["id"] != "http://adlnet.gov/expapi/verbs/experienced")
        .collect();
    let rest: Vec<_> = ledger
        .iter()
        .filter(|(id, _, _)| id != taken)
        .cloned()
        .collect();
    check_against_ledger(&ours, &rest);

    assert_eq!(common::stream_len(&js, &nats.dlq_stream).await, 1);
    let dead = common::read_stream(&js, &nats.dlq_stream, 1, WAIT).await;
    let headers = dead[0].headers.as_ref();
    assert_eq!(header_str(headers, "lp-dlq-reason"), Some(forward::REFUSED));
    assert_eq!(
        header_str(headers, "lp-dlq-stream"),
        Some(nats.events_stream.as_str())
    );
    let error = header_str(headers, "lp-dlq-error").unwrap();
    assert!(
        error.starts_with("409") && error.contains("Differing"),
        "{error}"
    );
    let event: ProgressEvent = serde_json::from_slice(&dead[0].payload).unwrap();
    assert_eq!(event.event_id, *taken);
    delete_streams(&js, &nats).await;
}

/// The binary's environment for `nats` and the test's database.
async fn binary_env(pool: &PgPool, nats: &NatsConfig, ralph: &Ralph) -> Vec<(String, String)> {
    let database: String = sqlx::query_scalar("select current_database()")
        .fetch_one(pool)
        .await
        .unwrap();
    let base = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let lrs = ralph.lrs(XapiVersion::V1_0_3);
    let xapi = xapi_config();
    [
        (
            "DATABASE_URL",
            format!("{}/{database}", &base[..base.rfind('/').unwrap()]),
        ),
        ("DATABASE_MAX_CONNECTIONS", "2".to_owned()),
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
        ("XAPI_LRS_URL", lrs.lrs_url),
        ("XAPI_LRS_USERNAME", USER.to_owned()),
        ("XAPI_LRS_PASSWORD", PASSWORD.to_owned()),
        ("XAPI_HOME_PAGE", xapi.home_page),
        ("XAPI_ACTIVITY_BASE", xapi.activity_base),
        ("RUST_LOG", "warn".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

fn forwarder(env: &[(String, String)], args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_learning-progress"));
    command
        .arg("xapi-forward")
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .kill_on_drop(true);
    command
}

#[sqlx::test]
async fn a_forwarder_killed_mid_batch_and_restarted_leaves_no_duplicate_in_the_lrs(pool: PgPool) {
    let ralph = Ralph::start().await;
    let track = create_track(&pool, "Go", 3).await.unwrap();
    let learners: Vec<Uuid> = (0..6).map(|_| Uuid::new_v4()).collect();
    let (nats, js) = with_learners(&pool, &track, &learners).await;
    let ledger = ledger(&pool, &learners).await;
    let mut env = binary_env(&pool, &nats, &ralph).await;
    let durable = format!("xapi-{}", Uuid::new_v4().simple());
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    env.extend([
        ("XAPI_DURABLE".to_owned(), durable.clone()),
        ("XAPI_BATCH_SIZE".to_owned(), "2".to_owned()),
        // a killed forwarder's events come back soon
        ("XAPI_ACK_WAIT_SECS".to_owned(), "3".to_owned()),
        ("XAPI_LRS_TIMEOUT_SECS".to_owned(), "2".to_owned()),
        (
            "XAPI_METRICS_ADDR".to_owned(),
            format!("127.0.0.1:{metrics_port}"),
        ),
    ]);
    let spawn = || {
        forwarder(&env, &[])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the forwarder starts")
    };

    // SIGKILL while a batch is delivered and unacknowledged, as often as it takes (up to five)
    let (mut kills, mut killed_mid_batch) = (0, 0);
    for _ in 0..5 {
        let before = ralph.stored();
        if before >= ledger.len() {
            break;
        }
        let mut child = spawn();
        eventually(WAIT, "the forwarder to send more statements", || async {
            (ralph.stored() > before).then_some(())
        })
        .await;
        child.start_kill().unwrap();
        child.wait().await.unwrap();
        kills += 1;
        let info = consumer_info(&js, &nats, &durable).await.unwrap();
        if info.num_ack_pending > 0 {
            killed_mid_batch += 1;
        }
    }
    assert!(killed_mid_batch > 0, "no kill hit a batch in flight");
    eprintln!(
        "{kills} SIGKILLs, {killed_mid_batch} with events delivered and unacknowledged, {} of {} statements stored by then",
        ralph.stored(),
        ledger.len()
    );
    let mut child = spawn();
    eventually(WAIT, "every event forwarded after the kills", || async {
        (consumer_pending(&js, &nats, &durable).await == Some(0)).then_some(())
    })
    .await;
    // its metrics say it caught up
    let metrics = format!("http://127.0.0.1:{metrics_port}/metrics");
    eventually(WAIT, "the lag metric at 0", || async {
        let text = reqwest::get(&metrics).await.ok()?.text().await.ok()?;
        (text.contains("xapi_forward_lag_events 0")
            && text.contains("xapi_statements_forwarded_total"))
        .then_some(())
    })
    .await;
    child.start_kill().unwrap();
    assert_eq!(
        ralph.stored(),
        ledger.len(),
        "Ralph's file holds each statement once"
    );
    check_against_ledger(&ralph.statements().await, &ledger);
    delete_streams(&js, &nats).await;
}

#[sqlx::test]
async fn backfill_sends_one_learners_history_from_the_ledger_and_says_how_many(pool: PgPool) {
    let ralph = Ralph::start().await;
    let track = create_track(&pool, "Python", 3).await.unwrap();
    let learners = [Uuid::new_v4(), Uuid::new_v4()];
    let (nats, js) = with_learners(&pool, &track, &learners).await;
    let env = binary_env(&pool, &nats, &ralph).await;
    let user = learners[0].to_string();
    for _ in 0..2 {
        let output = forwarder(&env, &["--backfill-user", &user])
            .output()
            .await
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim(),
            "sent 7 statements"
        );
    }
    // once each, and only that learner's
    assert_eq!(ralph.stored(), 7);
    check_against_ledger(
        &ralph.statements().await,
        &ledger(&pool, &learners[..1]).await,
    );

    let track_id = track.id.to_string();
    let output = forwarder(&env, &["--backfill-track", &track_id])
        .output()
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "sent 14 statements"
    );
    assert_eq!(ralph.stored(), 14);
    check_against_ledger(&ralph.statements().await, &ledger(&pool, &learners).await);
    delete_streams(&js, &nats).await;
}

const SECRET: &str = "test-only-hs256-secret-for-the-xapi-view";

fn token(claims: Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &key,
    )
    .unwrap()
}

fn learner_token(user: Uuid) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    token(json!({
        "sub": user, "aud": "authenticated", "role": "authenticated",
        "iat": now, "exp": now + 3600,
    }))
}

/// The read API, its xAPI naming as the forwarder's; its base URL.
async fn spawn_api(pool: &PgPool, nats: &NatsConfig, shutdown: &CancellationToken) -> String {
    use learning_progress::api::{self, ApiConfig, ApiState};
    use learning_progress::auth::{AuthConfig, Verifier};
    let verifier = Verifier::from_config(&AuthConfig::with_secret(SECRET))
        .await
        .unwrap();
    let config = ApiConfig {
        rate_limit_per_sec: 0.0,
        xapi: xapi_config(),
        ..ApiConfig::default()
    };
    let state = ApiState::start(pool.clone(), nats, verifier, config, shutdown.clone())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(api::serve(listener, state, shutdown.clone()));
    base
}

/// `GET /xapi/statements?<query>` as `token`, version 1.0.3: status, headers, body.
async fn view(base: &str, token: &str, query: &[(&str, String)]) -> (u16, HeaderMap, Value) {
    let response = reqwest::Client::new()
        .get(format!("{base}/xapi/statements"))
        .query(query)
        .bearer_auth(token)
        .header("X-Experience-API-Version", "1.0.3")
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.json().await.unwrap())
}

/// The project's service-role key, as Supabase issues it: an admin.
fn admin_token() -> String {
    let now = jsonwebtoken::get_current_timestamp();
    token(json!({"iss": "supabase", "role": "service_role", "iat": now, "exp": now + 3600}))
}

fn agent(user: Uuid) -> String {
    json!({"objectType": "Agent", "account": {"homePage": xapi_config().home_page, "name": user}})
        .to_string()
}

#[sqlx::test]
async fn the_view_serves_a_learner_their_own_statements_filtered_and_paged_as_xapi_asks(
    pool: PgPool,
) {
    let track = create_track(&pool, "Rust basics", 3).await.unwrap();
    let learners = [Uuid::new_v4(), Uuid::new_v4()];
    let (nats, js) = with_learners(&pool, &track, &learners).await;
    let shutdown = CancellationToken::new();
    let base = spawn_api(&pool, &nats, &shutdown).await;
    let (me, other) = (learners[0], learners[1]);
    let own = learner_token(me);
    let mine = ledger(&pool, &[me]).await;

    // the version header is required, and named on every answer
    let response = reqwest::Client::new()
        .get(format!("{base}/xapi/statements"))
        .bearer_auth(&own)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(response.headers()["x-experience-api-version"], "1.0.3");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "bad_request");

    // a learner's own statements, newest first, with how far the ledger is consistent
    let (status, headers, body) = view(&base, &own, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-experience-api-version"], "1.0.3");
    let through: DateTime<Utc> = headers["x-experience-api-consistent-through"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let statements = body["statements"].as_array().unwrap().clone();
    check_against_ledger(&statements, &mine);
    assert_eq!(body["more"], "");
    let stored: Vec<&str> = statements
        .iter()
        .map(|s| s["stored"].as_str().unwrap())
        .collect();
    assert!(stored.windows(2).all(|w| w[0] >= w[1]), "{stored:?}");
    assert!(
        stored
            .iter()
            .all(|s| s.parse::<DateTime<Utc>>().unwrap() <= through)
    );

    // pages of 3, following `more`, give the same statements once each, oldest first
    let mut paged = Vec::new();
    let mut query = vec![("limit", "3".to_owned()), ("ascending", "true".to_owned())];
    loop {
        let (status, _, body) = view(&base, &own, &query).await;
        assert_eq!(status, 200, "{body}");
        paged.extend(body["statements"].as_array().unwrap().iter().cloned());
        let more = body["more"].as_str().unwrap();
        if more.is_empty() {
            break;
        }
        let cursor = more.rsplit_once("cursor=").unwrap().1;
        query = vec![
            ("limit", "3".to_owned()),
            ("ascending", "true".to_owned()),
            ("cursor", cursor.to_owned()),
        ];
    }
    check_against_ledger(&paged, &mine);
    let mut reversed = statements.clone();
    reversed.reverse();
    assert_eq!(paged, reversed);

    // filters: verb, activity, registration, since, agent
    let count = |query: Vec<(&'static str, String)>| {
        let (base, own) = (base.clone(), own.clone());
        async move {
            let (status, _, body) = view(&base, &own, &query).await;
            assert_eq!(status, 200, "{query:?}: {body}");
            body["statements"].as_array().unwrap().len()
        }
    };
    let config = xapi_config();
    assert_eq!(count(vec![("verb", verbs::PASSED.to_owned())]).await, 1);
    assert_eq!(count(vec![("verb", verbs::FAILED.to_owned())]).await, 1);
    assert_eq!(count(vec![("verb", verbs::COMPLETED.to_owned())]).await, 4);
    assert_eq!(
        count(vec![("activity", config.track_iri(track.id))]).await,
        2
    );
    let quiz = config.unit_iri(track.id, track.units[2].id);
    assert_eq!(count(vec![("activity", quiz.clone())]).await, 3);
    assert_eq!(
        count(vec![("activity", quiz), ("verb", verbs::PASSED.to_owned())]).await,
        1
    );
    let registration = registration(me, track.id).to_string();
    assert_eq!(count(vec![("registration", registration)]).await, 7);
    assert_eq!(
        count(vec![("registration", Uuid::new_v4().to_string())]).await,
        0
    );
    assert_eq!(
        count(vec![("since", "2999-01-01T00:00:00Z".to_owned())]).await,
        0
    );
    assert_eq!(count(vec![("agent", agent(me))]).await, 7);
    assert_eq!(
        count(vec![("verb", "http://example.com/unknown".to_owned())]).await,
        0
    );

    // one statement by id, as the LRS would give it; another learner's is not found
    let (id, _, _) = &mine[3];
    let (status, _, one) = view(
        &base,
        &own,
        &[("statementId", statement_id(*id).to_string())],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        one,
        statements
            .iter()
            .find(|s| s["id"] == one["id"])
            .unwrap()
            .clone()
    );
    let (theirs, _, _) = &ledger(&pool, &[other]).await[0];
    let (status, _, _) = view(
        &base,
        &own,
        &[("statementId", statement_id(*theirs).to_string())],
    )
    .await;
    assert_eq!(status, 404);

    // another learner's statements are forbidden; an unknown parameter is a bad request
    let (status, _, _) = view(&base, &own, &[("agent", agent(other))]).await;
    assert_eq!(status, 403);
    let (status, _, body) = view(&base, &own, &[("format", "exact".to_owned())]).await;
    assert_eq!(status, 400, "{body}");
    let (status, _, _) = view(&base, &own, &[("cursor", "nonsense".to_owned())]).await;
    assert_eq!(status, 400);

    // an admin reads anyone's, or everyone's
    let admin = admin_token();
    let (status, _, body) = view(&base, &admin, &[("agent", agent(other))]).await;
    assert_eq!(status, 200);
    check_against_ledger(
        body["statements"].as_array().unwrap(),
        &ledger(&pool, &[other]).await,
    );
    let (_, _, body) = view(&base, &admin, &[]).await;
    check_against_ledger(
        body["statements"].as_array().unwrap(),
        &ledger(&pool, &learners).await,
    );

    // statement ids as PostgreSQL computes them are the service's
    for (command_id, _, _) in &mine {
        let in_sql: Uuid = sqlx::query_scalar("select xapi_statement_id($1)")
            .bind(command_id)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(in_sql, statement_id(*command_id));
    }
    shutdown.cancel();
    delete_streams(&js, &nats).await;
}

#[sqlx::test]
async fn an_unreachable_lrs_is_retried_with_backoff_and_never_dead_letters(pool: PgPool) {
    let ralph = Ralph::start().await;
    let target: &'static str = ralph.base.trim_start_matches("http://").to_owned().leak();
    let proxy = common::Proxy::start(target).await;
    let track = create_track(&pool, "Haskell", 3).await.unwrap();
    let learners = [Uuid::new_v4()];
    let (nats, js) = with_learners(&pool, &track, &learners).await;
    let ledger = ledger(&pool, &learners).await;

    proxy.cut();
    let mut lrs = ralph.lrs(XapiVersion::V1_0_3);
    lrs.lrs_url = format!("http://127.0.0.1:{}/xAPI", proxy.port);
    let config = ForwardConfig {
        lrs,
        max_backoff_ms: 300,
        ..forward_config(&ralph, XapiVersion::V1_0_3)
    };
    let durable = config.xapi_durable.clone();
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
    let failures = metrics.failures.with_label_values(&["lrs"]);
    eventually(WAIT, "several failed attempts", || async {
        (failures.get() >= 3).then_some(())
    })
    .await;
    assert_eq!(ralph.stored(), 0);
    assert_eq!(common::stream_len(&js, &nats.dlq_stream).await, 0);
    assert_eq!(consumer_pending(&js, &nats, &durable).await, Some(7));

    proxy.restore();
    eventually(
        WAIT,
        "every event forwarded once the LRS is back",
        || async { (consumer_pending(&js, &nats, &durable).await == Some(0)).then_some(()) },
    )
    .await;
    shutdown.cancel();
    forwarder.await.unwrap().unwrap();
    check_against_ledger(&ralph.statements().await, &ledger);
    assert_eq!(ralph.stored(), 7);
    assert_eq!(common::stream_len(&js, &nats.dlq_stream).await, 0);
    assert_eq!(metrics.refused.get(), 0);
    delete_streams(&js, &nats).await;
}

#[sqlx::test]
async fn the_forwarder_works_with_the_documented_nats_permissions_and_no_more(pool: PgPool) {
    use learning_progress::messaging;
    use learning_progress::model::{Action, ProgressCommand};

    let ralph = Ralph::start().await;
    let permissions = repo().join("deploy/nats/permissions.conf");
    let server = common::NatsServer::with_config(
        &permissions,
        &[
            ("NATS_API_PASSWORD", "api-password"),
            ("NATS_APPLIER_PASSWORD", "applier-password"),
            ("NATS_WORKER_PASSWORD", "worker-password"),
            ("NATS_XAPI_PASSWORD", "xapi-password"),
            ("NATS_OPERATOR_PASSWORD", "operator-password"),
        ],
    )
    .await;
    // the default stream names and subject prefix, which the file names, as user `role`
    let as_role = |role: &str| NatsConfig {
        url: format!("nats://{role}:{role}-password@127.0.0.1:{}", server.port),
        subject_prefix: "progress".to_owned(),
        commands_stream: "PROGRESS_COMMANDS".to_owned(),
        events_stream: "PROGRESS_EVENTS".to_owned(),
        dlq_stream: "PROGRESS_DLQ".to_owned(),
        ..NatsConfig::isolated("", "unused")
    };
    let (worker_nats, applier_nats, xapi_nats) =
        (as_role("worker"), as_role("applier"), as_role("xapi"));
    let connect = |nats: NatsConfig, role: &'static str| async move {
        jetstream::new(messaging::connect(&nats, role).await.unwrap())
    };
    let worker = connect(worker_nats.clone(), "worker").await;
    messaging::ensure_streams(&worker, &worker_nats)
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    tokio::spawn(applier::run(
        connect(applier_nats.clone(), "applier").await,
        pool.clone(),
        applier_nats,
        ApplierConfig::default(),
        Seams::default(),
        shutdown.clone(),
    ));
    let xapi_js = connect(xapi_nats.clone(), "xapi").await;
    let config = forward_config(&ralph, XapiVersion::V1_0_3);
    let durable = config.xapi_durable.clone();
    let metrics = Metrics::new();
    let deps = Deps {
        js: xapi_js.clone(),
        pool: pool.clone(),
        nats: xapi_nats.clone(),
    };
    let forwarder = tokio::spawn(forward::run(
        deps,
        xapi_config(),
        config,
        metrics.clone(),
        shutdown.clone(),
    ));

    let track = create_track(&pool, "Permissions", 1).await.unwrap();
    let user = Uuid::new_v4();
    let actions = [
        Action::TrackStarted {
            current_unit_id: Some(track.units[0].id),
        },
        Action::TrackCompleted {},
    ];
    for (seq, action) in actions.into_iter().enumerate() {
        let command = ProgressCommand {
            command_id: Uuid::new_v4(),
            user_id: user,
            track_id: track.id,
            seq: seq as i64 + 1,
            occurred_at: Utc::now(),
            action,
        };
        messaging::publish_command(&worker, &worker_nats, &command)
            .await
            .unwrap()
            .await
            .unwrap();
    }
    eventually(WAIT, "both statements in the LRS", || async {
        (ralph.statements().await.len() == 2).then_some(())
    })
    .await;
    check_against_ledger(&ralph.statements().await, &ledger(&pool, &[user]).await);
    // and acknowledged: nothing left pending
    eventually(WAIT, "both events acknowledged", || async {
        (consumer_pending(&xapi_js, &xapi_nats, &durable).await == Some(0)).then_some(())
    })
    .await;
    assert!(!forwarder.is_finished(), "the forwarder runs");

    // the forwarder may not announce progress
    let published = tokio::time::timeout(Duration::from_secs(2), async {
        xapi_js
            .publish(xapi_nats.event_subject(user, track.id), "{}".into())
            .await?
            .await
    })
    .await;
    assert!(
        !matches!(published, Ok(Ok(_))),
        "the forwarder published an event"
    );
}
