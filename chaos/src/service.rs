//! The service as an operator runs it: two appliers sharing the durable, two Temporal workers
//! on one task queue, two API replicas — six processes of the `learning-progress` binary.

use std::path::{Path, PathBuf};
use std::time::Duration;

use learning_progress::messaging::NatsConfig;
use learning_progress::workflow::TemporalConfig;

use crate::procs::{Proc, free_port, wait_for};

/// The HS256 secret the API replicas verify with; the harness signs its reads with it.
pub const JWT_SECRET: &str = "chaos-harness-secret-used-only-on-loopback";

/// Where one scenario's service runs and what it talks to.
#[derive(Clone)]
pub struct Deployment {
    pub binary: PathBuf,
    pub database_url: String,
    pub nats: NatsConfig,
    pub temporal: TemporalConfig,
    /// NATS URL of each API replica: one node each, so a fault can aim at one replica.
    pub api_nats_urls: [String; 2],
}

pub struct Service {
    pub appliers: Vec<Proc>,
    pub workers: Vec<Proc>,
    pub apis: Vec<Proc>,
    pub api_urls: Vec<String>,
}

impl Deployment {
    fn env(&self) -> Vec<(String, String)> {
        let n = &self.nats;
        [
            ("DATABASE_URL", self.database_url.clone()),
            ("DATABASE_MAX_CONNECTIONS", "8".to_owned()),
            ("NATS_URL", n.url.clone()),
            ("NATS_SUBJECT_PREFIX", n.subject_prefix.clone()),
            ("NATS_COMMANDS_STREAM", n.commands_stream.clone()),
            ("NATS_EVENTS_STREAM", n.events_stream.clone()),
            ("NATS_DLQ_STREAM", n.dlq_stream.clone()),
            ("NATS_REPLICAS", n.replicas.to_string()),
            (
                "TEMPORAL_ADDRESS",
                self.temporal.address_or_default().to_owned(),
            ),
            ("TEMPORAL_TASK_QUEUE", self.temporal.task_queue.clone()),
            ("RUST_LOG", "warn,learning_progress=info".to_owned()),
            ("LOG_FORMAT", "json".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// Starts all six and waits until both API replicas are ready.
    pub async fn start(&self, logs: &Path) -> anyhow::Result<Service> {
        let env = self.env();
        let role = |role: &str| vec![role.to_owned()];
        let mut appliers = Vec::new();
        let mut workers = Vec::new();
        let mut apis = Vec::new();
        let mut api_urls = Vec::new();
        // a change left unannounced by a crash is swept up after 10 s rather than 60
        let mut applier_env = env.clone();
        applier_env.push(("APPLIER_ANNOUNCE_AFTER_SECS".to_owned(), "10".to_owned()));
        for i in 0..2 {
            appliers.push(Proc::start(
                format!("applier-{}", i + 1),
                &self.binary,
                &role("consumer"),
                &applier_env,
                logs,
            )?);
            workers.push(Proc::start(
                format!("worker-{}", i + 1),
                &self.binary,
                &role("worker"),
                &env,
                logs,
            )?);
            let port = free_port();
            let mut api_env = env.clone();
            api_env.retain(|(k, _)| k != "NATS_URL");
            api_env.extend([
                ("NATS_URL".to_owned(), self.api_nats_urls[i].clone()),
                ("API_ADDR".to_owned(), format!("127.0.0.1:{port}")),
                ("SUPABASE_JWT_SECRET".to_owned(), JWT_SECRET.to_owned()),
            ]);
            apis.push(Proc::start(
                format!("api-{}", i + 1),
                &self.binary,
                &role("api"),
                &api_env,
                logs,
            )?);
            api_urls.push(format!("http://127.0.0.1:{port}"));
        }
        let http = reqwest::Client::new();
        for url in &api_urls {
            wait_for(
                &format!("API replica {url} ready"),
                Duration::from_secs(60),
                || async {
                    let response = http.get(format!("{url}/readyz")).send().await.ok()?;
                    response.status().is_success().then_some(())
                },
            )
            .await?;
        }
        Ok(Service {
            appliers,
            workers,
            apis,
            api_urls,
        })
    }
}
