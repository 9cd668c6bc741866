//! `learning-progress dlq …`: the dead-letter subcommands, printing for a person (or JSON).

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream;
use uuid::Uuid;

use super::dlq::{self, DeadLetter, Filter};
use crate::messaging::{self, NatsConfig};

/// Which dead letters: by sequence, reason, learner or age; every given one must match.
#[derive(Debug, Clone, clap::Args)]
pub struct Select {
    /// Dead letters by sequence, as `dlq list` prints them.
    pub seqs: Vec<u64>,
    /// Only this reason (`malformed`, `unknown_type`, `foreign_unit`, `wrong_subject`, …).
    #[arg(long)]
    pub reason: Option<String>,
    /// Only this learner's.
    #[arg(long)]
    pub user: Option<Uuid>,
    /// Only those dead-lettered at least this long ago: `90s`, `15m`, `1h`, `7d`.
    #[arg(long, value_parser = crate::auth::parse_ttl)]
    pub older_than: Option<Duration>,
    /// Every dead letter: `redrive` and `purge` need a selection or this.
    #[arg(long)]
    pub all: bool,
}

impl Select {
    fn filter(&self) -> Filter {
        Filter {
            seqs: self.seqs.clone(),
            reason: self.reason.clone(),
            user: self.user,
            older_than: self.older_than,
        }
    }

    /// A selection that names something, or `--all`: a bare `purge` must not mean everything.
    fn required(&self, verb: &str) -> anyhow::Result<Filter> {
        let filter = self.filter();
        let named = !filter.seqs.is_empty()
            || filter.reason.is_some()
            || filter.user.is_some()
            || filter.older_than.is_some();
        if !named && !self.all {
            anyhow::bail!(
                "{verb} what? name dead letters by sequence, --reason, --user or --older-than, \
                 or pass --all"
            );
        }
        Ok(filter)
    }
}

async fn open(
    nats: &NatsConfig,
) -> anyhow::Result<(jetstream::Context, jetstream::stream::Stream)> {
    let client = messaging::connect(nats, "dlq")
        .await
        .with_context(|| format!("connecting to NATS at {}", nats.url))?;
    let js = jetstream::new(client);
    let stream = dlq::stream(&js, nats).await?;
    Ok((js, stream))
}

/// `dlq list`: one line per dead letter (or one JSON object per line), then counts by reason.
pub async fn list(nats: &NatsConfig, select: &Select, json: bool) -> anyhow::Result<()> {
    let (_, mut stream) = open(nats).await?;
    let dead = dlq::list(&mut stream, &select.filter()).await?;
    let mut out = std::io::stdout().lock();
    if json {
        for letter in &dead {
            writeln!(out, "{}", serde_json::to_string(letter)?)?;
        }
    } else {
        writeln!(
            out,
            "{:>8}  {:>5}  {:<16}  {:<36}  error",
            "seq", "age", "reason", "learner"
        )?;
        for letter in &dead {
            let learner = letter
                .user_id
                .map(|u| u.to_string())
                .unwrap_or_else(|| "-".to_owned());
            writeln!(
                out,
                "{:>8}  {:>5}  {:<16}  {:<36}  {}",
                letter.seq,
                human(letter.age()),
                letter.reason,
                learner,
                one_line(&letter.error, 100)
            )?;
        }
    }
    eprintln!("{}", summary(dead.len(), "dead letters", &dead));
    Ok(())
}

/// `dlq show SEQ`: everything one dead letter holds.
pub async fn show(nats: &NatsConfig, seq: u64, json: bool) -> anyhow::Result<()> {
    let (_, mut stream) = open(nats).await?;
    let letter = dlq::show(&mut stream, seq).await?;
    let mut out = std::io::stdout().lock();
    if json {
        let mut value = serde_json::to_value(&letter)?;
        value["headers"] = letter
            .headers
            .iter()
            .map(|(name, values)| {
                let name: &str = name.as_ref();
                let values: Vec<&str> = values.iter().map(|v| v.as_str()).collect();
                (name.to_owned(), serde_json::json!(values))
            })
            .collect::<serde_json::Map<_, _>>()
            .into();
        value["payload"] = match serde_json::from_slice::<serde_json::Value>(&letter.payload) {
            Ok(payload) => payload,
            Err(_) => String::from_utf8_lossy(&letter.payload).into_owned().into(),
        };
        writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
        return Ok(());
    }
    writeln!(
        out,
        "dead letter {} ({} ago)",
        letter.seq,
        human(letter.age())
    )?;
    writeln!(out, "reason:     {}", letter.reason)?;
    writeln!(out, "error:      {}", letter.error)?;
    writeln!(out, "subject:    {}", letter.subject)?;
    let id = |id: Option<Uuid>| id.map(|u| u.to_string()).unwrap_or_else(|| "-".to_owned());
    writeln!(out, "learner:    {}", id(letter.user_id))?;
    writeln!(out, "track:      {}", id(letter.track_id))?;
    if let Some(deliveries) = letter.deliveries {
        writeln!(out, "deliveries: {deliveries}")?;
    }
    writeln!(out, "headers:")?;
    for (name, values) in letter.headers.iter() {
        for value in values {
            writeln!(out, "  {}: {}", name.as_ref() as &str, value.as_str())?;
        }
    }
    match serde_json::from_slice::<serde_json::Value>(&letter.payload) {
        Ok(payload) => writeln!(
            out,
            "payload ({} bytes, JSON):\n{}",
            letter.payload.len(),
            serde_json::to_string_pretty(&payload)?
        )?,
        Err(_) => writeln!(
            out,
            "payload ({} bytes, not JSON):\n{}",
            letter.payload.len(),
            letter.payload.escape_ascii()
        )?,
    }
    Ok(())
}

