//! A PostgreSQL cluster of the harness's own (initdb + pg_ctl), so it can be restarted with
//! fast and immediate shutdowns without touching anyone else's server.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use crate::procs::{free_port, run, wait_for};

pub struct Postgres {
    bindir: PathBuf,
    data: PathBuf,
    log: PathBuf,
    pub port: u16,
}

/// How the server goes down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Shutdown {
    /// Clients disconnected, a checkpoint, then exit.
    Fast,
    /// Every server process quits at once; recovery replays the WAL at the next start, as
    /// after a crash.
    Immediate,
}

impl Postgres {
    /// initdb (trust auth on loopback, user postgres) and start, on a free port.
    pub async fn start(root: &Path) -> anyhow::Result<Postgres> {
        let bindir = bindir().context(
            "PostgreSQL's server binaries (initdb, pg_ctl) not found: install Debian's \
             postgresql package (make stack does)",
        )?;
        // as root, the cluster belongs to user postgres, who must be able to reach it: keep it
        // under /var/tmp rather than in a checkout that may sit in a private home directory
        let dir = if is_root() {
            let dir = std::env::temp_dir().join(format!(
                "lp-chaos-pg-{}",
                root.file_name().and_then(|n| n.to_str()).unwrap_or("run")
            ));
            std::fs::create_dir_all(&dir)?;
            run("chown", &["postgres:", path(&dir)?])?;
            dir
        } else {
            root.join("pg")
        };
        let data = dir.join("data");
        let log = root.join("postgres.log");
        std::fs::write(&log, b"")?;
        if is_root() {
            run("chown", &["postgres:", path(&log)?])?;
        }
        as_owner(
            &bindir.join("initdb"),
            &[
                "-D",
                path(&data)?,
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        )?;
        let postgres = Postgres {
            bindir,
            data,
            log,
            port: free_port(),
        };
        postgres.pg_ctl_start().await?;
        Ok(postgres)
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    async fn pg_ctl_start(&self) -> anyhow::Result<()> {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories=/tmp \
             -c max_connections=300 -c shared_buffers=128MB",
            self.port
        );
        as_owner(
            &self.bindir.join("pg_ctl"),
            &[
                "start",
                "-D",
                path(&self.data)?,
                "-l",
                path(&self.log)?,
                "-o",
                &options,
                "-w",
                "-t",
                "60",
            ],
        )?;
        let url = self.url("postgres");
        wait_for(
            "PostgreSQL accepting connections",
            Duration::from_secs(30),
            || {
                let url = url.clone();
                async move {
                    use sqlx::Connection;
                    sqlx::PgConnection::connect(&url).await.ok().map(|_| ())
                }
            },
        )
        .await
    }

    pub async fn stop(&self, how: Shutdown) -> anyhow::Result<()> {
        let mode = match how {
            Shutdown::Fast => "fast",
            Shutdown::Immediate => "immediate",
        };
        as_owner(
            &self.bindir.join("pg_ctl"),
            &["stop", "-D", path(&self.data)?, "-m", mode, "-w"],
        )?;
        Ok(())
    }

    pub async fn start_again(&self) -> anyhow::Result<()> {
        self.pg_ctl_start().await
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Ok(data) = path(&self.data) {
            let _ = as_owner(
                &self.bindir.join("pg_ctl"),
                &["stop", "-D", data, "-m", "immediate"],
            );
        }
        let _ = std::fs::remove_dir_all(self.data.parent().unwrap_or(&self.data));
    }
}

fn bindir() -> Option<PathBuf> {
    if let Ok(out) = run("pg_config", &["--bindir"]) {
        let dir = PathBuf::from(out.trim());
        if dir.join("initdb").exists() {
            return Some(dir);
        }
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    // the newest major version
    dirs.sort_by_key(|d| {
        d.parent()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.pop()
}

fn is_root() -> bool {
    run("id", &["-u"]).is_ok_and(|out| out.trim() == "0")
}

/// initdb and postgres refuse to run as root: run them as user postgres then.
fn as_owner(program: &Path, args: &[&str]) -> anyhow::Result<String> {
    let program = path(program)?;
    if is_root() {
        let mut full = vec!["-u", "postgres", "--", program];
        full.extend_from_slice(args);
        run("runuser", &full)
    } else {
        run(program, args)
    }
}

fn path(p: &Path) -> anyhow::Result<&str> {
    p.to_str().with_context(|| format!("{p:?} is not UTF-8"))
}
