//! Lease rules: grant, keep alive, revoke, renew after an election, and expiry
//! (`lease_expiry_events`): the users logged on at a site whose lease ended are logged off as
//! `site-unreachable`, in the same entry on every node.

use super::{Lease, LOGOFF_REASON_SITE_UNREACHABLE};
use crate::event::Event;
use crate::rejection::Rejection;
use crate::site::SiteId;
use crate::state::State;

impl State {
    pub(crate) fn decide_grant_lease(&self, at_ms: u64, site: SiteId, ttl_ms: u64) -> Result<Vec<Event>, Rejection> {
        if !self.site(site)?.active {
            return Err(Rejection::precondition("site", format!("site {site} is not active")));
        }
        // A lease already past due ends first: its users were unreachable until now.
        let mut events = match self.leases.get(&site) {
            Some(lease) if lease.expires_at_ms <= at_ms => self.lease_end_events(site, "expired"),
            _ => vec![],
        };
        events.push(Event::LeaseGranted { site, ttl_ms, expires_at_ms: at_ms + ttl_ms });
        Ok(events)
    }

    pub(crate) fn decide_keep_alive(&self, at_ms: u64, site: SiteId) -> Result<Vec<Event>, Rejection> {
        if !self.site(site)?.active {
            return Err(Rejection::precondition("site", format!("site {site} is not active")));
        }
        // A lease past its expiry is gone even before the Tick that ends it is applied.
        match self.leases.get(&site) {
            Some(lease) if lease.expires_at_ms > at_ms => {
                Ok(vec![Event::LeaseRenewed { site, expires_at_ms: at_ms + lease.ttl_ms }])
            }
            _ => Err(Rejection::NotFound { kind: "lease".into(), key: format!("site {site} (grant a new lease)") }),
        }
    }

    pub(crate) fn decide_revoke_lease(&self, site: SiteId) -> Result<Vec<Event>, Rejection> {
        self.site(site)?;
        if !self.leases.contains_key(&site) {
            return Err(Rejection::not_found("lease", format!("site {site}")));
        }
        Ok(self.lease_end_events(site, "revoked"))
    }

    /// Every live lease restarts its time to live (a new leader proposes this first, so an
    /// election never expires a healthy lease).
    pub(crate) fn decide_renew_leases(&self, at_ms: u64) -> Vec<Event> {
        // Only leases still live at the previous entry: one that expired under the old leader
        // (its Tick lost in the election) must not come back.
        self.leases
            .iter()
            .filter(|(_, lease)| lease.expires_at_ms > self.last_at_ms && lease.expires_at_ms < at_ms + lease.ttl_ms)
            .map(|(site, lease)| Event::LeaseRenewed { site: *site, expires_at_ms: at_ms + lease.ttl_ms })
            .collect()
    }

    /// Expiry: every lease whose deadline the entry time reached ends, logging off its site's users.
    pub(crate) fn lease_expiry_events(&self, at_ms: u64) -> Vec<Event> {
        self.leases
            .iter()
            .filter(|(_, lease)| lease.expires_at_ms <= at_ms)
            .flat_map(|(site, _)| self.lease_end_events(*site, "expired"))
            .collect()
    }

    /// The lease of `site` ends: every user logged on there is logged off as unreachable.
    pub(crate) fn lease_end_events(&self, site: SiteId, reason: &str) -> Vec<Event> {
        let mut events = vec![Event::LeaseEnded { site, reason: reason.to_string() }];
        for (user_key, presence) in &self.presence {
            if let Some(logon) = presence.logon.as_ref().filter(|logon| logon.site == site) {
                events.extend(self.logoff_events(
                    &self.users[user_key],
                    presence,
                    logon,
                    LOGOFF_REASON_SITE_UNREACHABLE,
                ));
            }
        }
        events
    }

    pub(crate) fn fold_lease(&mut self, event: &Event, at_ms: u64) {
        match event {
            Event::LeaseGranted { site, ttl_ms, expires_at_ms } => {
                self.leases
                    .insert(*site, Lease { ttl_ms: *ttl_ms, granted_at_ms: at_ms, expires_at_ms: *expires_at_ms });
            }
            Event::LeaseRenewed { site, expires_at_ms } => {
                if let Some(lease) = self.leases.get_mut(site) {
                    lease.expires_at_ms = *expires_at_ms;
                }
            }
            Event::LeaseEnded { site, .. } => {
                self.leases.remove(site);
            }
            _ => {}
        }
    }
}
