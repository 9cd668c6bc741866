//! The service as separate processes — two appliers and two workers — killed with SIGKILL and
//! restarted over and over while `simulate` drives learners through real workflows: every
//! learner's row, ledger (outcomes and versions) and command ids must still equal the model.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use learning_progress::simulate::{self, SimulateConfig};
use learning_progress::workflow;
use sqlx::PgPool;
use tokio::process::{Child, Command};
use uuid::Uuid;

/// One service process (`consumer` or `worker`), restartable, its output kept in a log file.
struct Service {
    role: &'static str,
    env: Vec<(String, String)>,
    logs: PathBuf,
    child: Child,
    starts: usize,
}

impl Service {
    fn start(role: &'static str, env: &[(String, String)], logs: &Path) -> Service {
        let child = spawn(role, env, logs, 0);
        Service {
            role,
            env: env.to_vec(),
            logs: logs.to_owned(),
            child,
            starts: 1,
        }
    }

    /// SIGKILL, as a crash or an OOM kill would, then the same process again.
    async fn kill_and_restart(&mut self) {
        self.child.start_kill().expect("SIGKILL delivered");
        self.child.wait().await.expect("the killed process reaped");
        self.child = spawn(self.role, &self.env, &self.logs, self.starts);
        self.starts += 1;
    }
}

fn spawn(role: &str, env: &[(String, String)], logs: &Path, start: usize) -> Child {
    let log = std::fs::File::create(logs.join(format!("{role}-{start}.log"))).unwrap();
    Command::new(env!("CARGO_BIN_EXE_learning-progress"))
        .arg(role)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("the service binary starts")
}

#[sqlx::test]
async fn simulate_under_repeated_kills_of_appliers_and_workers_has_no_mismatch(pool: PgPool) {
    let database: String = sqlx::query_scalar("select current_database()")
        .fetch_one(&pool)
        .await
        .unwrap();
    let base = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let database_url = format!("{}/{database}", &base[..base.rfind('/').unwrap()]);
    let (nats, js) = common::isolated_nats().await;
    let temporal = common::temporal::temporal_config();
    let env: Vec<(String, String)> = [
        ("DATABASE_URL", database_url),
        ("DATABASE_MAX_CONNECTIONS", "4".to_owned()),
        ("TEMPORAL_ADDRESS", temporal.address_or_default().to_owned()),
        ("TEMPORAL_TASK_QUEUE", temporal.task_queue.clone()),
        // a killed applier's commands come back soon
        ("APPLIER_ACK_WAIT_SECS", "2".to_owned()),
        ("RUST_LOG", "warn".to_owned()),
    ]
    .into_iter()
    .chain(common::binary::nats_env(&nats))
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let logs = std::env::temp_dir().join(format!("lp-kills-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&logs).unwrap();
    let mut services = vec![
        Service::start("consumer", &env, &logs),
        Service::start("worker", &env, &logs),
        Service::start("consumer", &env, &logs),
        Service::start("worker", &env, &logs),
    ];

    let client = workflow::connect(&temporal, "kills").await.unwrap();
    // KILLS_LEARNERS / KILLS_UNITS run it larger by hand (e.g. 200 and 8, the size of the
    // reported reproduction); the default keeps `make test` within a minute
    let scale = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let config = SimulateConfig {
        learners: scale("KILLS_LEARNERS", 40),
        units: scale("KILLS_UNITS", 5) as u16,
        concurrency: 20,
        seed: 7,
        timeout_secs: 600,
    };
    let simulation = simulate::run(&client, &temporal, &pool, &config);
    // one of the four killed every 1.5 s, in turn, twelve times (more on a larger run), then
    // left to finish
    let kills = 12 * config.learners.div_ceil(40);
    let killer = async {
        for round in 0..kills {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            services[round % 4].kill_and_restart().await;
        }
    };
    let (report, ()) = tokio::join!(simulation, killer);
    let report = report.unwrap_or_else(|e| panic!("the simulation ran (logs in {logs:?}): {e}"));
    assert!(report.commands >= config.learners * 6, "{report}");
    assert!(
        report.mismatches.is_empty(),
        "{report}\n(service logs in {logs:?})"
    );
    let dead_letters = common::stream_len(&js, &nats.dlq_stream).await;
    assert_eq!(
        dead_letters, 0,
        "faults dead-lettered commands (logs in {logs:?})"
    );
    drop(services);
    common::delete_streams(&js, &nats).await;
    let _ = std::fs::remove_dir_all(&logs);
}
