//! Child processes the harness owns: started with a log file each, killed with SIGKILL,
//! paused with SIGSTOP, restarted with the same command line.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

/// One restartable process. Dropping it kills the process.
pub struct Proc {
    pub name: String,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    logs: PathBuf,
    child: Option<Child>,
    starts: u32,
}

impl Proc {
    pub fn start(
        name: impl Into<String>,
        program: impl Into<PathBuf>,
        args: &[String],
        env: &[(String, String)],
        logs: &Path,
    ) -> anyhow::Result<Proc> {
        let mut proc = Proc {
            name: name.into(),
            program: program.into(),
            args: args.to_vec(),
            env: env.to_vec(),
            logs: logs.to_owned(),
            child: None,
            starts: 0,
        };
        proc.spawn()?;
        Ok(proc)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let path = self.logs.join(format!("{}.{}.log", self.name, self.starts));
        let log = std::fs::File::create(&path).with_context(|| format!("creating {path:?}"))?;
        let child = Command::new(&self.program)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} ({:?})", self.name, self.program))?;
        self.child = Some(child);
        self.starts += 1;
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// SIGKILL, as a crash or an OOM kill would, and reap it.
    pub async fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            // a stopped process dies of SIGKILL too
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// The same command line again, after a kill.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            bail!("{} still runs", self.name);
        }
        self.spawn()
    }

    /// SIGSTOP: the process holds its sockets and answers nothing, as a hung or partitioned
    /// host does.
    pub fn pause(&self) -> anyhow::Result<()> {
        self.signal("STOP")
    }

    pub fn resume(&self) -> anyhow::Result<()> {
        self.signal("CONT")
    }

    fn signal(&self, name: &str) -> anyhow::Result<()> {
        let pid = self.pid().context("not running")?;
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()?;
        anyhow::ensure!(status.success(), "kill -{name} {pid} failed");
        Ok(())
    }

    /// Fails if the process has exited on its own (it was not killed by the harness).
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(child) = self.child.as_mut()
            && let Some(status) = child.try_wait()?
        {
            bail!(
                "{} exited by itself with {status}; see its log in {:?}",
                self.name,
                self.logs
            );
        }
        Ok(())
    }
}

/// A port nothing listens on right now, on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding an ephemeral loopback port")
}

/// Polls `probe` until it returns `Some`, or fails after `within` naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = probe().await {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("{what}: not within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs a command to completion, failing with its output when it fails.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = std::process::Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    anyhow::ensure!(
        output.status.success(),
        "{program} {}: {}\n{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
