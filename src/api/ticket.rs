//! Stream tickets: how a browser opens the live stream, since `EventSource` cannot send an
//! `Authorization` header. A caller with a bearer token mints a ticket for one learner's track
//! (`POST …/progress/stream-ticket`) and opens `…/progress/stream?ticket=…` with it.
//!
//! A ticket names one stream (user and track), expires after a short lifetime (30 s) and opens
//! one stream: the first use consumes it. It is signed (HMAC-SHA256) rather than kept in a table,
//! so minting stores nothing and any replica holding the same key accepts it: with
//! `API_STREAM_TICKET_SECRET` set alike on every replica, a ticket minted by one opens a stream
//! on another. Without it each process signs with a random key of its own, and a ticket opens
//! streams only on the replica that minted it. Single use is enforced per replica (a set of the
//! ids used, each kept until its ticket expires): across N replicas sharing the key, a leaked
//! ticket could open at most N streams of the one learner and track it names, within its life.
//!
//! A ticket carries the expiry of the bearer token that minted it: the stream it opens ends
//! then, as one opened with the token itself would, and the client mints a new ticket with a
//! fresh token to reconnect. The ticket's own 30 s bound only when it may open its stream
//! (never after the token's expiry); ending the stream then would make every browser
//! reconnect twice a minute for no gain in safety.
//!
//! A ticket is a credential: it is never logged, and it only travels in the query string of the
//! stream request, whose route template (not its path or query) is what spans and metrics record.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

type HmacSha256 = Hmac<Sha256>;

/// How long a ticket opens its stream.
pub(crate) const TICKET_LIFETIME: Duration = Duration::from_secs(30);

/// Ticket ids remembered as used at once; a flood beyond it is refused rather than forgotten.
const USED_CAPACITY: usize = 100_000;

const VERSION: u8 = 2;
/// version, user, track, expiry (ms since the epoch), ticket id, the token's expiry (s since
/// the epoch)
const PAYLOAD_LEN: usize = 1 + 16 + 16 + 8 + 16 + 8;
const MAC_LEN: usize = 32;

/// The key tickets are signed with, from configuration; its `Debug` hides it.
#[derive(Clone)]
pub struct TicketSecret(String);

impl std::str::FromStr for TicketSecret {
    type Err = String;

    fn from_str(secret: &str) -> Result<TicketSecret, String> {
        if secret.len() < 32 {
            return Err("a stream ticket secret needs at least 32 characters".to_owned());
        }
        Ok(TicketSecret(secret.to_owned()))
    }
}

impl std::fmt::Debug for TicketSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// Why a ticket does not open a stream. Each answers 401.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TicketError {
    #[error("the stream ticket is not valid")]
    Invalid,
    #[error("the stream ticket is for another stream")]
    WrongStream,
    #[error("the stream ticket has expired")]
    Expired,
    #[error("the stream ticket has been used")]
    Used,
    #[error("too many stream tickets in use; try again shortly")]
    Busy,
}

/// Mints and redeems tickets; one per API replica.
pub(crate) struct Tickets {
    key: Vec<u8>,
    lifetime: Duration,
    /// used ticket ids, each with its ticket's expiry (ms since the epoch)
    used: Mutex<HashMap<Uuid, u64>>,
}

