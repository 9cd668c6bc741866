//! The example agent as a process, against the real applier, NATS and PostgreSQL: each version
//! once and in order, across a kill and a restart; out-of-order and repeated events; bad input.

#[path = "../../../tests/common/nats.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use chrono::{DateTime, TimeDelta, Utc};
use common::{eventually, isolated_nats};
use learning_progress::applier::{self, ApplierConfig, Seams};
use learning_progress::db::progress::get_user_progress;
use learning_progress::db::tracks::{Track, create_track};
use learning_progress::messaging::{NatsConfig, publish_command, publish_erased, publish_event};
use learning_progress::model::{
    Action, ErasedEvent, ProgressCommand, ProgressEvent, ProgressView, UserProgress,
};
use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(1_790_000_000, 0).unwrap() + TimeDelta::seconds(seconds)
}

fn command(user: Uuid, track: Uuid, seq: i64, action: Action) -> ProgressCommand {
    ProgressCommand {
        command_id: Uuid::new_v4(),
        user_id: user,
        track_id: track,
        seq,
        occurred_at: at(seq),
        action,
    }
}

/// Start, every unit, then completion: one change (one version) per command.
fn path(user: Uuid, track: &Track) -> Vec<ProgressCommand> {
    let units: Vec<Uuid> = track.units.iter().map(|u| u.id).collect();
    let mut actions = vec![Action::TrackStarted {
        current_unit_id: Some(units[0]),
    }];
    actions.extend(
        units
            .iter()
            .enumerate()
            .map(|(i, unit)| Action::UnitCompleted {
                unit_id: *unit,
                next_unit_id: units.get(i + 1).copied(),
            }),
    );
    actions.push(Action::TrackCompleted {});
    actions
        .into_iter()
        .zip(1..)
        .map(|(action, seq)| command(user, track.id, seq, action))
        .collect()
}

async fn publish(js: &jetstream::Context, nats: &NatsConfig, commands: &[ProgressCommand]) {
    for command in commands {
        publish_command(js, nats, command)
            .await
            .unwrap()
            .await
            .unwrap();
    }
}

/// The agent's process and every line it printed, this run and the ones before.
struct Agent {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Agent {
    fn command(nats: &NatsConfig, user: Uuid, state_file: &Path) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_progress-agent"));
        command
            .args(["--user", &user.to_string()])
            .args(["--nats-url", &nats.url])
            .args(["--subject-prefix", &nats.subject_prefix])
            .args(["--events-stream", &nats.events_stream])
            .arg("--state-file")
            .arg(state_file)
            .env_remove("AGENT_TRACK")
            .env_remove("AGENT_DURABLE")
            .kill_on_drop(true);
        command
    }

    fn start(
        nats: &NatsConfig,
        user: Uuid,
        state_file: &Path,
        lines: Arc<Mutex<Vec<String>>>,
    ) -> Agent {
        let mut child = Agent::command(nats, user, state_file)
            .stdout(Stdio::piped())
            .spawn()
            .expect("the agent starts");
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let sink = lines.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = stdout.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        Agent { child, lines }
    }

    /// The versions printed so far, in the order printed; an erasure is version 0.
    fn versions(&self) -> Vec<i64> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|line| {
                if line.ends_with(": erased; forgotten") {
                    return 0;
                }
                let (_, after) = line.rsplit_once("version ").expect("a version line");
                after.split(' ').next().unwrap().parse().unwrap()
            })
            .collect()
    }

    async fn wait_for_version(&self, version: i64) {
        eventually(
            WAIT,
            &format!("the agent to print version {version}"),
            || {
                let printed = self.versions();
                async move { printed.contains(&version).then_some(()) }
            },
        )
        .await;
    }

    /// Stops it as a supervisor would, with SIGTERM, and checks it exits cleanly.
    async fn terminate(mut self) {
        let pid = self.child.id().expect("still running").to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(sent.success());
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("the agent stops on SIGTERM")
            .unwrap();
        assert!(status.success(), "the agent exited with {status}");
    }
}

fn state_file() -> PathBuf {
    std::env::temp_dir().join(format!("progress-agent-test-{}.json", Uuid::new_v4()))
}

#[sqlx::test(migrations = "../../migrations")]
async fn the_agent_prints_each_version_once_in_order_and_resumes_after_a_kill(pool: PgPool) {
    let (nats, js) = isolated_nats().await;
    let track = create_track(&pool, "Agent", 4).await.unwrap();
    let user = Uuid::new_v4();
    let commands = path(user, &track);
    let someone_else = path(Uuid::new_v4(), &track);
    let shutdown = CancellationToken::new();
    let applier = tokio::spawn(applier::run(
        js.clone(),
        pool.clone(),
        nats.clone(),
        ApplierConfig::default(),
        Seams::default(),
        shutdown.clone(),
    ));
    let state = state_file();
    let lines = Arc::new(Mutex::new(Vec::new()));

    let mut agent = Agent::start(&nats, user, &state, lines.clone());
    publish(&js, &nats, &someone_else).await;
    publish(&js, &nats, &commands[..3]).await;
    agent.wait_for_version(3).await;
    assert_eq!(agent.versions(), vec![1, 2, 3]);

    agent.child.kill().await.unwrap();
    publish(&js, &nats, &commands[3..]).await;
    let last = commands.len() as i64;
    eventually(
        WAIT,
        "the rest to be applied while the agent is down",
        || {
            let pool = pool.clone();
            async move {
                let row = get_user_progress(&pool, user, track.id).await.unwrap()?;
                (row.version == last).then_some(())
            }
        },
    )
    .await;

    let agent = Agent::start(&nats, user, &state, lines.clone());
    agent.wait_for_version(last).await;
    assert_eq!(agent.versions(), (1..=last).collect::<Vec<_>>());
    let printed = lines.lock().unwrap().clone();
    assert_eq!(
        printed[1],
        format!(
            "learner {user} on track {}: 1/4 units, version 2 (unit_completed)",
            track.id
        )
    );
    assert!(
        printed[last as usize - 1].ends_with(": 4/4 units, version 6 (track_completed)"),
        "{printed:#?}"
    );
    agent.terminate().await;

    shutdown.cancel();
    applier.await.unwrap().unwrap();
    let _ = std::fs::remove_file(state);
    common::delete_streams(&js, &nats).await;
}

