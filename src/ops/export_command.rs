//! `learning-progress export`: a track's progress rows as NDJSON or CSV on stdout, paged
//! through the database, with a one-line summary on stderr saying where the next
//! incremental export resumes.

use std::io::Write as _;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::export::{self, Query};
use crate::config::DbConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per line: the snapshot as the API serves it.
    Ndjson,
    /// A header, then one line per row: the reporting columns.
    Csv,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ExportArgs {
    /// The track whose rows to export.
    #[arg(long)]
    pub track: Uuid,
    /// Only rows updated at or after this time (RFC 3339, e.g. `2026-11-26T00:00:00Z`); the
    /// previous export printed the value to use.
    #[arg(long)]
    pub since: Option<DateTime<Utc>>,
    #[arg(long, value_enum, default_value_t = Format::Ndjson)]
    pub format: Format,
    /// Rows read per query.
    #[arg(long, env = "EXPORT_PAGE_SIZE", default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..=i64::from(export::MAX_PAGE)))]
    pub page_size: u32,
}

pub async fn run(db: &DbConfig, args: &ExportArgs) -> anyhow::Result<()> {
    let pool = crate::db::connect(db).await?;
    let started = Utc::now();
    if !export::track_exists(&pool, args.track)
        .await
        .with_context(|| format!("reading the tracks from {}", db.redacted_url()))?
    {
        anyhow::bail!(
            "no track {} (`learning-progress tracks create` makes one)",
            args.track
        );
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if args.format == Format::Csv {
        writeln!(out, "{}", export::CSV_HEADER)?;
    }
    let mut query = Query {
        track: args.track,
        since: args.since,
        after: None,
        limit: args.page_size,
    };
    let mut rows = 0u64;
    loop {
        let page = export::page(&pool, &query)
            .await
            .with_context(|| format!("reading progress rows from {}", db.redacted_url()))?;
        for view in &page.progress {
            match args.format {
                Format::Ndjson => {
                    serde_json::to_writer(&mut out, view)?;
                    writeln!(out)?;
                }
                Format::Csv => writeln!(out, "{}", export::csv_line(view))?,
            }
        }
        rows += page.progress.len() as u64;
        match page.next {
            Some(after) => query.after = Some(after),
            None => break,
        }
    }
    out.flush()?;
    eprintln!(
        "export: {rows} rows of track {}; the next incremental export: --since {}",
        args.track,
        export::resume_since(started).to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    );
    Ok(())
}
