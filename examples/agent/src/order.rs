//! Version order per track: which event to act on next, which to hold, which to drop.
//!
//! A learner's events usually arrive in version order, but not always (several appliers,
//! retries), and the same version may arrive more than once. So the agent acts on version
//! `last + 1` only; an older or already-held version is dropped; a newer one is held until the
//! versions before it arrive — or, after a gap timeout, the agent moves on to the lowest version
//! it holds: every event carries the whole snapshot, so its changes include the missing ones.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

/// The events of every track of one learner, `T` being what is acked once acted on.
pub struct Sequencer<T> {
    tracks: HashMap<Uuid, Track<T>>,
}

struct Track<T> {
    /// The last version acted on (0: none yet).
    last: i64,
    held: BTreeMap<i64, T>,
    /// Since when the lowest held version has been waiting for the versions before it.
    waiting_since: Option<Instant>,
}

impl<T> Sequencer<T> {
    /// Starts from the last version acted on per track (as the state file remembers it).
    pub fn new(last: &BTreeMap<Uuid, i64>) -> Sequencer<T> {
        let tracks = last
            .iter()
            .map(|(track, &last)| {
                let state = Track {
                    last,
                    held: BTreeMap::new(),
                    waiting_since: None,
                };
                (*track, state)
            })
            .collect();
        Sequencer { tracks }
    }

    /// Takes `item` of `version` to act on in order; gives it back when that version was acted
    /// on already or is held already (a duplicate: the caller acks and forgets it).
    pub fn offer(&mut self, track: Uuid, version: i64, item: T) -> Result<(), T> {
        let state = self.tracks.entry(track).or_insert_with(|| Track {
            last: 0,
            held: BTreeMap::new(),
            waiting_since: None,
        });
        if version <= state.last || state.held.contains_key(&version) {
            return Err(item);
        }
        state.held.insert(version, item);
        Ok(())
    }

    /// The next version of `track` to act on, if it is here; it counts as acted on from now.
    /// When none is ready but some are held, the gap's wait starts at `now`.
    pub fn ready(&mut self, track: Uuid, now: Instant) -> Option<(i64, T)> {
        let state = self.tracks.get_mut(&track)?;
        let next = state.last + 1;
        if let Some(item) = state.held.remove(&next) {
            state.last = next;
            state.waiting_since = None;
            return Some((next, item));
        }
        if state.held.is_empty() {
            state.waiting_since = None;
        } else {
            state.waiting_since.get_or_insert(now);
        }
        None
    }

    /// When the first gap wait ends, and on which track.
    pub fn gap_deadline(&self, gap_timeout: Duration) -> Option<(Instant, Uuid)> {
        self.tracks
            .iter()
            .filter_map(|(track, state)| Some((state.waiting_since? + gap_timeout, *track)))
            .min()
    }

    /// Gives up waiting for the versions before the lowest one held on `track`: returns the
    /// range skipped, after which [`Sequencer::ready`] yields the lowest held version.
    pub fn skip_gap(&mut self, track: Uuid) -> Option<(i64, i64)> {
        let state = self.tracks.get_mut(&track)?;
        let lowest = *state.held.keys().next()?;
        let skipped = (state.last + 1, lowest - 1);
        state.last = lowest - 1;
        state.waiting_since = None;
        Some(skipped)
    }

    /// Forgets `track` (its learner was erased): it starts again from version 0. Returns what
    /// was held for it, which is about the erased progress.
    pub fn forget(&mut self, track: Uuid) -> Vec<T> {
        self.tracks
            .remove(&track)
            .map(|state| state.held.into_values().collect())
            .unwrap_or_default()
    }

    /// Everything held, to hand back to the server at shutdown.
    pub fn drain_held(&mut self) -> Vec<T> {
        self.tracks
            .values_mut()
            .flat_map(|state| std::mem::take(&mut state.held).into_values())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(sequencer: &mut Sequencer<&'static str>, track: Uuid) -> Vec<i64> {
        let now = Instant::now();
        std::iter::from_fn(|| sequencer.ready(track, now).map(|(v, _)| v)).collect()
    }

    #[test]
    fn versions_in_order_are_acted_on_at_once() {
        let track = Uuid::from_u128(1);
        let mut sequencer = Sequencer::new(&BTreeMap::new());
        for version in 1..=3 {
            sequencer.offer(track, version, "event").unwrap();
            assert_eq!(drain(&mut sequencer, track), vec![version]);
        }
    }

    #[test]
    fn a_version_acted_on_or_held_already_is_given_back() {
        let track = Uuid::from_u128(1);
        let mut sequencer = Sequencer::new(&BTreeMap::from([(track, 4)]));
        assert_eq!(sequencer.offer(track, 4, "again"), Err("again"));
        assert_eq!(sequencer.offer(track, 2, "older"), Err("older"));
        sequencer.offer(track, 6, "ahead").unwrap();
        assert_eq!(sequencer.offer(track, 6, "copy"), Err("copy"));
    }

    #[test]
    fn a_version_ahead_waits_for_the_ones_before_it() {
        let track = Uuid::from_u128(1);
        let mut sequencer = Sequencer::new(&BTreeMap::new());
        sequencer.offer(track, 3, "three").unwrap();
        sequencer.offer(track, 2, "two").unwrap();
        assert!(drain(&mut sequencer, track).is_empty());
        assert!(sequencer.gap_deadline(Duration::from_secs(5)).is_some());
        sequencer.offer(track, 1, "one").unwrap();
        assert_eq!(drain(&mut sequencer, track), vec![1, 2, 3]);
        assert!(sequencer.gap_deadline(Duration::from_secs(5)).is_none());
    }

    #[test]
    fn after_the_gap_timeout_the_lowest_held_version_goes_next() {
        let track = Uuid::from_u128(1);
        let mut sequencer = Sequencer::new(&BTreeMap::from([(track, 1)]));
        sequencer.offer(track, 5, "five").unwrap();
        sequencer.offer(track, 4, "four").unwrap();
        assert!(drain(&mut sequencer, track).is_empty());
        let (_, waiting) = sequencer.gap_deadline(Duration::ZERO).unwrap();
        assert_eq!(waiting, track);
        assert_eq!(sequencer.skip_gap(track), Some((2, 3)));
        assert_eq!(drain(&mut sequencer, track), vec![4, 5]);
        assert_eq!(sequencer.offer(track, 3, "late"), Err("late"));
    }

    #[test]
    fn a_forgotten_track_starts_again_from_version_one() {
        let track = Uuid::new_v4();
        let mut sequencer = Sequencer::new(&BTreeMap::from([(track, 5)]));
        sequencer.offer(track, 7, "held").unwrap();
        assert_eq!(sequencer.forget(track), vec!["held"]);
        sequencer.offer(track, 1, "new start").unwrap();
        assert_eq!(drain(&mut sequencer, track), vec![1]);
    }
}
