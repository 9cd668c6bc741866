//! An API replica as a separate process (`learning-progress api`), as it runs in production,
//! so the load generator, the replica and the bench harness never share a runtime.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use tokio::process::{Child, Command};

use crate::setup::{free_port, wait_until};
use learning_progress::messaging::NatsConfig;

pub struct ApiProcess {
    pub base: String,
    pub pid: u32,
    child: Child,
    http: reqwest::Client,
}

impl ApiProcess {
    pub async fn spawn(
        bin: &Path,
        database_url: &str,
        nats: &NatsConfig,
        cache_capacity: u64,
    ) -> anyhow::Result<ApiProcess> {
        let port = free_port()?;
        let log_path = std::env::temp_dir().join(format!("bench-api-{port}.log"));
        let log = std::fs::File::create(&log_path)?;
        let mut command = Command::new(bin);
        command
            .arg("api")
            .env("DATABASE_URL", database_url)
            .env("DATABASE_MAX_CONNECTIONS", "10")
            .env("NATS_URL", &nats.url)
            .env("NATS_SUBJECT_PREFIX", &nats.subject_prefix)
            .env("NATS_COMMANDS_STREAM", &nats.commands_stream)
            .env("NATS_EVENTS_STREAM", &nats.events_stream)
            .env("NATS_DLQ_STREAM", &nats.dlq_stream)
            .env("API_ADDR", format!("127.0.0.1:{port}"))
            .env("API_CACHE_CAPACITY", cache_capacity.to_string())
            .env("API_CACHE_TTL_SECS", "3600")
            // the load generator reads as a handful of learners, far past any real learner's
            // rate; a limit this high still runs every request through the limiter
            .env("API_RATE_LIMIT_PER_SEC", "1000000000")
            .env("API_RATE_LIMIT_BURST", "1000000000")
            // development tokens, signed by the harness with the same public secret
            .env("LEARNING_PROGRESS_DEV", "1")
            .env("LOG_FORMAT", "json");
        for inherited in [
            "SUPABASE_JWT_SECRET",
            "SUPABASE_JWKS",
            "JWT_ISSUER",
            "JWT_AUDIENCE",
            "ADMIN_CLAIM",
        ] {
            command.env_remove(inherited);
        }
        let child = command
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting the API from {}", bin.display()))?;
        let pid = child.id().context("the API process exited at once")?;
        let api = ApiProcess {
            base: format!("http://127.0.0.1:{port}"),
            pid,
            child,
            http: reqwest::Client::new(),
        };
        let ready = format!("{}/readyz", api.base);
        wait_until(Duration::from_secs(30), "the API to be ready", || async {
            let response = api.http.get(&ready).send().await.ok()?;
            response.status().is_success().then_some(())
        })
        .await
        .with_context(|| format!("see {}", log_path.display()))?;
        Ok(api)
    }

    /// The sum of a metric's samples whose line starts with `prefix` (name and labels).
    pub async fn metric(&self, prefix: &str) -> anyhow::Result<f64> {
        let text = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await?
            .text()
            .await?;
        Ok(text
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum())
    }

    /// Resident memory of the process, in MiB.
    pub fn rss_mib(&self) -> anyhow::Result<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .context("VmRSS in /proc/<pid>/status")?;
        Ok(kb / 1024.0)
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// A service-role development token: reads anyone's progress, as the load generator must.
pub fn admin_token() -> anyhow::Result<String> {
    let auth = learning_progress::auth::AuthConfig {
        dev: true,
        ..learning_progress::auth::AuthConfig::with_secret(learning_progress::auth::DEV_JWT_SECRET)
    };
    Ok(learning_progress::auth::mint_dev_token(
        &auth,
        uuid::Uuid::new_v4(),
        true,
        Duration::from_secs(3600),
    )?)
}
