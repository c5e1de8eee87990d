//! Inter-site messages (Multi-Site RTM): the replicated part.
//!
//! A message is an ordered list of typed [`Element`]s. Sending one queues a [`Delivery`] in the
//! destination site's durable queue (bounded in count and bytes); the site receives deliveries in
//! id order and acknowledges them, which removes them. A request opens an [`OpenRequest`] whose
//! correlation id is the request's message id; the response is kept there until the requester
//! takes it (or the request expires). Notes, which messages may carry, are `notes.rs`.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::limits::*;
use crate::notes::Notes;
use crate::rejection::Rejection;
// A message element can carry a note by value; its types are the notes' own.
pub use crate::notes::{Attribute, NoteValue, UpdateOp};
use crate::site::SiteId;

mod rules;

/// One typed element of a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Element {
    /// A 64-bit integer.
    Integer(i64),
    /// UTF-8 text.
    String(String),
    /// A note carried by value.
    Note(NoteValue),
}

impl Element {
    /// Bytes the element counts for in queue limits.
    pub fn bytes(&self) -> u64 {
        match self {
            Element::Integer(_) => 8,
            Element::String(text) => text.len() as u64,
            Element::Note(note) => note.bytes(),
        }
    }
}

/// Where a message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Destination {
    /// One site.
    Site(SiteId),
    /// Every other active site (`*`).
    AllOthers,
}

/// What a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageKind {
    /// No response expected.
    Event,
    /// A response is expected within `timeout_ms` (0: the requester sets no limit, but the
    /// request leaves the state after `REQUEST_TIMEOUT_MS_MAX`); the request's message id is its
    /// correlation id.
    Request {
        /// How long the requester waits.
        timeout_ms: u64,
    },
    /// The answer to the request with this correlation id.
    Response {
        /// The request's correlation id.
        correlation_id: u64,
    },
}

/// A queued message, as its destination site receives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// Collective-wide message id, increasing: a site receives its deliveries in id order.
    pub id: u64,
    /// Sending site.
    pub from_site: SiteId,
    /// Receiving site.
    pub to_site: SiteId,
    /// Selects the receiving handlers, with `event_id`.
    pub object_id: String,
    /// Selects the receiving handlers, with `object_id`.
    pub event_id: String,
    /// 0 for events; the request's id for requests and responses.
    pub correlation_id: u64,
    /// Where a response goes (the requesting site); 0 for events and responses.
    pub response_destination: SiteId,
    /// The elements, in order.
    pub elements: Vec<Element>,
    /// Entry time of the send.
    pub sent_at_ms: u64,
    /// Bytes counted against the queue's limit.
    pub bytes: u64,
}

/// One site's queue of unacknowledged deliveries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteQueue {
    /// Deliveries in id order.
    pub deliveries: VecDeque<Delivery>,
    /// Sum of their bytes.
    pub bytes: u64,
}

/// A request waiting for its response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenRequest {
    /// The requesting site (the response destination).
    pub from_site: SiteId,
    /// The site asked.
    pub to_site: SiteId,
    /// Entry time after which the request is gone (`None`: it waits until closed).
    pub expires_at_ms: Option<u64>,
    /// The response, once it arrived.
    pub response: Option<Delivery>,
}

/// Queue bounds per site (replicated, so every replica enforces the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueLimits {
    /// Most queued deliveries per site.
    pub messages: u64,
    /// Most queued bytes per site.
    pub bytes: u64,
}

impl Default for QueueLimits {
    fn default() -> Self {
        QueueLimits { messages: SITE_QUEUE_MESSAGES_DEFAULT, bytes: SITE_QUEUE_BYTES_DEFAULT }
    }
}

/// Messages, requests and notes of the collective.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Messaging {
    /// The next message id (ids start at 1).
    pub next_id: u64,
    /// Queues by destination site (absent: empty).
    pub queues: BTreeMap<SiteId, SiteQueue>,
    /// Open requests by correlation id.
    pub requests: BTreeMap<u64, OpenRequest>,
    /// Queue bounds.
    pub limits: QueueLimits,
    /// Notes by site, then lowercase name (`notes.rs`).
    pub notes: Notes,
}

impl Messaging {
    /// The next message id to assign.
    pub fn next_id(&self) -> u64 {
        self.next_id.max(1)
    }

    /// Bytes a message with these fields counts for.
    pub fn message_bytes(object_id: &str, event_id: &str, elements: &[Element]) -> u64 {
        object_id.len() as u64 + event_id.len() as u64 + elements.iter().map(Element::bytes).sum::<u64>()
    }

    /// Whether `site`'s queue takes `count` more deliveries of `bytes` each.
    pub fn check_room(&self, site: SiteId, count: u64, bytes: u64) -> Result<(), Rejection> {
        let (queued, queued_bytes) =
            self.queues.get(&site).map(|q| (q.deliveries.len() as u64, q.bytes)).unwrap_or((0, 0));
        if queued + count > self.limits.messages {
            return Err(Rejection::LimitReached {
                what: format!("queued messages for site {site}"),
                limit: self.limits.messages,
            });
        }
        if queued_bytes + bytes > self.limits.bytes {
            return Err(Rejection::LimitReached {
                what: format!("queued message bytes for site {site}"),
                limit: self.limits.bytes,
            });
        }
        Ok(())
    }

    /// The live note `name` of `site` at entry time `at_ms` (`Notes::note`).
    pub fn note(&self, site: SiteId, name: &str, at_ms: u64) -> Result<&crate::notes::Note, Rejection> {
        self.notes.note(site, name, at_ms)
    }

    /// The earliest deadline of a note or request, if any.
    pub fn next_expiry_ms(&self) -> Option<u64> {
        let requests = self.requests.values().filter_map(|request| request.expires_at_ms);
        self.notes.next_expiry_ms().into_iter().chain(requests).min()
    }
}
