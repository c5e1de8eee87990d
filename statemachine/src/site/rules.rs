//! Site rules: add, update, activate and renumber a site (every reference to the old id follows
//! in one fold).

use super::{Site, SiteId, NOTE_ID_DIAL_STRING_DEFAULT};
use crate::command::SiteSpec;
use crate::event::Event;
use crate::limits::SITES_MAX;
use crate::rejection::Rejection;
use crate::state::State;
use crate::user::key_of;
use crate::validate::normalize_phone;

impl State {
    pub(crate) fn decide_add_site(&self, spec: &SiteSpec) -> Result<Vec<Event>, Rejection> {
        if self.sites.contains_key(&spec.id) {
            return Err(Rejection::exists("site", "id", spec.id));
        }
        if let Some(other) = self.site_names.get(&key_of(&spec.name)) {
            return Err(Rejection::AlreadyExists {
                kind: "site".into(),
                field: "name".into(),
                key: format!("{} (site {other})", spec.name),
            });
        }
        if self.sites.len() >= SITES_MAX {
            return Err(Rejection::LimitReached { what: "sites".into(), limit: SITES_MAX as u64 });
        }
        Ok(vec![Event::SiteAdded(self.site_from_spec(spec)?)])
    }

    pub(crate) fn site_from_spec(&self, spec: &SiteSpec) -> Result<Site, Rejection> {
        Ok(Site {
            id: spec.id,
            name: spec.name.clone(),
            phone: normalize_phone(&spec.phone)?,
            password_hash: spec.password_hash.clone(),
            note_id_dial_string: if spec.note_id_dial_string.is_empty() {
                NOTE_ID_DIAL_STRING_DEFAULT.to_string()
            } else {
                spec.note_id_dial_string.clone()
            },
            active: spec.active,
            servers: spec.servers.clone(),
            trusted_access: spec.trusted_access,
        })
    }

    pub(crate) fn decide_update_site(&self, spec: &SiteSpec) -> Result<Vec<Event>, Rejection> {
        let current = self.site(spec.id)?;
        if let Some(other) = self.site_names.get(&key_of(&spec.name)).filter(|other| **other != spec.id) {
            return Err(Rejection::AlreadyExists {
                kind: "site".into(),
                field: "name".into(),
                key: format!("{} (site {other})", spec.name),
            });
        }
        let mut site = self.site_from_spec(spec)?;
        if spec.password_hash.is_empty() {
            site.password_hash = current.password_hash.clone();
        }
        if site == *current {
            return Ok(vec![]);
        }
        Ok(vec![Event::SiteUpdated(site)])
    }

    pub(crate) fn decide_set_site_active(&self, site: SiteId, active: bool) -> Result<Vec<Event>, Rejection> {
        let current = self.site(site)?;
        if current.active == active {
            return Ok(vec![]);
        }
        Ok(vec![Event::SiteActiveChanged { site, active }])
    }

    pub(crate) fn decide_change_site_id(&self, old: SiteId, new: SiteId) -> Result<Vec<Event>, Rejection> {
        self.site(old)?;
        if self.sites.contains_key(&new) {
            return Err(Rejection::exists("site", "id", new));
        }
        Ok(vec![Event::SiteIdChanged { old, new }])
    }

    pub(crate) fn fold_site(&mut self, event: &Event) {
        match event {
            Event::SiteAdded(site) => {
                self.site_names.insert(key_of(&site.name), site.id);
                self.sites.insert(site.id, site.clone());
            }
            Event::SiteActiveChanged { site, active } => {
                if let Some(site) = self.sites.get_mut(site) {
                    site.active = *active;
                }
            }
            Event::SiteUpdated(site) => {
                if let Some(old) = self.sites.insert(site.id, site.clone()) {
                    self.site_names.remove(&key_of(&old.name));
                }
                self.site_names.insert(key_of(&site.name), site.id);
            }
            Event::SiteIdChanged { old, new } => self.fold_site_id_changed(*old, *new),
            _ => {}
        }
    }

    /// Rewrites every reference to site `old` (the site itself, its name index, users' home and
    /// current site, its lease) to `new`, in one fold: readers never see half of it.
    fn fold_site_id_changed(&mut self, old: SiteId, new: SiteId) {
        if let Some(mut site) = self.sites.remove(&old) {
            site.id = new;
            self.site_names.insert(key_of(&site.name), new);
            self.sites.insert(new, site);
        }
        self.users.for_each_value_mut(|user| {
            if user.home_site == old {
                user.home_site = new;
            }
        });
        self.presence.for_each_value_mut(|presence| {
            if let Some(logon) = presence.logon.as_mut().filter(|logon| logon.site == old) {
                logon.site = new;
            }
        });
        if let Some(lease) = self.leases.remove(&old) {
            self.leases.insert(new, lease);
        }
        self.messaging_site_id_changed(old, new);
        self.routing_site_id_changed(old, new);
    }
}
