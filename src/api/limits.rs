//! What one caller may cost: live streams held at once (per user and in all) and requests per
//! second (a token bucket per user).
//!
//! Admins (the service role, the admin claim) are not rate limited: they are the project's own
//! servers, reading many learners on purpose, and hold the project's secret; the connection
//! limit and the request timeout still bound them. Their streams count like anyone's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::ApiError;

/// How long a caller refused a stream is told to wait before trying again.
const STREAM_RETRY_AFTER: Duration = Duration::from_secs(5);

/// Users whose buckets are kept at once; beyond it the least recently seen start over full.
const BUCKETS_CAPACITY: u64 = 100_000;

/// Counts open live streams; a [`StreamSlot`] gives its place back when dropped.
pub struct StreamSlots {
    per_user: usize,
    total: usize,
    open: Arc<Mutex<Open>>,
}

#[derive(Default)]
struct Open {
    total: usize,
    /// only users with a stream open: at most `total` entries
    by_user: HashMap<Uuid, usize>,
}

impl StreamSlots {
    pub(crate) fn new(per_user: usize, total: usize) -> StreamSlots {
        StreamSlots {
            per_user,
            total,
            open: Arc::default(),
        }
    }

    /// A place for one more stream of `user`, or 429 when they or the replica hold the most.
    pub(crate) fn acquire(&self, user: Uuid) -> Result<StreamSlot, ApiError> {
        let mut open = self.open.lock().expect("stream slots lock poisoned");
        let refused = |scope| ApiError::TooManyStreams {
            scope,
            retry_after: STREAM_RETRY_AFTER,
        };
        if open.total >= self.total {
            return Err(refused("this server"));
        }
        let mine = open.by_user.entry(user).or_default();
        if *mine >= self.per_user {
            return Err(refused("this user"));
        }
        *mine += 1;
        open.total += 1;
        Ok(StreamSlot {
            user,
            open: self.open.clone(),
        })
    }

    /// Streams open now.
    pub fn open(&self) -> usize {
        self.open.lock().expect("stream slots lock poisoned").total
    }
}

/// One open stream's place, held for as long as the stream.
pub(crate) struct StreamSlot {
    user: Uuid,
    open: Arc<Mutex<Open>>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().expect("stream slots lock poisoned");
        open.total -= 1;
        if let Some(mine) = open.by_user.get_mut(&self.user) {
            *mine -= 1;
            if *mine == 0 {
                open.by_user.remove(&self.user);
            }
        }
    }
}

/// A token bucket per user: `burst` requests at once, refilled at `per_sec`.
pub(crate) struct RateLimiter {
    per_sec: f64,
    burst: f64,
    buckets: moka::sync::Cache<Uuid, Arc<Mutex<Bucket>>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// `per_sec` of 0 turns the limit off.
    pub(crate) fn new(per_sec: f64, burst: u32) -> RateLimiter {
        let burst = f64::from(burst.max(1));
        // a bucket untouched this long is full again: forgetting it changes nothing
        let refill = if per_sec > 0.0 {
            Duration::from_secs_f64((burst / per_sec).clamp(1.0, 3600.0))
        } else {
            Duration::from_secs(1)
        };
        RateLimiter {
            per_sec,
            burst,
            buckets: moka::sync::Cache::builder()
                .max_capacity(BUCKETS_CAPACITY)
                .time_to_idle(refill)
                .build(),
        }
    }

    /// Takes one request from `user`'s bucket, or says how long until there is one.
    pub(crate) fn check(&self, user: Uuid) -> Result<(), ApiError> {
        if self.per_sec <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let bucket = self.buckets.get_with(user, || {
            Arc::new(Mutex::new(Bucket {
                tokens: self.burst,
                at: now,
            }))
        });
        let mut bucket = bucket.lock().expect("bucket lock poisoned");
        let refilled = now.saturating_duration_since(bucket.at).as_secs_f64() * self.per_sec;
        bucket.tokens = (bucket.tokens + refilled).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let wait = (1.0 - bucket.tokens) / self.per_sec;
        Err(ApiError::RateLimited {
            retry_after: Duration::from_secs_f64(wait.min(3600.0)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_capped_per_user_and_in_all_and_freed_when_dropped() {
        let slots = StreamSlots::new(2, 3);
        let (ann, bob) = (Uuid::new_v4(), Uuid::new_v4());
        let first = slots.acquire(ann).unwrap();
        let _second = slots.acquire(ann).unwrap();
        assert!(matches!(
            slots.acquire(ann),
            Err(ApiError::TooManyStreams { .. })
        ));
        let _third = slots.acquire(bob).unwrap();
        assert!(
            slots.acquire(Uuid::new_v4()).is_err(),
            "the total is reached"
        );
        drop(first);
        assert_eq!(slots.open(), 2);
        let _again = slots.acquire(ann).unwrap();
        assert_eq!(slots.open.lock().unwrap().by_user.len(), 2);
    }

    #[test]
    fn a_user_gets_the_burst_then_waits_for_the_refill() {
        let limiter = RateLimiter::new(2.0, 3);
        let (ann, bob) = (Uuid::new_v4(), Uuid::new_v4());
        for _ in 0..3 {
            limiter.check(ann).unwrap();
        }
        match limiter.check(ann) {
            Err(ApiError::RateLimited { retry_after }) => {
                assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_millis(500))
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        limiter.check(bob).unwrap();
        let unlimited = RateLimiter::new(0.0, 1);
        for _ in 0..100 {
            unlimited.check(ann).unwrap();
        }
    }
}
