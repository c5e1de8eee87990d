//! Notes (the vendor's IpNotes): named records of typed list attributes, scoped to a site, with
//! an optional time to live. An expired note is gone for every command at or after its deadline,
//! and the next `Tick` removes it. A note also travels by value inside a message
//! (`messaging.rs`'s `Element::Note`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::event::Event;
use crate::limits::*;
use crate::rejection::Rejection;
use crate::site::SiteId;
use crate::state::State;
use crate::user::key_of;

/// A note's name and attributes (in a message, or as stored).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoteValue {
    /// The note's name.
    pub name: String,
    /// Attributes by name.
    pub attributes: BTreeMap<String, Attribute>,
}

impl NoteValue {
    /// Bytes the note counts for in queue limits.
    pub fn bytes(&self) -> u64 {
        self.name.len() as u64
            + self.attributes.iter().map(|(name, value)| name.len() as u64 + value.bytes()).sum::<u64>()
    }
}

/// A typed list attribute of a note.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Attribute {
    /// Integers.
    Integer(Vec<i64>),
    /// Strings.
    String(Vec<String>),
    /// Date/times, ms since the Unix epoch.
    DateTime(Vec<i64>),
}

impl Attribute {
    /// `Integer`, `String` or `DateTime`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Attribute::Integer(_) => "Integer",
            Attribute::String(_) => "String",
            Attribute::DateTime(_) => "DateTime",
        }
    }

    /// Values in the list.
    pub fn len(&self) -> usize {
        match self {
            Attribute::Integer(values) | Attribute::DateTime(values) => values.len(),
            Attribute::String(values) => values.len(),
        }
    }

    /// True for an empty list.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn bytes(&self) -> u64 {
        match self {
            Attribute::Integer(values) | Attribute::DateTime(values) => 8 * values.len() as u64,
            Attribute::String(values) => values.iter().map(|v| v.len() as u64).sum(),
        }
    }

    /// `self` with `other`'s values appended, or without them (every occurrence) when
    /// `remove`; `None` if the types differ.
    fn combine(&self, other: &Attribute, remove: bool) -> Option<Attribute> {
        fn merge<T: Clone + PartialEq>(mine: &[T], theirs: &[T], remove: bool) -> Vec<T> {
            if remove {
                mine.iter().filter(|v| !theirs.contains(v)).cloned().collect()
            } else {
                mine.iter().chain(theirs).cloned().collect()
            }
        }
        Some(match (self, other) {
            (Attribute::Integer(a), Attribute::Integer(b)) => Attribute::Integer(merge(a, b, remove)),
            (Attribute::String(a), Attribute::String(b)) => Attribute::String(merge(a, b, remove)),
            (Attribute::DateTime(a), Attribute::DateTime(b)) => Attribute::DateTime(merge(a, b, remove)),
            _ => return None,
        })
    }
}

/// How an attribute update changes the attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UpdateOp {
    /// Add the values at the end (the attribute must exist, with the same type).
    Append,
    /// Replace the whole list (creates the attribute).
    Replace,
    /// Remove every occurrence of the values (the attribute must exist, with the same type).
    Remove,
}

/// A stored note.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    /// Name and attributes.
    pub value: NoteValue,
    /// Entry time at and after which the note is gone (`None`: no time to live).
    pub expires_at_ms: Option<u64>,
}

impl Note {
    /// Whether the note still exists at entry time `at_ms`.
    pub fn live_at(&self, at_ms: u64) -> bool {
        self.expires_at_ms.is_none_or(|expires| at_ms < expires)
    }
}

/// Every site's notes: site → lowercase name → note.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Notes(BTreeMap<SiteId, BTreeMap<String, Note>>);

impl Notes {
    /// The live note `name` of `site` at entry time `at_ms`.
    pub fn note(&self, site: SiteId, name: &str, at_ms: u64) -> Result<&Note, Rejection> {
        self.0
            .get(&site)
            .and_then(|notes| notes.get(&key_of(name)))
            .filter(|note| note.live_at(at_ms))
            .ok_or_else(|| Rejection::not_found("note", format!("{name} at site {site}")))
    }

    /// Live notes of `site` at entry time `at_ms`.
    pub fn live(&self, site: SiteId, at_ms: u64) -> impl Iterator<Item = &Note> {
        self.0.get(&site).into_iter().flat_map(|notes| notes.values()).filter(move |note| note.live_at(at_ms))
    }

    /// The attribute update's result: the attribute's new value.
    pub fn updated_attribute(
        note: &Note,
        attribute: &str,
        op: UpdateOp,
        values: &Attribute,
    ) -> Result<Attribute, Rejection> {
        let existing = note.value.attributes.get(attribute);
        let updated = match (op, existing) {
            (UpdateOp::Replace, _) => values.clone(),
            (_, None) => {
                return Err(Rejection::not_found("attribute", format!("{attribute} of note {}", note.value.name)));
            }
            (UpdateOp::Append | UpdateOp::Remove, Some(existing)) => {
                existing.combine(values, op == UpdateOp::Remove).ok_or_else(|| {
                    Rejection::precondition(
                        "attribute",
                        format!(
                            "{attribute} of note {} holds {} values, not {}",
                            note.value.name,
                            existing.type_name(),
                            values.type_name()
                        ),
                    )
                })?
            }
        };
        if updated.len() > NOTE_ATTRIBUTE_VALUES_MAX {
            return Err(Rejection::LimitReached {
                what: format!("values in attribute {attribute}"),
                limit: NOTE_ATTRIBUTE_VALUES_MAX as u64,
            });
        }
        Ok(updated)
    }

    /// Every site's notes, live or not, by site.
    pub fn iter(&self) -> impl Iterator<Item = (&SiteId, &BTreeMap<String, Note>)> {
        self.0.iter()
    }

    /// Whether no site keeps a note.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The earliest deadline of a note, if any.
    pub fn next_expiry_ms(&self) -> Option<u64> {
        self.0.values().flat_map(|notes| notes.values()).filter_map(|note| note.expires_at_ms).min()
    }

    /// A renumbered site keeps its notes.
    pub(crate) fn site_id_changed(&mut self, old: SiteId, new: SiteId) {
        if let Some(notes) = self.0.remove(&old) {
            self.0.insert(new, notes);
        }
    }
}

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
