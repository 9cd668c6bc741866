//! The unit sets of the tracks seen so far, so a batch does not read them every time.
//!
//! A track's units change (`tracks add-unit`, `remove-unit`) only with its `units_version`,
//! in a transaction holding the track's row `for update`. Each batch reads its tracks'
//! versions `for key share` before it locks its learners' rows, and re-reads a set whose
//! version moved: a batch judges units against the catalogue as committed, a change waits for
//! the batches judging against the old one, and neither waits for the other while holding
//! what the other needs. A set that would reject a command is re-read too.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::db::tracks;
use crate::model::ProgressCommand;

pub(super) type UnitSets = HashMap<Uuid, Arc<UnitSet>>;

/// A track's units, and those removed from it: a command naming a removed unit (published
/// just before the removal) applies without it instead of being refused.
#[derive(Debug, Clone, Default)]
pub(super) struct UnitSet {
    pub units: HashSet<Uuid>,
    pub removed: HashSet<Uuid>,
}

/// A track's unit set with the `units_version` it was read at.
type Versioned = (i64, Arc<UnitSet>);

#[derive(Debug, Default)]
pub(super) struct TrackUnits {
    known: Mutex<HashMap<Uuid, Versioned>>,
}

impl TrackUnits {
    /// The unit sets of the batch's tracks: cached ones, read ones where unknown or where a
    /// cached set would reject a command.
    pub(super) async fn for_batch(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        commands: &[ProgressCommand],
    ) -> Result<UnitSets, sqlx::Error> {
        let mut tracks: Vec<Uuid> = commands.iter().map(|c| c.track_id).collect();
        tracks.sort_unstable();
        tracks.dedup();
        let versions: HashMap<Uuid, i64> = sqlx::query_as::<_, (Uuid, i64)>(
            "select id, units_version from learning_tracks where id = any($1)
             order by id for key share",
        )
        .bind(&tracks)
        .fetch_all(&mut **tx)
        .await?
        .into_iter()
        .collect();
        let mut sets = UnitSets::new();
        let mut read: HashSet<Uuid> = HashSet::new();
        {
            let known = self.known.lock().expect("track units lock poisoned");
            for command in commands {
                match known.get(&command.track_id) {
                    Some((version, units))
                        if versions.get(&command.track_id) == Some(version)
                            && check_units(command, Some(units)).is_ok() =>
                    {
                        sets.insert(command.track_id, units.clone());
                    }
                    _ => {
                        read.insert(command.track_id);
                    }
                }
            }
        }
        if read.is_empty() {
            return Ok(sets);
        }
        let read: Vec<Uuid> = read.into_iter().collect();
        let fresh = tracks::unit_sets(&mut **tx, &read).await?;
        let mut removed: HashMap<Uuid, HashSet<Uuid>> = HashMap::new();
        let gone: Vec<(Uuid, Uuid)> = sqlx::query_as(
            "select track_id, unit_id from track_changes
             where track_id = any($1) and kind = 'unit_removed'",
        )
        .bind(&read)
        .fetch_all(&mut **tx)
        .await?;
        for (track, unit) in gone {
            removed.entry(track).or_default().insert(unit);
        }
        let mut known = self.known.lock().expect("track units lock poisoned");
        for track in read {
            match (fresh.get(&track), versions.get(&track)) {
                (Some(units), Some(version)) => {
                    let units = Arc::new(UnitSet {
                        units: units.clone(),
                        removed: removed.remove(&track).unwrap_or_default(),
                    });
                    known.insert(track, (*version, units.clone()));
                    sets.insert(track, units);
                }
                _ => {
                    known.remove(&track);
                    sets.remove(&track);
                }
            }
        }
        Ok(sets)
    }
}

/// Every unit a command names must belong to its track, or have been removed from it:
/// (reason code, reason) when not.
pub(super) fn check_units(
    command: &ProgressCommand,
    units: Option<&UnitSet>,
) -> Result<(), (&'static str, String)> {
    let Some(UnitSet { units, removed }) = units else {
        return Err((
            "unknown_track",
            format!("track {} does not exist", command.track_id),
        ));
    };
    let foreign = |u: &Uuid| !units.contains(u) && !removed.contains(u);
    match command.unit_ids().into_iter().find(foreign) {
        Some(unit) => Err((
            "foreign_unit",
            format!("unit {unit} does not belong to track {}", command.track_id),
        )),
        None => Ok(()),
    }
}
