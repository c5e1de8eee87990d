//! Note rules: create a note, update an attribute, remove it, expire it.

use super::{Attribute, Note, NoteValue, Notes, UpdateOp};
use crate::event::Event;
use crate::limits::*;
use crate::rejection::Rejection;
use crate::site::SiteId;
use crate::state::State;
use crate::user::key_of;
use std::collections::BTreeMap;

impl State {
    pub(crate) fn decide_create_note(
        &self,
        at_ms: u64,
        site: SiteId,
        name: &str,
        ttl_minutes: Option<u32>,
    ) -> Result<Vec<Event>, Rejection> {
        self.site(site)?;
        if self.messaging.notes.note(site, name, at_ms).is_ok() {
            return Err(Rejection::exists("note", "name", format!("{name} at site {site}")));
        }
        if self.messaging.notes.live(site, at_ms).count() >= NOTES_PER_SITE_MAX {
            return Err(Rejection::LimitReached {
                what: format!("notes at site {site}"),
                limit: NOTES_PER_SITE_MAX as u64,
            });
        }
        let expires_at_ms = ttl_minutes.map(|minutes| at_ms + u64::from(minutes) * 60_000);
        Ok(vec![Event::NoteCreated { site, name: name.to_string(), expires_at_ms }])
    }

    pub(crate) fn decide_update_note_attribute(
        &self,
        at_ms: u64,
        site: SiteId,
        name: &str,
        attribute: &str,
        op: UpdateOp,
        values: &Attribute,
    ) -> Result<Vec<Event>, Rejection> {
        let note = self.messaging.notes.note(site, name, at_ms)?;
        if !note.value.attributes.contains_key(attribute) && note.value.attributes.len() >= NOTE_ATTRIBUTES_MAX {
            return Err(Rejection::LimitReached {
                what: format!("attributes of note {name}"),
                limit: NOTE_ATTRIBUTES_MAX as u64,
            });
        }
        let value = Notes::updated_attribute(note, attribute, op, values)?;
        Ok(vec![Event::NoteAttributeUpdated {
            site,
            name: note.value.name.clone(),
            attribute: attribute.to_string(),
            value,
        }])
    }

    pub(crate) fn decide_remove_note(&self, at_ms: u64, site: SiteId, name: &str) -> Result<Vec<Event>, Rejection> {
        let note = self.messaging.notes.note(site, name, at_ms)?;
        Ok(vec![Event::NoteRemoved { site, name: note.value.name.clone(), reason: "removed".into() }])
    }

    /// Notes whose deadline the entry time reached.
    pub(crate) fn note_expiry_events(&self, at_ms: u64) -> Vec<Event> {
        self.messaging
            .notes
            .iter()
            .flat_map(|(site, notes)| {
                notes.values().filter(move |note| !note.live_at(at_ms)).map(move |note| Event::NoteRemoved {
                    site: *site,
                    name: note.value.name.clone(),
                    reason: "expired".into(),
                })
            })
            .collect()
    }

    pub(crate) fn fold_note(&mut self, event: &Event) {
        match event {
            Event::NoteCreated { site, name, expires_at_ms } => {
                let note = Note {
                    value: NoteValue { name: name.clone(), attributes: BTreeMap::new() },
                    expires_at_ms: *expires_at_ms,
                };
                self.messaging.notes.0.entry(*site).or_default().insert(key_of(name), note);
            }
            Event::NoteAttributeUpdated { site, name, attribute, value } => {
                if let Some(note) = self.messaging.notes.0.get_mut(site).and_then(|n| n.get_mut(&key_of(name))) {
                    note.value.attributes.insert(attribute.clone(), value.clone());
                }
            }
            Event::NoteRemoved { site, name, .. } => {
                if let Some(notes) = self.messaging.notes.0.get_mut(site) {
                    notes.remove(&key_of(name));
                    if notes.is_empty() {
                        self.messaging.notes.0.remove(site);
                    }
                }
            }
            _ => {}
        }
    }
}