/// The events of one learner as the applier would publish them, version after version.
fn events(user: Uuid, track: Uuid, count: i64) -> Vec<ProgressEvent> {
    let units: Vec<Uuid> = (0..count).map(|_| Uuid::new_v4()).collect();
    let mut progress = UserProgress::empty(user, track, at(0));
    (1..=count)
        .map(|seq| {
            let command = command(
                user,
                track,
                seq,
                Action::UnitCompleted {
                    unit_id: units[seq as usize - 1],
                    next_unit_id: None,
                },
            );
            assert!(progress.apply(&command, Utc::now()));
            ProgressEvent {
                event_id: command.command_id,
                kind: command.kind().to_owned(),
                version: progress.version,
                occurred_at: command.occurred_at,
                applied_at: Utc::now(),
                progress: ProgressView::new(progress.clone(), count),
            }
        })
        .collect()
}

#[tokio::test]
async fn versions_that_arrive_out_of_order_or_twice_are_acted_on_once_in_version_order() {
    let (nats, js) = isolated_nats().await;
    let (user, track) = (Uuid::new_v4(), Uuid::new_v4());
    let events = events(user, track, 4);
    let state = state_file();
    let agent = Agent::start(&nats, user, &state, Arc::default());

    // 3 before 2, then 2 and 1 again: a republished event is stored again once JetStream's
    // duplicate window is past, which a new Nats-Msg-Id stands in for here
    let again = |event: &ProgressEvent| ProgressEvent {
        event_id: Uuid::new_v4(),
        ..event.clone()
    };
    let order = [
        events[0].clone(),
        events[2].clone(),
        events[1].clone(),
        again(&events[1]),
        again(&events[0]),
        events[3].clone(),
    ];
    for event in &order {
        publish_event(&js, &nats, event)
            .await
            .unwrap()
            .await
            .unwrap();
    }
    agent.wait_for_version(4).await;
    assert_eq!(agent.versions(), vec![1, 2, 3, 4]);
    agent.terminate().await;
    let _ = std::fs::remove_file(state);
    common::delete_streams(&js, &nats).await;
}

#[tokio::test]
async fn an_erasure_makes_the_agent_forget_the_track_and_take_a_new_start_from_version_one() {
    let (nats, js) = isolated_nats().await;
    let (user, track) = (Uuid::new_v4(), Uuid::new_v4());
    let state = state_file();
    let agent = Agent::start(&nats, user, &state, Arc::default());
    let publish_all = |events: Vec<ProgressEvent>| {
        let (js, nats) = (js.clone(), nats.clone());
        async move {
            for event in &events {
                publish_event(&js, &nats, event)
                    .await
                    .unwrap()
                    .await
                    .unwrap();
            }
        }
    };
    publish_all(events(user, track, 3)).await;
    agent.wait_for_version(3).await;
    let erased = ErasedEvent::new(user, track, 3, Utc::now());
    publish_erased(&js, &nats, &erased)
        .await
        .unwrap()
        .await
        .unwrap();
    // the learner starts again: versions from 1, below the erasure's
    publish_all(events(user, track, 2)).await;
    agent.wait_for_version(2).await;
    eventually(WAIT, "the new start's versions", || {
        let printed = agent.versions();
        async move { (printed == [1, 2, 3, 0, 1, 2]).then_some(()) }
    })
    .await;
    let saved = std::fs::read_to_string(&state).unwrap();
    assert!(saved.contains(&erased.event_id.to_string()), "{saved}");
    agent.terminate().await;
    let _ = std::fs::remove_file(state);
    common::delete_streams(&js, &nats).await;
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_no_panic() {
    let (nats, js) = isolated_nats().await;
    let user = Uuid::new_v4();
    let state = state_file();

    let not_a_uuid = Agent::command(&nats, user, &state)
        .args(["--track", "no-such-track"])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&not_a_uuid.stderr);
    assert_eq!(not_a_uuid.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--track"), "{stderr}");

    std::fs::write(
        &state,
        format!(
            r#"{{"user_id": "{}", "last_versions": {{}}}}"#,
            Uuid::new_v4()
        ),
    )
    .unwrap();
    let someone_elses_state = Agent::command(&nats, user, &state).output().await.unwrap();
    let stderr = String::from_utf8_lossy(&someone_elses_state.stderr);
    assert_eq!(someone_elses_state.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("give each learner its own --state-file"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    let elsewhere = NatsConfig {
        events_stream: "NO_SUCH_STREAM".to_owned(),
        ..nats.clone()
    };
    let unwritable = Agent::command(&nats, user, Path::new("/nonexistent-dir/state.json"))
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&unwritable.stderr);
    assert_eq!(unwritable.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("writing /nonexistent-dir/state.json"),
        "{stderr}"
    );

    let fresh = state_file();
    let no_stream = Agent::command(&elsewhere, user, &fresh)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&no_stream.stderr);
    assert_eq!(no_stream.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("NO_SUCH_STREAM"), "{stderr}");
    let _ = std::fs::remove_file(state);
    let _ = std::fs::remove_file(fresh);
    common::delete_streams(&js, &nats).await;
}
