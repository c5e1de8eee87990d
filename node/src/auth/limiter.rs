//! Failed authentication, rate-limited per caller address and per site id: each key has a
//! bucket of `BURST` failures that refills one every `REFILL_MS`. While a key's bucket is empty,
//! every attempt under it is refused before any password is checked, a right one too (otherwise
//! guessing would only be slowed, not stopped). Successes cost nothing.
//!
//! Hand-written rather than `governor`: this counts failures only and refuses attempts, and the
//! table must stay bounded under a flood of source addresses (`KEYS_MAX`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// Failures allowed in a burst per key.
pub const BURST: u32 = 5;
/// One more failure is allowed every this many ms (5 a minute).
pub const REFILL_MS: u64 = 12_000;
/// Most keys tracked; beyond it, the keys that would be allowed anyway go first, then the
/// longest quiet.
pub const KEYS_MAX: usize = 10_000;

/// What failures are counted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Key {
    /// The caller's address (unknown when the transport has none, as in the simulations).
    Source(Option<IpAddr>),
    /// The site id a login or session token named.
    Site(u32),
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Failures still allowed as of `at_ms`.
    tokens: u32,
    /// When `tokens` was last computed.
    at_ms: u64,
}

impl Bucket {
    fn refilled(self, now_ms: u64) -> Bucket {
        let earned = now_ms.saturating_sub(self.at_ms) / REFILL_MS;
        if earned == 0 {
            return self;
        }
        let tokens = (u64::from(self.tokens) + earned).min(u64::from(BURST)) as u32;
        Bucket { tokens, at_ms: if tokens == BURST { now_ms } else { self.at_ms + earned * REFILL_MS } }
    }
}

/// The failure buckets.
#[derive(Debug, Default)]
pub struct Limiter {
    buckets: Mutex<HashMap<Key, Bucket>>,
}

impl Limiter {
    /// Refuses when any of `keys` has no failure left: how many ms until one is allowed.
    pub fn check(&self, keys: &[Key], now_ms: u64) -> Result<(), u64> {
        let buckets = self.buckets.lock().expect("limiter lock");
        let wait = keys
            .iter()
            .filter_map(|key| buckets.get(key))
            .map(|bucket| bucket.refilled(now_ms))
            .filter(|bucket| bucket.tokens == 0)
            .map(|bucket| (bucket.at_ms + REFILL_MS).saturating_sub(now_ms).max(1))
            .max();
        wait.map_or(Ok(()), Err)
    }

    /// Counts a failure under each of `keys`.
    pub fn fail(&self, keys: &[Key], now_ms: u64) {
        let mut buckets = self.buckets.lock().expect("limiter lock");
        for key in keys {
            if !buckets.contains_key(key) && buckets.len() >= KEYS_MAX {
                evict(&mut buckets, now_ms);
            }
            let bucket = buckets.get(key).copied().unwrap_or(Bucket { tokens: BURST, at_ms: now_ms }).refilled(now_ms);
            buckets.insert(*key, Bucket { tokens: bucket.tokens.saturating_sub(1), at_ms: bucket.at_ms });
        }
    }

    /// Keys tracked now (for tests and metrics).
    pub fn len(&self) -> usize {
        self.buckets.lock().expect("limiter lock").len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Makes room: drops every bucket that has refilled completely, or else the quietest one.
fn evict(buckets: &mut HashMap<Key, Bucket>, now_ms: u64) {
    let before = buckets.len();
    buckets.retain(|_, bucket| bucket.refilled(now_ms).tokens < BURST);
    if buckets.len() == before {
        if let Some(oldest) = buckets.iter().min_by_key(|(_, bucket)| bucket.at_ms).map(|(key, _)| *key) {
            buckets.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_failures_blocks_the_key_until_it_refills() {
        let limiter = Limiter::default();
        let keys = [Key::Source(Some([10, 0, 0, 1].into())), Key::Site(7)];
        for _ in 0..BURST {
            assert_eq!(limiter.check(&keys, 1_000), Ok(()));
            limiter.fail(&keys, 1_000);
        }
        assert_eq!(limiter.check(&keys, 1_000), Err(REFILL_MS));
        // Another address trying the same site is refused too; the first address trying another
        // site as well.
        assert!(limiter.check(&[Key::Source(None), Key::Site(7)], 1_000).is_err());
        assert!(limiter.check(&[keys[0], Key::Site(8)], 1_000).is_err());
        assert_eq!(limiter.check(&[Key::Source(None), Key::Site(8)], 1_000), Ok(()));
        // One refill allows exactly one more failure.
        assert_eq!(limiter.check(&keys, 1_000 + REFILL_MS), Ok(()));
        limiter.fail(&keys, 1_000 + REFILL_MS);
        assert!(limiter.check(&keys, 1_000 + REFILL_MS).is_err());
        assert_eq!(limiter.check(&keys, 1_000 + 6 * REFILL_MS), Ok(()));
    }

    #[test]
    fn the_table_stays_bounded() {
        let limiter = Limiter::default();
        for i in 0..(KEYS_MAX as u32 + 500) {
            limiter.fail(&[Key::Source(Some(std::net::Ipv4Addr::from(i).into()))], u64::from(i));
        }
        assert!(limiter.len() <= KEYS_MAX);
    }
}
