//! Notes (the vendor's IpNotes): named records of typed list attributes, scoped to a site, with
//! an optional time to live. An expired note is gone for every command at or after its deadline,
//! and the next `Tick` removes it. A note also travels by value inside a message
//! (`messaging.rs`'s `Element::Note`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::limits::*;
use crate::rejection::Rejection;
use crate::site::SiteId;
use crate::user::key_of;

mod rules;

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
