//! Failed authentication, rate-limited per caller address and per site id: each key has a
//! bucket of attempts (`BURST` per address, `SITE_BURST` per site) that refills one every
//! `REFILL_MS`.
//!
//! - A password attempt takes its attempt from every key *before* the password is checked
//!   ([`Limiter::acquire`]) and gives it back when the password was right ([`Limiter::refund`]):
//!   attempts sent at the same moment cannot all pass a check made before any of them failed,
//!   and while a bucket is empty even the right password waits (guessing is stopped, not slowed).
//! - A refused password is also recorded in the log (`RecordAuthFailure`), and every other
//!   member counts it in its own limiter as it applies (`Shared::count_auth_failures`): the limit
//!   holds across the cluster, not per member.
//! - One address cannot lock a site out: its own bucket empties after `BURST` failures, and a
//!   site's bucket holds `SITE_BURST` (four addresses' worth). Many addresses together can, which
//!   is the price of bounding a distributed guesser.
//! - A bad bearer token counts against its address only ([`Limiter::fail`]): a token cannot be
//!   guessed, and counting it against the site it names would let anyone lock a site out.
//!
//! Addresses are keyed by IPv4 address or IPv6 /64 (one host's whole prefix), in a table bounded
//! by `SOURCES_MAX`; site buckets are kept apart, one per valid site id, and never evicted.
//! Hand-written rather than `governor`: this counts failures, takes attempts up front and gives
//! them back, and must stay bounded under a flood of addresses.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use collective_statemachine::limits::SITE_ID_MAX;

/// Attempts allowed in a burst per address.
pub const BURST: u32 = 5;
/// Attempts allowed in a burst per site, from all addresses together: more than one address
/// may use, so a single address cannot lock a site out.
pub const SITE_BURST: u32 = 4 * BURST;
/// One more attempt is allowed every this many ms (5 a minute).
pub const REFILL_MS: u64 = 12_000;
/// Most addresses tracked; beyond it, buckets that have refilled go first, then the quietest.
pub const SOURCES_MAX: usize = 10_000;

/// What attempts are counted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Key {
    /// The caller's address (unknown when the transport has none, as in the simulations).
    Source(Option<IpAddr>),
    /// The site id a login named.
    Site(u32),
}

impl Key {
    /// The attempts a full bucket of this key holds.
    fn burst(&self) -> u32 {
        match self {
            Key::Source(_) => BURST,
            Key::Site(_) => SITE_BURST,
        }
    }
}

/// The keys a site password attempt counts under.
pub fn keys(site: u32, source: Option<IpAddr>) -> [Key; 2] {
    [Key::Source(source), Key::Site(site)]
}

/// How a caller's address is recorded with a failure in the log (the key it counts under):
/// empty when unknown.
pub fn source_text(source: Option<IpAddr>) -> String {
    source_key(source).map(|ip| ip.to_string()).unwrap_or_default()
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Attempts still allowed as of `at_ms`.
    tokens: u32,
    /// When `tokens` was last computed.
    at_ms: u64,
}

impl Bucket {
    fn full(burst: u32, now_ms: u64) -> Bucket {
        Bucket { tokens: burst, at_ms: now_ms }
    }

    fn refilled(self, burst: u32, now_ms: u64) -> Bucket {
        let earned = now_ms.saturating_sub(self.at_ms) / REFILL_MS;
        if earned == 0 {
            return self;
        }
        let tokens = (u64::from(self.tokens) + earned).min(u64::from(burst)) as u32;
        Bucket { tokens, at_ms: if tokens == burst { now_ms } else { self.at_ms + earned * REFILL_MS } }
    }

    /// How long until an attempt is allowed (0: now).
    fn wait_ms(self, now_ms: u64) -> u64 {
        if self.tokens > 0 {
            0
        } else {
            (self.at_ms + REFILL_MS).saturating_sub(now_ms).max(1)
        }
    }
}

