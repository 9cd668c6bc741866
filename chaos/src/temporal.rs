//! The Temporal dev server, on a free port, its state in memory.

use std::path::Path;
use std::time::Duration;

use learning_progress::workflow::{self, TemporalConfig};

use crate::procs::{Proc, free_port, wait_for};

pub struct Temporal {
    pub address: String,
    _proc: Proc,
}

impl Temporal {
    pub async fn start(binary: &Path, logs: &Path) -> anyhow::Result<Temporal> {
        let port = free_port();
        let args: Vec<String> = [
            "server",
            "start-dev",
            "--headless",
            "--ip",
            "127.0.0.1",
            "--log-level",
            "warn",
        ]
        .into_iter()
        .map(str::to_owned)
        .chain(["--port".to_owned(), port.to_string()])
        .collect();
        let proc = Proc::start("temporal", binary, &args, &[], logs)?;
        let address = format!("127.0.0.1:{port}");
        let config = TemporalConfig::new(address.clone(), "chaos-probe");
        wait_for(
            "the Temporal dev server to answer",
            Duration::from_secs(60),
            || {
                let config = config.clone();
                async move { workflow::connect(&config, "chaos").await.ok().map(|_| ()) }
            },
        )
        .await?;
        Ok(Temporal {
            address,
            _proc: proc,
        })
    }
}
