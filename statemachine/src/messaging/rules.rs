//! Message rules: send events and requests to one site or every other active site, acknowledge
//! deliveries, close and expire requests.

use super::{Delivery, Destination, Element, MessageKind, Messaging, OpenRequest};
use crate::limits::*;
use crate::rejection::Rejection;
use crate::site::SiteId;

impl crate::state::State {
    /// Decides a send: events for every destination, or why not (nothing is queued then).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn decide_send(
        &self,
        at_ms: u64,
        from_site: SiteId,
        to: Destination,
        object_id: &str,
        event_id: &str,
        kind: MessageKind,
        elements: &[Element],
    ) -> Result<Vec<crate::Event>, Rejection> {
        use crate::Event;
        self.site(from_site).map_err(|_| Rejection::not_found("site", format!("{from_site} (the sender)")))?;
        let bytes = Messaging::message_bytes(object_id, event_id, elements);
        let mut id = self.messaging.next_id();
        let delivery = |id: u64, to_site: SiteId, correlation_id: u64, response_destination: SiteId| Delivery {
            id,
            from_site,
            to_site,
            object_id: object_id.to_string(),
            event_id: event_id.to_string(),
            correlation_id,
            response_destination,
            elements: elements.to_vec(),
            sent_at_ms: at_ms,
            bytes,
        };
        let active_destination = |site: SiteId| -> Result<(), Rejection> {
            let target = self.site(site)?;
            if !target.active {
                return Err(Rejection::precondition("to", format!("site {site} is not active")));
            }
            Ok(())
        };
        match kind {
            MessageKind::Event => {
                let targets: Vec<SiteId> = match to {
                    Destination::Site(site) => {
                        active_destination(site)?;
                        vec![site]
                    }
                    Destination::AllOthers => {
                        let others: Vec<SiteId> =
                            self.sites.values().filter(|s| s.active && s.id != from_site).map(|s| s.id).collect();
                        if others.is_empty() {
                            return Err(Rejection::precondition("to", "no other site is active"));
                        }
                        others
                    }
                };
                for site in &targets {
                    self.messaging.check_room(*site, 1, bytes)?;
                }
                Ok(targets
                    .into_iter()
                    .map(|site| {
                        let event = Event::MessageQueued(delivery(id, site, 0, 0));
                        id += 1;
                        event
                    })
                    .collect())
            }
            MessageKind::Request { timeout_ms } => {
                let Destination::Site(site) = to else {
                    return Err(Rejection::invalid("to", "a request goes to one site, not *"));
                };
                active_destination(site)?;
                self.messaging.check_room(site, 1, bytes)?;
                let open = self.messaging.requests.values().filter(|r| r.from_site == from_site).count();
                if open >= OPEN_REQUESTS_PER_SITE_MAX {
                    return Err(Rejection::LimitReached {
                        what: format!("open requests from site {from_site}"),
                        limit: OPEN_REQUESTS_PER_SITE_MAX as u64,
                    });
                }
                // A request without a timeout still ends after REQUEST_TIMEOUT_MS_MAX: one whose
                // requester vanished (or never learnt its id) must not hold a slot forever.
                let lifetime = if timeout_ms == 0 { REQUEST_TIMEOUT_MS_MAX } else { timeout_ms };
                let expires_at_ms = Some(at_ms + lifetime + REQUEST_GRACE_MS);
                Ok(vec![
                    Event::MessageQueued(delivery(id, site, id, from_site)),
                    Event::RequestOpened { correlation_id: id, from_site, to_site: site, expires_at_ms },
                ])
            }
            MessageKind::Response { correlation_id } => {
                let Destination::Site(site) = to else {
                    return Err(Rejection::invalid("to", "a response goes to the request's response destination"));
                };
                let request = self
                    .messaging
                    .requests
                    .get(&correlation_id)
                    .filter(|request| request.expires_at_ms.is_none_or(|expires| at_ms < expires))
                    .ok_or_else(|| Rejection::not_found("request", correlation_id))?;
                if request.from_site != site {
                    return Err(Rejection::precondition(
                        "to",
                        format!(
                            "request {correlation_id} expects its response at site {}, not {site}",
                            request.from_site
                        ),
                    ));
                }
                if request.to_site != from_site {
                    return Err(Rejection::precondition(
                        "from_site",
                        format!("request {correlation_id} was sent to site {}, not {from_site}", request.to_site),
                    ));
                }
                if request.response.is_some() {
                    return Err(Rejection::exists("response", "correlation id", correlation_id));
                }
                Ok(vec![Event::ResponseArrived(delivery(id, site, correlation_id, 0))])
            }
        }
    }

    /// Acknowledged ids still queued leave the queue; others (already acknowledged) are ignored,
    /// so acknowledging twice is harmless.
    pub(crate) fn decide_ack(&self, site: SiteId, ids: &[u64]) -> Result<Vec<crate::Event>, Rejection> {
        self.site(site)?;
        let Some(queue) = self.messaging.queues.get(&site) else { return Ok(vec![]) };
        let wanted: std::collections::BTreeSet<u64> = ids.iter().copied().collect();
        let present: Vec<u64> = queue.deliveries.iter().map(|d| d.id).filter(|id| wanted.contains(id)).collect();
        if present.is_empty() {
            return Ok(vec![]);
        }
        Ok(vec![crate::Event::MessagesAcked { site, ids: present }])
    }

    /// Requests whose deadline the entry time reached.
    pub(crate) fn request_expiry_events(&self, at_ms: u64) -> Vec<crate::Event> {
        self.messaging
            .requests
            .iter()
            .filter(|(_, request)| request.expires_at_ms.is_some_and(|expires| expires <= at_ms))
            .map(|(id, _)| crate::Event::RequestClosed { correlation_id: *id, reason: "expired".into() })
            .collect()
    }

    pub(crate) fn decide_close_request(
        &self,
        correlation_id: u64,
        reason: &str,
    ) -> Result<Vec<crate::Event>, Rejection> {
        if !self.messaging.requests.contains_key(&correlation_id) {
            return Err(Rejection::not_found("request", correlation_id));
        }
        Ok(vec![crate::Event::RequestClosed { correlation_id, reason: reason.to_string() }])
    }

    pub(crate) fn fold_messaging(&mut self, event: &crate::Event) {
        use crate::Event;
        let messaging = &mut self.messaging;
        match event {
            Event::MessageQueued(delivery) => {
                messaging.next_id = delivery.id + 1;
                let queue = messaging.queues.entry(delivery.to_site).or_default();
                queue.bytes += delivery.bytes;
                queue.deliveries.push_back(delivery.clone());
            }
            Event::MessagesAcked { site, ids } => {
                if let Some(queue) = messaging.queues.get_mut(site) {
                    let acked: std::collections::BTreeSet<u64> = ids.iter().copied().collect();
                    queue.deliveries.retain(|d| !acked.contains(&d.id));
                    queue.bytes = queue.deliveries.iter().map(|d| d.bytes).sum();
                    if queue.deliveries.is_empty() {
                        messaging.queues.remove(site);
                    }
                }
            }
            Event::RequestOpened { correlation_id, from_site, to_site, expires_at_ms } => {
                messaging.requests.insert(
                    *correlation_id,
                    OpenRequest {
                        from_site: *from_site,
                        to_site: *to_site,
                        expires_at_ms: *expires_at_ms,
                        response: None,
                    },
                );
            }
            Event::ResponseArrived(delivery) => {
                messaging.next_id = delivery.id + 1;
                if let Some(request) = messaging.requests.get_mut(&delivery.correlation_id) {
                    request.response = Some(delivery.clone());
                }
            }
            Event::RequestClosed { correlation_id, .. } => {
                messaging.requests.remove(correlation_id);
            }
            Event::QueueLimitsSet(limits) => messaging.limits = *limits,
            _ => {}
        }
    }

    /// Queues, notes and requests follow a renumbered site.
    pub(crate) fn messaging_site_id_changed(&mut self, old: SiteId, new: SiteId) {
        let messaging = &mut self.messaging;
        if let Some(mut queue) = messaging.queues.remove(&old) {
            for delivery in &mut queue.deliveries {
                delivery.to_site = new;
            }
            messaging.queues.insert(new, queue);
        }
        for delivery in messaging.queues.values_mut().flat_map(|q| q.deliveries.iter_mut()) {
            if delivery.from_site == old {
                delivery.from_site = new;
            }
            if delivery.response_destination == old {
                delivery.response_destination = new;
            }
        }
        for request in messaging.requests.values_mut() {
            if request.from_site == old {
                request.from_site = new;
            }
            if request.to_site == old {
                request.to_site = new;
            }
            if let Some(response) = &mut request.response {
                if response.from_site == old {
                    response.from_site = new;
                }
                if response.to_site == old {
                    response.to_site = new;
                }
            }
        }
        messaging.notes.site_id_changed(old, new);
    }

    /// Messaging invariants: queue byte counts match, ids increase within a queue and are below
    /// `next_id`, every request's queue site exists.
    pub(crate) fn check_messaging_invariants(&self) {
        for (site, queue) in &self.messaging.queues {
            assert!(!queue.deliveries.is_empty(), "site {site} keeps an empty queue");
            assert_eq!(queue.bytes, queue.deliveries.iter().map(|d| d.bytes).sum::<u64>(), "site {site} queue bytes");
            let mut last = 0;
            for delivery in &queue.deliveries {
                assert!(delivery.id > last, "site {site} queue out of id order at {}", delivery.id);
                assert!(delivery.id < self.messaging.next_id(), "delivery {} at or past next_id", delivery.id);
                assert_eq!(delivery.to_site, *site, "delivery {} queued at the wrong site", delivery.id);
                last = delivery.id;
            }
        }
        for (id, request) in &self.messaging.requests {
            assert!(*id < self.messaging.next_id(), "request {id} at or past next_id");
            if let Some(response) = &request.response {
                assert_eq!(response.correlation_id, *id, "request {id} holds another request's response");
            }
        }
    }
}
