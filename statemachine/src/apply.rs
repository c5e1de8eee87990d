//! `apply`: how a stamped command becomes numbered events. Each command is validated
//! (`validate.rs`), authorised (`authorize.rs`), *decided* (state read, rules checked, events
//! produced, nothing changed) and each event *folded* into the views; a rejected command
//! therefore changes nothing. After a command's own events, the routing pass (`routing.rs`)
//! places what the change set in motion, in the same entry.
//!
//! This file only dispatches: each command's decision and each event's fold live in the rules of
//! the concept they belong to (`site/rules.rs`, `user/rules.rs`, `workgroup/rules.rs`,
//! `catalog/rules.rs`, `presence/rules.rs`, `lease/rules.rs`, `messaging/rules.rs`,
//! `notes/rules.rs`, `routing/rules.rs`, `config/rules.rs`, `source/rules.rs`, `alert/rules.rs`).

use crate::command::{Batch, Command, Envelope, Principal};
use crate::event::{Event, EventRecord};
use crate::rejection::Rejection;
use crate::state::State;
use crate::validate::validate;

impl State {
    /// Applies one stamped command: the events it produced, numbered, or why it was refused.
    pub fn apply(&mut self, envelope: &Envelope) -> Result<Vec<EventRecord>, Rejection> {
        self.apply_command(envelope.at_ms, &envelope.principal, &envelope.command)
    }

    /// Applies every command of a log entry in order; each has its own outcome, and a rejected
    /// one does not affect the others.
    pub fn apply_batch(&mut self, batch: &Batch) -> Vec<Result<Vec<EventRecord>, Rejection>> {
        batch
            .proposals
            .iter()
            .map(|proposal| self.apply_command(batch.at_ms, &proposal.principal, &proposal.command))
            .collect()
    }

    fn apply_command(
        &mut self,
        at_ms: u64,
        principal: &Principal,
        command: &Command,
    ) -> Result<Vec<EventRecord>, Rejection> {
        // Entry time never goes backwards in the state, even if a new leader's clock is behind
        // or concurrent batches commit out of stamp order.
        let at_ms = at_ms.max(self.last_at_ms);
        validate(command)?;
        self.authorize(principal, command)?;
        let events = self.decide(at_ms, command)?;
        let mut records = Vec::with_capacity(events.len());
        let mut record = |state: &mut State, event: Event| {
            state.revision += 1;
            state.fold(&event, at_ms);
            records.push(EventRecord { revision: state.revision, at_ms, principal: principal.clone(), event });
        };
        for event in events {
            record(self, event);
        }
        // Routing decisions the command set in motion (reservations, queues served) follow
        // its own events in the same entry.
        self.route_pending(at_ms, &mut record);
        // A Tick evaluates the alert rules last, on the state it leaves (a lease it ended counts).
        if matches!(command, Command::Tick) {
            for event in self.alert_events(at_ms) {
                record(self, event);
            }
        }
        self.last_at_ms = at_ms;
        Ok(records)
    }

    /// One step of an import on a scratch copy: the command's events, folded, without the
    /// routing pass (the real entry runs it once, after all the steps).
    pub(crate) fn apply_step(&mut self, at_ms: u64, command: &Command) -> Result<Vec<Event>, Rejection> {
        validate(command)?;
        let events = self.decide(at_ms, command)?;
        for event in &events {
            self.revision += 1;
            self.fold(event, at_ms);
        }
        Ok(events)
    }