/// Where a source's bucket lives: IPv4 addresses one by one, IPv6 by /64.
fn source_key(source: Option<IpAddr>) -> Option<IpAddr> {
    source.map(|ip| match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
    })
}

#[derive(Debug, Default)]
struct Buckets {
    sources: HashMap<Option<IpAddr>, Bucket>,
    sites: HashMap<u32, Bucket>,
}

impl Buckets {
    /// The bucket of `key` as of now, if it is tracked (or may be).
    fn get(&self, key: &Key, now_ms: u64) -> Bucket {
        let found = match key {
            Key::Source(source) => self.sources.get(&source_key(*source)),
            Key::Site(site) => self.sites.get(site),
        };
        found.copied().unwrap_or(Bucket::full(key.burst(), now_ms)).refilled(key.burst(), now_ms)
    }

    fn set(&mut self, key: &Key, bucket: Bucket, now_ms: u64) {
        match key {
            Key::Source(source) => {
                let source = source_key(*source);
                if !self.sources.contains_key(&source) && self.sources.len() >= SOURCES_MAX {
                    evict(&mut self.sources, now_ms);
                }
                self.sources.insert(source, bucket);
            }
            // Only valid site ids get a bucket, so this table holds at most 999.
            Key::Site(site) if (1..=SITE_ID_MAX).contains(site) => {
                self.sites.insert(*site, bucket);
            }
            Key::Site(_) => {}
        }
    }
}

/// The attempt buckets.
#[derive(Debug, Default)]
pub struct Limiter {
    buckets: Mutex<Buckets>,
}

impl Limiter {
    /// Refuses when any of `keys` has no attempt left: how many ms until one is allowed.
    pub fn check(&self, keys: &[Key], now_ms: u64) -> Result<(), u64> {
        let buckets = self.buckets.lock().expect("limiter lock");
        match keys.iter().map(|key| buckets.get(key, now_ms).wait_ms(now_ms)).max().unwrap_or(0) {
            0 => Ok(()),
            wait => Err(wait),
        }
    }

    /// Takes one attempt from every key, or none when any is empty (then: ms until allowed).
    pub fn acquire(&self, keys: &[Key], now_ms: u64) -> Result<(), u64> {
        let mut buckets = self.buckets.lock().expect("limiter lock");
        let current: Vec<Bucket> = keys.iter().map(|key| buckets.get(key, now_ms)).collect();
        match current.iter().map(|bucket| bucket.wait_ms(now_ms)).max().unwrap_or(0) {
            0 => {
                for (key, bucket) in keys.iter().zip(current) {
                    buckets.set(key, Bucket { tokens: bucket.tokens - 1, at_ms: bucket.at_ms }, now_ms);
                }
                Ok(())
            }
            wait => Err(wait),
        }
    }

    /// Gives back an attempt taken by `acquire` that succeeded.
    pub fn refund(&self, keys: &[Key], now_ms: u64) {
        let mut buckets = self.buckets.lock().expect("limiter lock");
        for key in keys {
            let bucket = buckets.get(key, now_ms);
            buckets.set(key, Bucket { tokens: (bucket.tokens + 1).min(key.burst()), at_ms: bucket.at_ms }, now_ms);
        }
    }

    /// Counts a failure under each of `keys` (an empty bucket stays empty).
    pub fn fail(&self, keys: &[Key], now_ms: u64) {
        let mut buckets = self.buckets.lock().expect("limiter lock");
        for key in keys {
            let bucket = buckets.get(key, now_ms);
            buckets.set(key, Bucket { tokens: bucket.tokens.saturating_sub(1), at_ms: bucket.at_ms }, now_ms);
        }
    }

    /// Addresses tracked now.
    pub fn sources(&self) -> usize {
        self.buckets.lock().expect("limiter lock").sources.len()
    }
}