impl Tickets {
    /// Signs with `secret`, or with a random key of this process when there is none.
    pub(crate) fn new(secret: Option<&TicketSecret>, lifetime: Duration) -> Tickets {
        let key = match secret {
            Some(TicketSecret(secret)) => secret.as_bytes().to_vec(),
            None => rand::random::<[u8; 32]>().to_vec(),
        };
        Tickets {
            key,
            lifetime,
            used: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// A ticket for the stream of `user`'s progress on `track`, minted with a bearer token
    /// that expires at `token_expires_at` (seconds since the epoch).
    pub(crate) fn mint(&self, user: Uuid, track: Uuid, token_expires_at: u64) -> String {
        let expires = (now_ms() + self.lifetime.as_millis() as u64)
            .min(token_expires_at.saturating_mul(1000));
        let mut ticket = Vec::with_capacity(PAYLOAD_LEN + MAC_LEN);
        ticket.push(VERSION);
        ticket.extend_from_slice(user.as_bytes());
        ticket.extend_from_slice(track.as_bytes());
        ticket.extend_from_slice(&expires.to_be_bytes());
        ticket.extend_from_slice(Uuid::new_v4().as_bytes());
        ticket.extend_from_slice(&token_expires_at.to_be_bytes());
        let mac = self.mac(&ticket).finalize().into_bytes();
        ticket.extend_from_slice(&mac);
        URL_SAFE_NO_PAD.encode(ticket)
    }

    /// Consumes `ticket` if it is genuine, for this stream, unexpired and unused; returns when
    /// the token that minted it expires (seconds since the epoch), when the stream must end.
    pub(crate) fn redeem(&self, ticket: &str, user: Uuid, track: Uuid) -> Result<u64, TicketError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(ticket)
            .map_err(|_| TicketError::Invalid)?;
        if bytes.len() != PAYLOAD_LEN + MAC_LEN || bytes[0] != VERSION {
            return Err(TicketError::Invalid);
        }
        let (payload, mac) = bytes.split_at(PAYLOAD_LEN);
        self.mac(payload)
            .verify_slice(mac)
            .map_err(|_| TicketError::Invalid)?;
        let uuid_at = |at: usize| Uuid::from_slice(&payload[at..at + 16]).expect("16 bytes");
        if uuid_at(1) != user || uuid_at(17) != track {
            return Err(TicketError::WrongStream);
        }
        let expires = u64::from_be_bytes(payload[33..41].try_into().expect("8 bytes"));
        let now = now_ms();
        if now >= expires {
            return Err(TicketError::Expired);
        }
        let mut used = self.used.lock().expect("the used set is never poisoned");
        if used.len() >= USED_CAPACITY {
            used.retain(|_, expiry| *expiry > now);
        }
        if used.len() >= USED_CAPACITY {
            return Err(TicketError::Busy);
        }
        let token_expires_at = u64::from_be_bytes(payload[57..65].try_into().expect("8 bytes"));
        match used.insert(uuid_at(41), expires) {
            None => Ok(token_expires_at),
            Some(_) => Err(TicketError::Used),
        }
    }

    fn mac(&self, payload: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(payload);
        mac
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_opens_its_own_stream_once() {
        let tickets = Tickets::new(None, TICKET_LIFETIME);
        let (user, track) = (Uuid::new_v4(), Uuid::new_v4());
        let ticket = tickets.mint(user, track, u64::MAX);
        assert_eq!(
            tickets.redeem(&ticket, user, Uuid::new_v4()),
            Err(TicketError::WrongStream)
        );
        assert_eq!(tickets.redeem(&ticket, user, track), Ok(u64::MAX));
        assert_eq!(tickets.redeem(&ticket, user, track), Err(TicketError::Used));
    }

    #[test]
    fn a_ticket_is_only_as_good_as_its_key() {
        let secret: TicketSecret = "a-shared-secret-of-at-least-32-characters".parse().unwrap();
        let one = Tickets::new(Some(&secret), TICKET_LIFETIME);
        let other = Tickets::new(Some(&secret), TICKET_LIFETIME);
        let random = Tickets::new(None, TICKET_LIFETIME);
        let (user, track) = (Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(
            other.redeem(&one.mint(user, track, 7), user, track),
            Err(TicketError::Expired)
        );
        assert_eq!(
            other.redeem(&one.mint(user, track, u64::MAX), user, track),
            Ok(u64::MAX)
        );
        assert_eq!(
            random.redeem(&one.mint(user, track, u64::MAX), user, track),
            Err(TicketError::Invalid)
        );

        let mut forged = URL_SAFE_NO_PAD
            .decode(one.mint(user, track, u64::MAX))
            .unwrap();
        forged[40] ^= 1; // a later expiry
        let forged = URL_SAFE_NO_PAD.encode(forged);
        assert_eq!(one.redeem(&forged, user, track), Err(TicketError::Invalid));
        for garbage in ["", "not base64!", "AAAA"] {
            assert_eq!(one.redeem(garbage, user, track), Err(TicketError::Invalid));
        }
        assert!("too short".parse::<TicketSecret>().is_err());
        assert_eq!(format!("{secret:?}"), "***");
    }

    #[test]
    fn an_expired_ticket_is_refused_and_not_consumed() {
        let tickets = Tickets::new(None, Duration::ZERO);
        let (user, track) = (Uuid::new_v4(), Uuid::new_v4());
        let ticket = tickets.mint(user, track, u64::MAX);
        assert_eq!(
            tickets.redeem(&ticket, user, track),
            Err(TicketError::Expired)
        );
        assert!(tickets.used.lock().unwrap().is_empty());
    }
}
