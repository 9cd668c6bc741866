//! A nats-server of our own on a free port, so the fsync setting can be chosen per run.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use tokio::process::{Child, Command};

use crate::setup::{free_port, say, wait_until};

pub struct NatsServer {
    pub url: String,
    child: Child,
    dir: PathBuf,
}

impl NatsServer {
    /// `sync_always`: fsync every write (`jetstream { sync_interval: always }`); otherwise the
    /// server's default interval.
    pub async fn start(bin: &Path, sync_always: bool) -> anyhow::Result<NatsServer> {
        let port = free_port()?;
        let dir =
            std::env::temp_dir().join(format!("bench-nats-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)?;
        let sync = if sync_always {
            "\n  sync_interval: always"
        } else {
            ""
        };
        let config = format!(
            "listen: 127.0.0.1:{port}\njetstream {{\n  store_dir: \"{}\"{sync}\n}}\n",
            dir.join("store").display()
        );
        let config_path = dir.join("nats.conf");
        std::fs::write(&config_path, config)?;
        let log = std::fs::File::create(dir.join("nats.log"))?;
        let child = Command::new(bin)
            .arg("-c")
            .arg(&config_path)
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} (set NATS_SERVER_BIN)", bin.display()))?;
        let url = format!("nats://127.0.0.1:{port}");
        wait_until(
            Duration::from_secs(15),
            "our nats-server to listen",
            || async {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
                    .map(|_| ())
            },
        )
        .await?;
        say(format!(
            "nats-server on {url}, fsync {}",
            if sync_always {
                "always"
            } else {
                "default interval"
            }
        ));
        Ok(NatsServer { url, child, dir })
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
