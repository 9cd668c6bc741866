//! The unit sets of the tracks seen so far, so a batch does not read them every time.
//!
//! Tracks are a small catalogue whose units do not change under a running path; a set that
//! would reject a command is re-read first, so a unit added to a track is never refused
//! because of a stale set.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::db::tracks;
use crate::model::ProgressCommand;

pub(super) type UnitSets = HashMap<Uuid, Arc<HashSet<Uuid>>>;

#[derive(Debug, Default)]
pub(super) struct TrackUnits {
    known: Mutex<UnitSets>,
}

impl TrackUnits {
    /// The unit sets of the batch's tracks: cached ones, read ones where unknown or where a
    /// cached set would reject a command.
    pub(super) async fn for_batch(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        commands: &[ProgressCommand],
    ) -> Result<UnitSets, sqlx::Error> {
        let mut sets = UnitSets::new();
        let mut read: HashSet<Uuid> = HashSet::new();
        {
            let known = self.known.lock().expect("track units lock poisoned");
            for command in commands {
                match known.get(&command.track_id) {
                    Some(units) if check_units(command, Some(units)).is_ok() => {
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
        let mut known = self.known.lock().expect("track units lock poisoned");
        for track in read {
            match fresh.get(&track) {
                Some(units) => {
                    let units = Arc::new(units.clone());
                    known.insert(track, units.clone());
                    sets.insert(track, units);
                }
                None => {
                    known.remove(&track);
                    sets.remove(&track);
                }
            }
        }
        Ok(sets)
    }
}

/// Every unit a command names must belong to its track: (reason code, reason) when not.
pub(super) fn check_units(
    command: &ProgressCommand,
    units: Option<&HashSet<Uuid>>,
) -> Result<(), (&'static str, String)> {
    let Some(units) = units else {
        return Err((
            "unknown_track",
            format!("track {} does not exist", command.track_id),
        ));
    };
    match command.unit_ids().into_iter().find(|u| !units.contains(u)) {
        Some(unit) => Err((
            "foreign_unit",
            format!("unit {unit} does not belong to track {}", command.track_id),
        )),
        None => Ok(()),
    }
}