    /// The events `command` produces at entry time `at_ms`, or why it is refused.
    fn decide(&self, at_ms: u64, command: &Command) -> Result<Vec<Event>, Rejection> {
        match command {
            Command::AddSite(spec) => self.decide_add_site(spec),
            Command::UpdateSite(spec) => self.decide_update_site(spec),
            Command::SetSiteActive { site, active } => self.decide_set_site_active(*site, *active),
            Command::ChangeSiteId { old, new } => self.decide_change_site_id(*old, *new),
            Command::AddUser(spec) => self.decide_add_user(spec),
            Command::UpdateUser(spec) => self.decide_update_user(spec),
            Command::DeleteUser { username } => self.decide_delete_user(username),
            Command::AddWorkgroup { name, spans_sites, required_skills } => {
                self.decide_add_workgroup(name, *spans_sites, required_skills)
            }
            Command::DeleteWorkgroup { name } => self.decide_delete_workgroup(name),
            Command::AddWorkgroupMember { workgroup, username } => {
                self.decide_add_workgroup_member(workgroup, username)
            }
            Command::RemoveWorkgroupMember { workgroup, username } => {
                self.decide_remove_workgroup_member(workgroup, username)
            }
            Command::PutStatusDef(def) => self.decide_put_status_def(def),
            Command::SetStatus { username, status_key, until_ms, detail } => {
                self.decide_set_status(at_ms, username, status_key, *until_ms, detail)
            }
            Command::LogOn { username, site, server } => self.decide_log_on(username, *site, server),
            Command::LogOff { username, reason } => self.decide_log_off(username, reason),
            Command::StartInteraction { username, interaction_id } => {
                self.decide_start_interaction(username, interaction_id)
            }
            Command::EndInteraction { username, interaction_id } => {
                self.decide_end_interaction(username, interaction_id)
            }
            Command::GrantLease { site, ttl_ms } => self.decide_grant_lease(at_ms, *site, *ttl_ms),
            Command::KeepAlive { site } => self.decide_keep_alive(at_ms, *site),
            Command::RevokeLease { site } => self.decide_revoke_lease(*site),
            Command::RenewLeases => Ok(self.decide_renew_leases(at_ms)),
            Command::Tick => Ok(self.decide_tick(at_ms)),
            Command::RecordAuthFailure { member, site, source } => {
                Ok(vec![Event::AuthenticationFailed { member: *member, site: *site, source: source.clone() }])
            }
            Command::SendMessage { from_site, to, object_id, event_id, kind, elements } => {
                self.decide_send(at_ms, *from_site, *to, object_id, event_id, *kind, elements)
            }
            Command::AckMessages { site, ids } => self.decide_ack(*site, ids),
            Command::CloseRequest { correlation_id, reason } => self.decide_close_request(*correlation_id, reason),
            Command::SetQueueLimits(limits) => Ok(vec![Event::QueueLimitsSet(*limits)]),
            Command::CreateNote { site, name, ttl_minutes } => {
                self.decide_create_note(at_ms, *site, name, *ttl_minutes)
            }
            Command::UpdateNoteAttribute { site, name, attribute, op, values } => {
                self.decide_update_note_attribute(at_ms, *site, name, attribute, *op, values)
            }
            Command::RemoveNote { site, name } => self.decide_remove_note(at_ms, *site, name),
            Command::RouteInteraction(request) => self.decide_route(at_ms, request),
            Command::AcceptInteraction { interaction_id, agent } => {
                self.decide_accept(at_ms, interaction_id, agent.as_deref())
            }
            Command::RejectInteraction { interaction_id, agent, not_answering } => {
                self.decide_reject(at_ms, interaction_id, agent.as_deref(), *not_answering)
            }
            Command::CancelInteraction { interaction_id } => self.decide_cancel(interaction_id),
            Command::SetRoutingSettings { workgroup, settings } => self.decide_routing_settings(workgroup, settings),
            Command::SetRouteCost { from, to, cost } => self.decide_route_cost(*from, *to, *cost),
            Command::StageImport { import_id, part, config } => self.decide_stage_import(import_id, *part, config),
            Command::CommitImport { import_id, parts, mode } => {
                self.decide_commit_import(at_ms, import_id, *parts, *mode)
            }
            Command::AbortImport { import_id } => self.decide_abort_import(import_id),
            Command::SetSource { settings, next_poll_ms } => self.decide_set_source(at_ms, settings, *next_poll_ms),
            Command::RemoveSource => self.decide_remove_source(),
            Command::PollSourceNow => self.decide_poll_source_now(at_ms),
            Command::StartSourcePoll { term } => self.decide_start_source_poll(*term),
            Command::SourceStep { term, step } => self.decide_source_step(*term, step),
            Command::FinishSourcePoll { term, report } => self.decide_finish_source_poll(at_ms, *term, report),
            Command::PutAlertRule(rule) => self.decide_put_alert_rule(rule),
            Command::RemoveAlertRule { name } => self.decide_remove_alert_rule(name),
            Command::AlertsDelivered { up_to } => self.decide_alerts_delivered(*up_to),
        }
    }