/// Makes room: drops every bucket that has refilled completely, or else the quietest one.
fn evict(sources: &mut HashMap<Option<IpAddr>, Bucket>, now_ms: u64) {
    let before = sources.len();
    sources.retain(|_, bucket| bucket.refilled(BURST, now_ms).tokens < BURST);
    if sources.len() == before {
        if let Some(oldest) = sources.iter().min_by_key(|(_, bucket)| bucket.at_ms).map(|(key, _)| *key) {
            sources.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_are_taken_up_front_and_given_back_on_success() {
        let limiter = Limiter::default();
        let keys = [Key::Source(Some([10, 0, 0, 1].into())), Key::Site(7)];
        // Five attempts at once all take theirs before any is judged; the sixth waits.
        for _ in 0..BURST {
            assert_eq!(limiter.acquire(&keys, 1_000), Ok(()));
        }
        assert_eq!(limiter.acquire(&keys, 1_000), Err(REFILL_MS));
        // The first address trying another site waits as well; another address may still try
        // the same site: one address cannot lock a site out.
        assert!(limiter.check(&[keys[0], Key::Site(8)], 1_000).is_err());
        assert_eq!(limiter.check(&[Key::Source(None), Key::Site(7)], 1_000), Ok(()));
        // A success gives its attempt back.
        limiter.refund(&keys, 1_000);
        assert_eq!(limiter.acquire(&keys, 1_000), Ok(()));
        // One refill allows exactly one more attempt; a quiet minute refills the burst.
        assert_eq!(limiter.acquire(&keys, 1_000 + REFILL_MS), Ok(()));
        assert!(limiter.acquire(&keys, 1_000 + REFILL_MS).is_err());
        assert_eq!(limiter.check(&keys, 1_000 + 6 * REFILL_MS), Ok(()));
    }

    #[test]
    fn ipv6_addresses_share_their_prefix() {
        let limiter = Limiter::default();
        let first: IpAddr = "2001:db8::1".parse().unwrap();
        let same_prefix: IpAddr = "2001:db8::ffff:1".parse().unwrap();
        for _ in 0..BURST {
            limiter.fail(&[Key::Source(Some(first))], 0);
        }
        assert!(limiter.check(&[Key::Source(Some(same_prefix))], 0).is_err());
        assert!(limiter.check(&[Key::Source(Some("2001:db9::1".parse().unwrap()))], 0).is_ok());
    }

    #[test]
    fn a_flood_of_addresses_stays_bounded_and_never_frees_a_site() {
        let limiter = Limiter::default();
        for _ in 0..SITE_BURST {
            limiter.fail(&[Key::Site(7)], 0);
        }
        for i in 0..(SOURCES_MAX as u32 + 500) {
            limiter.fail(&[Key::Source(Some(std::net::Ipv4Addr::from(i).into()))], 0);
        }
        assert!(limiter.sources() <= SOURCES_MAX);
        assert!(limiter.check(&[Key::Site(7)], 0).is_err());
        // Ids that are not sites are never tracked.
        for _ in 0..SITE_BURST {
            limiter.fail(&[Key::Site(5_000)], 0);
        }
        assert!(limiter.check(&[Key::Site(5_000)], 0).is_ok());
    }
}

#[cfg(test)]
mod site_tests {
    use super::*;

    /// Many addresses together empty a site's bucket; until then each is stopped by its own.
    #[test]
    fn a_site_is_locked_only_by_several_addresses() {
        let limiter = Limiter::default();
        for host in 1..=4u8 {
            let source = Some(IpAddr::from([10, 0, 0, host]));
            for _ in 0..BURST {
                limiter.fail(&keys(7, source), 0);
            }
            assert!(limiter.check(&keys(7, source), 0).is_err(), "address {host} is stopped");
        }
        assert!(limiter.check(&[Key::Site(7)], 0).is_err(), "four addresses' failures lock the site");
        assert_eq!(source_text(Some("2001:db8::ffff:1".parse().unwrap())), "2001:db8::");
        assert_eq!(source_text(None), "");
    }
}
