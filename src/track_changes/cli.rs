//! The `tracks add-unit | remove-unit | move-unit | show | notify` subcommands: progress lines
//! on stderr while learners are rewritten, events published and paths told, then a one-line
//! summary on stdout (or one JSON object with `--json`). Exit code 0 when everything was done,
//! 1 on any error — including paths that could not be told, which `tracks notify` retries.

use std::time::Instant;

use anyhow::Context as _;
use async_nats::jetstream;
use serde::Serialize;
use uuid::Uuid;

use super::apply::{Applied, Change, apply_change};
use super::notify::{Notified, notify_learners};
use super::outbox;
use crate::config::DbConfig;
use crate::db;
use crate::messaging::{self, NatsConfig};
use crate::workflow::{self, TemporalConfig};

/// What every change reaches: the catalogue and learners, the events stream, running paths.
#[derive(Debug, clap::Args)]
pub struct Services {
    #[command(flatten)]
    pub db: DbConfig,
    #[command(flatten)]
    pub nats: NatsConfig,
    #[command(flatten)]
    pub temporal: TemporalConfig,
}

/// How a change is run.
#[derive(Debug, clap::Args)]
pub struct Run {
    /// Compute what would change (learners rewritten, completions dropped, tracks reopened)
    /// and print it; change nothing, publish nothing, tell nobody.
    #[arg(long, env = "TRACKS_DRY_RUN")]
    pub dry_run: bool,
    /// Print the summary as one JSON object instead of a line.
    #[arg(long, env = "TRACKS_JSON")]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct AddUnit {
    /// The track.
    #[arg(long, env = "TRACK_ID")]
    pub track: Uuid,
    /// The new unit's title (default: "<track title> — new unit").
    #[arg(long, env = "UNIT_TITLE")]
    pub title: Option<String>,
    /// Where it goes, 0-based; units from there on move down one (default: the end).
    #[arg(long, env = "UNIT_POSITION")]
    pub position: Option<usize>,
    /// An assessment rather than a lesson.
    #[arg(long, env = "UNIT_ASSESSMENT")]
    pub assessment: bool,
    /// Set learners who completed the track back to in progress, on the new unit. Without
    /// it a completed track stays completed (its percent complete drops).
    #[arg(long, env = "TRACKS_REOPEN")]
    pub reopen: bool,
    #[command(flatten)]
    pub run: Run,
    #[command(flatten)]
    pub services: Services,
}

#[derive(Debug, clap::Args)]
pub struct RemoveUnit {
    /// The track.
    #[arg(long, env = "TRACK_ID")]
    pub track: Uuid,
    /// The unit to remove.
    #[arg(long, env = "UNIT_ID")]
    pub unit: Uuid,
    #[command(flatten)]
    pub run: Run,
    #[command(flatten)]
    pub services: Services,
}

#[derive(Debug, clap::Args)]
pub struct MoveUnit {
    /// The track.
    #[arg(long, env = "TRACK_ID")]
    pub track: Uuid,
    /// The unit to move.
    #[arg(long, env = "UNIT_ID")]
    pub unit: Uuid,
    /// Its new position, 0-based.
    #[arg(long, env = "UNIT_POSITION")]
    pub position: usize,
    #[command(flatten)]
    pub run: Run,
    #[command(flatten)]
    pub services: Services,
}

#[derive(Debug, clap::Args)]
pub struct Show {
    /// The track.
    #[arg(long, env = "TRACK_ID")]
    pub track: Uuid,
    #[command(flatten)]
    pub db: DbConfig,
}

#[derive(Debug, clap::Args)]
pub struct Notify {
    /// The track.
    #[arg(long, env = "TRACK_ID")]
    pub track: Uuid,
    #[command(flatten)]
    pub db: DbConfig,
    #[command(flatten)]
    pub temporal: TemporalConfig,
}

pub async fn add_unit(args: &AddUnit) -> anyhow::Result<()> {
    let title = match &args.title {
        Some(title) => title.clone(),
        None => {
            let pool = db::connect(&args.services.db).await?;
            let title: Option<String> =
                sqlx::query_scalar("select title from learning_tracks where id = $1")
                    .bind(args.track)
                    .fetch_optional(&pool)
                    .await?;
            let title = title.ok_or(super::ChangeError::UnknownTrack(args.track))?;
            format!("{title} — new unit")
        }
    };
    let change = Change::AddUnit {
        title,
        position: args.position,
        assessment: args.assessment,
    };
    change_track(&args.services, args.track, &change, args.reopen, &args.run).await
}

pub async fn remove_unit(args: &RemoveUnit) -> anyhow::Result<()> {
    let change = Change::RemoveUnit { unit: args.unit };
    change_track(&args.services, args.track, &change, false, &args.run).await
}

pub async fn move_unit(args: &MoveUnit) -> anyhow::Result<()> {
    let change = Change::MoveUnit {
        unit: args.unit,
        position: args.position,
    };
    change_track(&args.services, args.track, &change, false, &args.run).await
}

/// The summary of a change, as `--json` prints it.
#[derive(Debug, Serialize)]
struct Summary<'a> {
    #[serde(flatten)]
    applied: &'a Applied,
    events_published: usize,
    paths: Notified,
    elapsed_ms: u128,
}

