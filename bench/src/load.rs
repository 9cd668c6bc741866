//! HTTP load: wrk in a process of its own (one thread, 32 connections, latency percentiles),
//! or, where wrk is not installed, a built-in closed loop with the same shape.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::process::{Child, Command};

/// Connections kept busy; enough to saturate two cores without drowning in queueing.
const CONNECTIONS: usize = 32;

#[derive(Debug, Clone)]
pub struct Load {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
    pub generator: &'static str,
}

pub fn wrk_available(wrk: &Path) -> bool {
    std::process::Command::new(wrk).arg("-v").output().is_ok()
}

/// GETs `paths` of `base` (cycling through them) with `token` for `duration`.
pub async fn run(
    wrk: &Path,
    base: &str,
    paths: &[String],
    token: &str,
    duration: Duration,
) -> anyhow::Result<Load> {
    if wrk_available(wrk) {
        let output = wrk_command(wrk, base, paths, token, duration)?
            .output()
            .await
            .context("running wrk")?;
        anyhow::ensure!(
            output.status.success(),
            "wrk failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        parse_wrk(&String::from_utf8_lossy(&output.stdout))
    } else {
        builtin(base, paths, token, duration).await
    }
}

/// wrk running for `duration` in the background, e.g. while something else is measured.
pub fn background(
    wrk: &Path,
    base: &str,
    paths: &[String],
    token: &str,
    duration: Duration,
) -> anyhow::Result<Option<Child>> {
    if !wrk_available(wrk) {
        return Ok(None);
    }
    let child = wrk_command(wrk, base, paths, token, duration)?
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    Ok(Some(child))
}

fn wrk_command(
    wrk: &Path,
    base: &str,
    paths: &[String],
    token: &str,
    duration: Duration,
) -> anyhow::Result<Command> {
    let mut command = Command::new(wrk);
    command
        .arg("-t1")
        .arg(format!("-c{CONNECTIONS}"))
        .arg(format!("-d{}s", duration.as_secs().max(1)))
        .arg("--latency")
        .arg("-H")
        .arg(format!("Authorization: Bearer {token}"));
    if paths.len() > 1 {
        let list: Vec<String> = paths.iter().map(|p| format!("{p:?}")).collect();
        let script = format!(
            "local paths = {{{}}}\nlocal i = 0\nrequest = function()\n  i = i + 1\n  return wrk.format(nil, paths[(i % #paths) + 1])\nend\n",
            list.join(",\n")
        );
        let file =
            std::env::temp_dir().join(format!("bench-wrk-{}.lua", uuid::Uuid::new_v4().simple()));
        std::fs::write(&file, script)?;
        command.arg("-s").arg(file);
    }
    command.arg(format!("{base}{}", paths[0]));
    Ok(command)
}

fn parse_wrk(out: &str) -> anyhow::Result<Load> {
    let field = |prefix: &str| {
        out.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .map(str::trim)
    };
    let rps: f64 = field("Requests/sec:")
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no Requests/sec in wrk's output:\n{out}"))?;
    let percentile = |p: &str| field(p).and_then(duration_ms).unwrap_or(f64::NAN);
    let errors = field("Non-2xx or 3xx responses:")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
        + field("Socket errors:").map_or(0, |_| 1);
    Ok(Load {
        rps,
        p50_ms: percentile("50%"),
        p99_ms: percentile("99%"),
        errors,
        generator: "wrk -t1 -c32",
    })
}

fn duration_ms(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    Some(match unit {
        "us" => number / 1000.0,
        "ms" => number,
        "s" => number * 1000.0,
        "m" => number * 60_000.0,
        _ => return None,
    })
}

async fn builtin(
    base: &str,
    paths: &[String],
    token: &str,
    duration: Duration,
) -> anyhow::Result<Load> {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|c| {
            let (http, base, token) = (http.clone(), base.to_owned(), token.to_owned());
            let paths = paths.to_vec();
            tokio::spawn(async move {
                let (mut latencies, mut errors) = (Vec::new(), 0u64);
                let mut i = c;
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    let ok = http
                        .get(format!("{base}{}", paths[i % paths.len()]))
                        .bearer_auth(&token)
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success());
                    latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                    errors += u64::from(!ok);
                    i += CONNECTIONS;
                }
                (latencies, errors)
            })
        })
        .collect();
    let (mut latencies, mut errors) = (Vec::new(), 0);
    for task in tasks {
        let (l, e) = task.await?;
        latencies.extend(l);
        errors += e;
    }
    latencies.sort_by(f64::total_cmp);
    Ok(Load {
        rps: latencies.len() as f64 / started.elapsed().as_secs_f64(),
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        errors,
        generator: "built-in loop, 32 connections (wrk not installed)",
    })
}

/// The `q` quantile of sorted values (nearest rank).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}