/// `dlq redrive`: each selected dead letter back to the commands stream; exit 1 if any failed.
pub async fn redrive(nats: &NatsConfig, select: &Select, dry_run: bool) -> anyhow::Result<()> {
    let filter = select.required("redrive")?;
    let (js, mut stream) = open(nats).await?;
    let dead = dlq::list(&mut stream, &filter).await?;
    if dry_run {
        for letter in &dead {
            println!(
                "would redrive {} ({}) to {}",
                letter.seq, letter.reason, letter.subject
            );
        }
        eprintln!(
            "{} (dry run)",
            summary(dead.len(), "dead letters to redrive", &dead)
        );
        return Ok(());
    }
    let mut failed = 0;
    for (done, letter) in dead.iter().enumerate() {
        match dlq::redrive(&js, &stream, nats, letter).await {
            Ok(()) => println!(
                "redriven {} ({}) to {}",
                letter.seq, letter.reason, letter.subject
            ),
            Err(error) => {
                failed += 1;
                eprintln!(
                    "error: dead letter {}: {:#}",
                    letter.seq,
                    anyhow::Error::new(error)
                );
            }
        }
        progress(done + 1, dead.len());
    }
    eprintln!(
        "{}{}",
        summary(dead.len() - failed, "dead letters redriven", &dead),
        if failed > 0 {
            format!("; {failed} failed")
        } else {
            String::new()
        }
    );
    if failed > 0 {
        anyhow::bail!("{failed} of {} dead letters were not redriven", dead.len());
    }
    Ok(())
}

/// `dlq purge`: removes the selected dead letters after a confirmation (`--yes` skips it).
pub async fn purge(
    nats: &NatsConfig,
    select: &Select,
    dry_run: bool,
    yes: bool,
) -> anyhow::Result<()> {
    let filter = select.required("purge")?;
    let (_, mut stream) = open(nats).await?;
    let dead = dlq::list(&mut stream, &filter).await?;
    let what = summary(dead.len(), "dead letters", &dead);
    if dry_run {
        eprintln!("would purge {what} (dry run)");
        return Ok(());
    }
    if dead.is_empty() {
        eprintln!("nothing to purge");
        return Ok(());
    }
    if !yes && !confirm(&format!("purge {what}? they cannot be redriven afterwards"))? {
        anyhow::bail!("not purged");
    }
    for (done, letter) in dead.iter().enumerate() {
        dlq::remove(&stream, letter.seq).await?;
        progress(done + 1, dead.len());
    }
    eprintln!("purged {what}");
    Ok(())
}

/// Asks on the terminal; without one, refuses rather than guess.
pub(super) fn confirm(question: &str) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("{question} — refusing without a terminal to ask on; pass --yes");
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

/// A progress line on the terminal for long runs; nothing for a few or when piped.
fn progress(done: usize, total: usize) {
    if total >= 100 && std::io::stderr().is_terminal() && (done.is_multiple_of(50) || done == total)
    {
        eprint!("\r{done}/{total}");
        if done == total {
            eprintln!();
        }
    }
}

/// "3 dead letters (foreign_unit 2, malformed 1)".
fn summary(count: usize, what: &str, dead: &[DeadLetter]) -> String {
    let reasons: Vec<String> = dlq::by_reason(dead)
        .into_iter()
        .map(|(reason, n)| format!("{reason} {n}"))
        .collect();
    if reasons.is_empty() {
        format!("{count} {what}")
    } else {
        format!("{count} {what} ({})", reasons.join(", "))
    }
}

fn human(age: Duration) -> String {
    let secs = age.as_secs();
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86_400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

fn one_line(text: &str, max: usize) -> String {
    let line: String = text.chars().take(max).collect();
    if text.chars().count() > max {
        format!("{line}…")
    } else {
        line
    }
}