async fn change_track(
    services: &Services,
    track: Uuid,
    change: &Change,
    reopen: bool,
    run: &Run,
) -> anyhow::Result<()> {
    let started = Instant::now();
    // every service is reached before anything changes, so a wrong address changes nothing
    let pool = db::connect(&services.db).await?;
    let (js, temporal) = if run.dry_run {
        (None, None)
    } else {
        let client = messaging::connect(&services.nats, "tracks")
            .await
            .context("connecting to NATS")?;
        let temporal = workflow::connect(&services.temporal, "tracks").await?;
        (Some(jetstream::new(client)), Some(temporal))
    };

    let applied = apply_change(
        &pool,
        track,
        change,
        reopen,
        run.dry_run,
        &mut |done, total| {
            eprintln!("learners rewritten {done}/{total} ({})", since(started));
        },
    )
    .await?;
    let (Some(js), Some(temporal)) = (js, temporal) else {
        print_summary(&applied, 0, &Notified::default(), started, run.json)?;
        return Ok(());
    };
    let published = outbox::publish_change(
        &pool,
        &js,
        &services.nats,
        track,
        applied.units_version,
        &mut |done| {
            eprintln!(
                "events published {done}/{} ({})",
                applied.learners,
                since(started)
            )
        },
    )
    .await
    .context("the change is committed; the applier's sweep publishes its events")?;
    let paths = notify_learners(
        &temporal,
        &pool,
        track,
        applied.units_version,
        &applied.unit_ids,
        &mut |done, total| eprintln!("paths told {done}/{total} ({})", since(started)),
    )
    .await
    .with_context(|| format!("the change is committed; run `tracks notify --track {track}`"))?;
    print_summary(&applied, published, &paths, started, run.json)?;
    untold(track, &paths)
}

fn print_summary(
    applied: &Applied,
    events_published: usize,
    paths: &Notified,
    started: Instant,
    json: bool,
) -> anyhow::Result<()> {
    if json {
        let summary = Summary {
            applied,
            events_published,
            paths: paths.clone(),
            elapsed_ms: started.elapsed().as_millis(),
        };
        println!("{}", serde_json::to_string(&summary)?);
        return Ok(());
    }
    let what = match (applied.kind, applied.position) {
        ("unit_added", Some(p)) => format!("added unit {} at position {p}", applied.unit_id),
        ("unit_moved", Some(p)) => format!("moved unit {} to position {p}", applied.unit_id),
        _ => format!("removed unit {}", applied.unit_id),
    };
    let learners = format!(
        "{} learners rewritten ({} completions dropped, {} reopened, {} current units moved)",
        applied.learners, applied.completions_dropped, applied.reopened, applied.current_moved
    );
    if applied.dry_run {
        println!(
            "dry run, nothing changed: would have {what} of track {} ({} units); {learners}",
            applied.track_id,
            applied.unit_ids.len()
        );
    } else {
        println!(
            "{what} of track {} ({} units, units version {}); {learners}; {events_published} \
             events published; {} running paths told, {} in progress without one, {} failed \
             in {:.1}s",
            applied.track_id,
            applied.unit_ids.len(),
            applied.units_version,
            paths.signalled,
            paths.not_running,
            paths.failed,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// The time since `started`, for progress lines.
fn since(started: Instant) -> String {
    format!("{:.1}s", started.elapsed().as_secs_f64())
}

/// An error when some running path was not told: it would accept a removed unit.
fn untold(track: Uuid, paths: &Notified) -> anyhow::Result<()> {
    match paths.failed {
        0 => Ok(()),
        failed => anyhow::bail!(
            "{failed} running paths were not told the new units ({}); run `tracks notify --track {track}`",
            paths.first_error.as_deref().unwrap_or("unknown error")
        ),
    }
}

/// The track as it is now: its units in order, its units version, how many learners are on it.
pub async fn show(args: &Show) -> anyhow::Result<()> {
    let pool = db::connect(&args.db).await?;
    let track: Option<(String, String, i64)> =
        sqlx::query_as("select slug, title, units_version from learning_tracks where id = $1")
            .bind(args.track)
            .fetch_optional(&pool)
            .await?;
    let (slug, title, units_version) = track.ok_or(super::ChangeError::UnknownTrack(args.track))?;
    let units: Vec<db::tracks::TrackUnit> = sqlx::query_as(
        "select id, position, title, kind from track_units where track_id = $1 order by position",
    )
    .bind(args.track)
    .fetch_all(&pool)
    .await?;
    let learners: i64 =
        sqlx::query_scalar("select count(*) from user_progress where track_id = $1")
            .bind(args.track)
            .fetch_one(&pool)
            .await?;
    let shown = serde_json::json!({
        "id": args.track, "slug": slug, "title": title, "units_version": units_version,
        "learners": learners, "units": units,
    });
    println!("{}", serde_json::to_string_pretty(&shown)?);
    Ok(())
}

/// Tells every learner's running path the track's current units again.
pub async fn notify(args: &Notify) -> anyhow::Result<()> {
    let started = Instant::now();
    let pool = db::connect(&args.db).await?;
    let temporal = workflow::connect(&args.temporal, "tracks").await?;
    let units_version: i64 =
        sqlx::query_scalar("select units_version from learning_tracks where id = $1")
            .bind(args.track)
            .fetch_optional(&pool)
            .await?
            .ok_or(super::ChangeError::UnknownTrack(args.track))?;
    let unit_ids = db::tracks::unit_ids(&pool, args.track).await?;
    let paths = notify_learners(
        &temporal,
        &pool,
        args.track,
        units_version,
        &unit_ids,
        &mut |done, total| eprintln!("paths told {done}/{total} ({})", since(started)),
    )
    .await?;
    println!(
        "told the units of track {} ({} units, units version {units_version}): {} running paths \
         told, {} in progress without one, {} failed in {:.1}s",
        args.track,
        unit_ids.len(),
        paths.signalled,
        paths.not_running,
        paths.failed,
        started.elapsed().as_secs_f64()
    );
    untold(args.track, &paths)
}
