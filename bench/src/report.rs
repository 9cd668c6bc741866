//! The results: one table for people, one JSON document for machines.

use std::path::Path;

use anyhow::Context as _;
use serde::Serialize;

use crate::BenchConfig;

/// One row of the table.
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    pub id: String,
    pub name: String,
    pub value: f64,
    pub unit: String,
    pub anchor: String,
    pub anchor_value: Option<f64>,
    /// `value / anchor_value`, when there is an anchor.
    pub ratio: Option<f64>,
    pub goal: String,
    pub met: bool,
    /// What else the run saw (percentiles, counts, how the load was generated).
    pub detail: String,
}

impl BenchResult {
    /// A figure compared with its anchor; the goal is on the ratio.
    pub fn ratio(
        id: &str,
        name: &str,
        (value, unit): (f64, &str),
        (anchor, anchor_value): (&str, f64),
        min_ratio: f64,
    ) -> BenchResult {
        let ratio = value / anchor_value;
        BenchResult {
            id: id.to_owned(),
            name: name.to_owned(),
            value,
            unit: unit.to_owned(),
            anchor: anchor.to_owned(),
            anchor_value: Some(anchor_value),
            ratio: Some(ratio),
            goal: format!(">= {min_ratio}"),
            met: ratio >= min_ratio,
            detail: String::new(),
        }
    }

    /// A figure with no anchor, against an absolute goal.
    pub fn absolute(
        id: &str,
        name: &str,
        (value, unit): (f64, &str),
        goal: &str,
        met: bool,
    ) -> BenchResult {
        BenchResult {
            id: id.to_owned(),
            name: name.to_owned(),
            value,
            unit: unit.to_owned(),
            anchor: "—".to_owned(),
            anchor_value: None,
            ratio: None,
            goal: goal.to_owned(),
            met,
            detail: String::new(),
        }
    }

    pub fn detail(mut self, detail: impl Into<String>) -> BenchResult {
        self.detail = detail.into();
        self
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub commit: String,
    pub when: String,
    pub machine: String,
    pub scale: String,
    pub results: Vec<BenchResult>,
}

impl Report {
    pub fn new(config: &BenchConfig, results: Vec<BenchResult>) -> Report {
        Report {
            commit: commit(),
            when: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            machine: machine(),
            scale: format!("{:?}", config.scale).to_lowercase(),
            results,
        }
    }

    pub fn table(&self) -> String {
        let mut out = format!(
            "commit {} · {} · {} · scale {}\n\n| id | bench | ours | anchor | anchor value | ratio | goal | met |\n|---|---|---|---|---|---|---|---|\n",
            self.commit, self.when, self.machine, self.scale
        );
        for r in &self.results {
            let anchor_value = r
                .anchor_value
                .map_or("—".to_owned(), |v| format!("{} {}", number(v), r.unit));
            let ratio = r.ratio.map_or("—".to_owned(), |v| format!("{v:.2}"));
            out.push_str(&format!(
                "| {} | {} | {} {} | {} | {} | {} | {} | {} |\n",
                r.id,
                r.name,
                number(r.value),
                r.unit,
                r.anchor,
                anchor_value,
                ratio,
                r.goal,
                if r.met { "yes" } else { "**no**" },
            ));
        }
        out.push('\n');
        for r in self.results.iter().filter(|r| !r.detail.is_empty()) {
            out.push_str(&format!("- {}: {}\n", r.id, r.detail));
        }
        out
    }

    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let json = serde_json::to_string_pretty(self)?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))
    }
}

fn number(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn commit() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let Some(head) = git(&["rev-parse", "--short=12", "HEAD"]) else {
        return "unknown".to_owned();
    };
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    if dirty { format!("{head}+dirty") } else { head }
}

/// CPU model and count, memory, kernel: enough to tell two machines apart.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU".to_owned(), |(_, m)| m.trim().to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.trim().trim_end_matches(" kB").parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cores} × {model}, {mem_gib:.0} GiB RAM, Linux {}",
        kernel.trim()
    )
}