    /// What a `Tick` at `at_ms` ends: expired leases, notes, requests, reservations and staged
    /// imports, and overdue statuses.
    fn decide_tick(&self, at_ms: u64) -> Vec<Event> {
        let mut events = self.lease_expiry_events(at_ms);
        events.extend(self.note_expiry_events(at_ms));
        events.extend(self.request_expiry_events(at_ms));
        events.extend(self.reservation_expiry_events(at_ms));
        events.extend(self.import_expiry_events(at_ms));
        events.extend(self.overdue_events(at_ms));
        events
    }

    /// Folds one event into the views. Events are facts: folding never fails.
    fn fold(&mut self, event: &Event, at_ms: u64) {
        match event {
            Event::SiteAdded(_)
            | Event::SiteUpdated(_)
            | Event::SiteActiveChanged { .. }
            | Event::SiteIdChanged { .. } => self.fold_site(event),
            Event::UserAdded(_) | Event::UserUpdated(_) | Event::UserDeleted { .. } => self.fold_user(event, at_ms),
            Event::WorkgroupAdded(_)
            | Event::WorkgroupDeleted { .. }
            | Event::UserAddedToWorkgroup { .. }
            | Event::UserRemovedFromWorkgroup { .. }
            | Event::UserStartedSpanning { .. }
            | Event::UserStoppedSpanning { .. } => self.fold_workgroup(event),
            Event::StatusDefined(def) => self.fold_status_defined(def),
            Event::StatusChanged { .. }
            | Event::StatusOverdue { .. }
            | Event::UserLoggedOn { .. }
            | Event::UserLoggedOff { .. }
            | Event::InteractionStarted { .. }
            | Event::InteractionEnded { .. } => self.fold_presence(event, at_ms),
            Event::LeaseGranted { .. } | Event::LeaseRenewed { .. } | Event::LeaseEnded { .. } => {
                self.fold_lease(event, at_ms)
            }
            Event::MessageQueued(_)
            | Event::MessagesAcked { .. }
            | Event::RequestOpened { .. }
            | Event::ResponseArrived(_)
            | Event::RequestClosed { .. }
            | Event::QueueLimitsSet(_) => self.fold_messaging(event),
            Event::NoteCreated { .. } | Event::NoteAttributeUpdated { .. } | Event::NoteRemoved { .. } => {
                self.fold_note(event)
            }
            Event::InteractionArrived(_)
            | Event::AgentReserved { .. }
            | Event::InteractionQueued { .. }
            | Event::ReservationAccepted { .. }
            | Event::ReservationReleased { .. }
            | Event::InteractionCancelled { .. }
            | Event::RoutingSettingsSet { .. }
            | Event::RouteCostSet { .. } => self.fold_routing(event, at_ms),
            Event::ImportPartStaged { .. } | Event::ConfigImported { .. } | Event::ImportDiscarded { .. } => {
                self.fold_import(event, at_ms)
            }
            Event::SourceSet { .. }
            | Event::SourceRemoved
            | Event::SourcePollDue { .. }
            | Event::SourcePollStarted { .. }
            | Event::SourceClaimed { .. }
            | Event::UserDeactivated { .. }
            | Event::UserReactivated { .. }
            | Event::SourcePolled { .. } => self.fold_source(event),
            Event::AlertRuleSet(_)
            | Event::AlertRuleRemoved { .. }
            | Event::AlertPending { .. }
            | Event::AlertRaised { .. }
            | Event::AlertCleared { .. }
            | Event::AlertsDelivered { .. } => self.fold_alert(event, at_ms),
            // A record for the members' failure limiters and the audit trail; no view holds it.
            Event::AuthenticationFailed { .. } => {}
        }
        self.note_routing_effects(event, at_ms);
        self.note_source_effects(event);
    }
}
