//! Conversions between the wire types (`collective_proto::v1`) and the domain types. Decoding
//! happens once, here at the edge; the domain never sees an `Option` it does not mean.

use collective_proto::v1 as pb;
use collective_statemachine::{self as sm, Event, EventRecord, State, StatusGroup};

use super::error::ApiError;

/// A site as clients see it: everything but the password hash.
pub fn site(site: &sm::Site) -> pb::Site {
    pb::Site {
        id: site.id,
        name: site.name.clone(),
        phone: site.phone.clone(),
        note_id_dial_string: site.note_id_dial_string.clone(),
        active: Some(site.active),
        servers: site.servers.clone(),
        trusted_access: Some(trusted_access(site.trusted_access)),
    }
}

fn trusted_access(access: sm::TrustedAccess) -> pb::TrustedAccess {
    pb::TrustedAccess {
        publish_handlers: access.publish_handlers,
        manage_handlers: access.manage_handlers,
        master_administrator: access.master_administrator,
    }
}

/// A user with its derived fields (workgroup names, spanning).
pub fn user(state: &State, user: &sm::User) -> pb::User {
    let workgroups = user
        .workgroups
        .iter()
        .map(|wg| state.workgroups.get(wg).map(|w| w.name.clone()).unwrap_or_else(|| wg.clone()))
        .collect();
    user_fields(user, workgroups, state.is_spanning(&sm::user::key_of(&user.username)))
}

/// A user as it appears inside an event: the fact only, nothing derived from later state.
fn event_user(user: &sm::User) -> pb::User {
    user_fields(user, user.workgroups.iter().cloned().collect(), false)
}

fn user_fields(user: &sm::User, workgroups: Vec<String>, spanning: bool) -> pb::User {
    pb::User {
        username: user.username.clone(),
        display_name: user.display_name.clone(),
        email: user.email.clone(),
        home_site: user.home_site,
        extension: user.extension.clone(),
        skills: user.skills.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        licences: user.licences.iter().cloned().collect(),
        workgroups,
        spanning,
    }
}

/// A workgroup with member usernames as created.
pub fn workgroup(state: &State, workgroup: &sm::Workgroup) -> pb::Workgroup {
    pb::Workgroup {
        name: workgroup.name.clone(),
        spans_sites: workgroup.spans_sites,
        members: workgroup
            .members
            .iter()
            .map(|key| state.users.get(key.as_str()).map(|u| u.username.clone()).unwrap_or_else(|| key.clone()))
            .collect(),
        required_skills: workgroup.required_skills.iter().map(|(k, v)| (k.clone(), *v)).collect(),
    }
}

/// A catalog entry.
pub fn status_def(def: &sm::StatusDef) -> pb::StatusDef {
    pb::StatusDef {
        key: def.key.clone(),
        message: def.message.clone(),
        group: def.group.as_str().to_string(),
        user_selectable: def.user_selectable,
        persistent: def.persistent,
        do_not_disturb: def.do_not_disturb,
        requires_date: def.requires_date,
        requires_time: def.requires_time,
        acd_available: def.acd_available,
    }
}

/// A presence, with the username it belongs to.
pub fn presence(state: &State, username: &str, presence: &sm::Presence) -> pb::Presence {
    pb::Presence {
        username: username.to_string(),
        status_key: presence.status_key.clone(),
        status_group: state.catalog.get(&presence.status_key).map(|d| d.group.as_str().to_string()).unwrap_or_default(),
        until_ms: presence.until_ms,
        detail: presence.detail.clone(),
        on_phone: presence.on_phone(),
        interactions: presence.interactions.iter().cloned().collect(),
        logged_on_server: presence.logon.as_ref().map(|l| l.server.clone()).unwrap_or_default(),
        current_site: presence.logon.as_ref().map(|l| l.site).unwrap_or(0),
        since_ms: presence.since_ms,
        revision: presence.revision,
        overdue: presence.overdue,
    }
}

/// An event record.
pub fn event(record: &EventRecord) -> pb::Event {
    use pb::event::Body;
    let body = match &record.event {
        Event::SiteAdded(s) => Body::SiteAdded(site(s)),
        Event::SiteUpdated(s) => Body::SiteUpdated(site(s)),
        Event::ConfigImported { import_id, mode, complete, creates, updates, deletes } => {
            Body::ConfigImported(pb::ConfigImported {
                mode: import_mode_name(*mode).to_string(),
                complete: complete.iter().map(|c| c.as_str().to_string()).collect(),
                creates: *creates,
                updates: *updates,
                deletes: *deletes,
                import_id: import_id.clone(),
            })
        }
        Event::ImportPartStaged { import_id, part, config } => Body::ImportPartStaged(pb::ImportPartStaged {
            import_id: import_id.clone(),
            part: *part,
            entities: config.entities() as u64,
        }),
        Event::SourceSet { settings, next_poll_ms } => Body::SourceSet(pb::SourceChanged {
            url: settings.url.clone(),
            base_dn: settings.base_dn.clone(),
            next_poll_ms: *next_poll_ms,
        }),
        Event::SourceRemoved => Body::SourceRemoved(pb::SourceChanged::default()),
        Event::SourcePollDue { next_poll_ms } => {
            Body::SourcePollDue(pb::SourceChanged { next_poll_ms: *next_poll_ms, ..Default::default() })
        }
        Event::SourcePollStarted { term } => Body::SourcePollStarted(pb::SourcePollStarted { term: *term }),
        Event::SourceClaimed { username } => Body::SourceClaimed(pb::UserRef { username: username.clone() }),
        Event::UserDeactivated { username } => Body::UserDeactivated(pb::UserRef { username: username.clone() }),
        Event::UserReactivated { username } => Body::UserReactivated(pb::UserRef { username: username.clone() }),
        Event::SourcePolled { report, .. } => Body::SourcePolled(super::sources::report_out(report)),
        Event::AlertRuleSet(rule) => Body::AlertRuleSet(super::alerts::rule_out(rule)),
        Event::AlertRuleRemoved { name } => Body::AlertRuleRemoved(pb::AlertRef { name: name.clone() }),
        Event::AlertPending { name, value } => {
            Body::AlertPending(pb::AlertChange { name: name.clone(), value: *value, was_raised: false })
        }
        Event::AlertRaised { name, value } => {
            Body::AlertRaised(pb::AlertChange { name: name.clone(), value: *value, was_raised: false })
        }
        Event::AlertCleared { name, value, was_raised } => {
            Body::AlertCleared(pb::AlertChange { name: name.clone(), value: *value, was_raised: *was_raised })
        }
        Event::AlertsDelivered { up_to } => Body::AlertsDelivered(pb::AlertsDelivered { up_to: *up_to }),
        Event::ImportDiscarded { import_id, reason } => {
            Body::ImportDiscarded(pb::ImportDiscarded { import_id: import_id.clone(), reason: reason.clone() })
        }
        Event::SiteActiveChanged { site, active } => {
            Body::SiteActiveChanged(pb::SiteActiveChanged { site: *site, active: *active })
        }
        Event::UserAdded(u) => Body::UserAdded(event_user(u)),
        Event::UserUpdated(u) => Body::UserUpdated(event_user(u)),
        Event::UserDeleted { username } => Body::UserDeleted(pb::UserRef { username: username.clone() }),
        Event::WorkgroupAdded(w) => Body::WorkgroupAdded(pb::Workgroup {
            name: w.name.clone(),
            spans_sites: w.spans_sites,
            members: w.members.iter().cloned().collect(),
            required_skills: w.required_skills.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        }),
        Event::WorkgroupDeleted { name } => Body::WorkgroupDeleted(pb::WorkgroupRef { name: name.clone() }),
        Event::UserAddedToWorkgroup { workgroup, username } => {
            Body::UserAddedToWorkgroup(pb::Membership { workgroup: workgroup.clone(), username: username.clone() })
        }
        Event::UserRemovedFromWorkgroup { workgroup, username } => {
            Body::UserRemovedFromWorkgroup(pb::Membership { workgroup: workgroup.clone(), username: username.clone() })
        }
        Event::UserStartedSpanning { username } => {
            Body::UserStartedSpanning(pb::UserRef { username: username.clone() })
        }
        Event::UserStoppedSpanning { username } => {
            Body::UserStoppedSpanning(pb::UserRef { username: username.clone() })
        }
        Event::StatusDefined(def) => Body::StatusDefined(status_def(def)),
        Event::StatusChanged { username, status_key, until_ms, detail } => Body::StatusChanged(pb::StatusChanged {
            username: username.clone(),
            status_key: status_key.clone(),
            until_ms: *until_ms,
            detail: detail.clone(),
        }),
        Event::UserLoggedOn { username, site, server } => {
            Body::UserLoggedOn(pb::UserLoggedOn { username: username.clone(), site: *site, server: server.clone() })
        }
        Event::UserLoggedOff { username, site, reason } => {
            Body::UserLoggedOff(pb::UserLoggedOff { username: username.clone(), site: *site, reason: reason.clone() })
        }
        Event::InteractionStarted { username, interaction_id } => Body::InteractionStarted(pb::InteractionRef {
            username: username.clone(),
            interaction_id: interaction_id.clone(),
        }),
        Event::InteractionEnded { username, interaction_id } => Body::InteractionEnded(pb::InteractionRef {
            username: username.clone(),
            interaction_id: interaction_id.clone(),
        }),
        Event::SiteIdChanged { old, new } => Body::SiteIdChanged(pb::SiteIdChanged { old: *old, new: *new }),
        Event::LeaseGranted { site, ttl_ms, expires_at_ms } => {
            Body::LeaseGranted(pb::LeaseGranted { site: *site, ttl_ms: *ttl_ms, expires_at_ms: *expires_at_ms })
        }
        Event::LeaseRenewed { site, expires_at_ms } => {
            Body::LeaseRenewed(pb::LeaseRenewed { site: *site, expires_at_ms: *expires_at_ms })
        }
        Event::LeaseEnded { site, reason } => Body::LeaseEnded(pb::LeaseEnded { site: *site, reason: reason.clone() }),
        Event::MessageQueued(d) => Body::MessageQueued(delivery(d)),
        Event::MessagesAcked { site, ids } => Body::MessagesAcked(pb::MessagesAcked { site: *site, ids: ids.clone() }),
        Event::RequestOpened { correlation_id, from_site, to_site, expires_at_ms } => {
            Body::RequestOpened(pb::RequestOpened {
                correlation_id: *correlation_id,
                from_site: *from_site,
                to_site: *to_site,
                expires_at_ms: *expires_at_ms,
            })
        }
        Event::ResponseArrived(d) => Body::ResponseArrived(delivery(d)),
        Event::RequestClosed { correlation_id, reason } => {
            Body::RequestClosed(pb::RequestClosed { correlation_id: *correlation_id, reason: reason.clone() })
        }
        Event::QueueLimitsSet(limits) => Body::QueueLimitsSet(queue_limits(limits)),
        Event::NoteCreated { site, name, expires_at_ms } => {
            Body::NoteCreated(pb::NoteCreated { site: *site, name: name.clone(), expires_at_ms: *expires_at_ms })
        }
        Event::NoteAttributeUpdated { site, name, attribute, value } => {
            Body::NoteAttributeUpdated(pb::NoteAttributeUpdated {
                site: *site,
                name: name.clone(),
                attribute: attribute.clone(),
                value: Some(attribute_out(value)),
            })
        }
        Event::NoteRemoved { site, name, reason } => {
            Body::NoteRemoved(pb::NoteRemoved { site: *site, name: name.clone(), reason: reason.clone() })
        }
        Event::InteractionArrived(i) => Body::InteractionArrived(interaction(i, None)),
        Event::AgentReserved {
            interaction_id,
            workgroup,
            agent,
            agent_site,
            origin_site,
            expires_at_ms,
            decision: recorded,
        } => Body::AgentReserved(pb::AgentReserved {
            interaction_id: interaction_id.clone(),
            workgroup: workgroup.clone(),
            agent: agent.clone(),
            agent_site: *agent_site,
            origin_site: *origin_site,
            expires_at_ms: *expires_at_ms,
            decision: Some(decision(recorded)),
        }),
        Event::InteractionQueued { interaction_id, workgroup, origin_site, decision: recorded } => {
            Body::InteractionQueued(pb::InteractionQueued {
                interaction_id: interaction_id.clone(),
                workgroup: workgroup.clone(),
                origin_site: *origin_site,
                decision: Some(decision(recorded)),
            })
        }
        Event::ReservationAccepted { interaction_id, workgroup, agent } => {
            Body::ReservationAccepted(pb::ReservationChange {
                interaction_id: interaction_id.clone(),
                workgroup: workgroup.clone(),
                agent: agent.clone(),
                reason: String::new(),
            })
        }
        Event::ReservationReleased { interaction_id, workgroup, agent, reason } => {
            Body::ReservationReleased(pb::ReservationChange {
                interaction_id: interaction_id.clone(),
                workgroup: workgroup.clone(),
                agent: agent.clone(),
                reason: reason.clone(),
            })
        }
        Event::InteractionCancelled { interaction_id, workgroup, origin_site } => {
            Body::InteractionCancelled(pb::InteractionCancelled {
                interaction_id: interaction_id.clone(),
                workgroup: workgroup.clone(),
                origin_site: *origin_site,
            })
        }
        Event::RoutingSettingsSet { workgroup, settings } => {
            Body::RoutingSettingsSet(routing_settings(workgroup, settings))
        }
        Event::RouteCostSet { from, to, cost } => {
            Body::RouteCostSet(pb::RouteCost { from: *from, to: *to, cost: *cost })
        }
        Event::StatusOverdue { username, status_key, until_ms } => Body::StatusOverdue(pb::StatusOverdue {
            username: username.clone(),
            status_key: status_key.clone(),
            until_ms: *until_ms,
        }),
        Event::AuthenticationFailed { member, site, source } => Body::AuthenticationFailed(pb::AuthenticationFailed {
            member: *member,
            site: *site,
            source: source.clone(),
        }),
    };
    pb::Event {
        revision: record.revision,
        at_ms: record.at_ms,
        principal: record.principal.to_string(),
        body: Some(body),
    }
}

/// Decodes the fields of a user a caller supplies.
pub fn user_spec(user: Option<pb::User>) -> Result<sm::UserSpec, ApiError> {
    let user = user.ok_or_else(|| ApiError::invalid("user", "is required"))?;
    Ok(sm::UserSpec {
        username: user.username,
        display_name: user.display_name,
        email: user.email,
        home_site: user.home_site,
        extension: user.extension,
        skills: user.skills.into_iter().collect(),
        licences: user.licences.into_iter().collect(),
    })
}

/// Decodes a catalog entry a caller supplies.
pub fn status_def_spec(def: Option<pb::StatusDef>) -> Result<sm::StatusDef, ApiError> {
    let def = def.ok_or_else(|| ApiError::invalid("status", "is required"))?;
    let group = StatusGroup::parse(&def.group).ok_or_else(|| {
        ApiError::invalid(
            "status.group",
            format!("{:?} is not one of Available, Unavailable, Break, Training, FollowUp", def.group),
        )
    })?;
    Ok(sm::StatusDef {
        key: def.key,
        message: def.message,
        group,
        user_selectable: def.user_selectable,
        persistent: def.persistent,
        do_not_disturb: def.do_not_disturb,
        requires_date: def.requires_date,
        requires_time: def.requires_time,
        acd_available: def.acd_available,
    })
}

/// Decodes an optional status group filter.
pub fn status_group_filter(text: &str) -> Result<Option<StatusGroup>, ApiError> {
    if text.is_empty() {
        return Ok(None);
    }
    StatusGroup::parse(text).map(Some).ok_or_else(|| {
        ApiError::invalid(
            "status_group",
            format!("{text:?} is not one of Available, Unavailable, Break, Training, FollowUp"),
        )
    })
}

/// The response of a write.
pub fn write_response(applied: crate::raft_types::Applied) -> pb::WriteResponse {
    pb::WriteResponse { revision: applied.revision, events: applied.events.iter().map(event).collect() }
}

/// Queue bounds.
pub fn queue_limits(limits: &sm::messaging::QueueLimits) -> pb::QueueLimits {
    pb::QueueLimits { messages: limits.messages, bytes: limits.bytes }
}

/// A delivery as its site receives it.
pub fn delivery(d: &sm::messaging::Delivery) -> pb::Delivery {
    pb::Delivery {
        id: d.id,
        from_site: d.from_site,
        to_site: d.to_site,
        object_id: d.object_id.clone(),
        event_id: d.event_id.clone(),
        correlation_id: d.correlation_id,
        response_destination: d.response_destination,
        elements: d.elements.iter().map(element_out).collect(),
        sent_at_ms: d.sent_at_ms,
    }
}

fn element_out(element: &sm::messaging::Element) -> pb::Element {
    use pb::element::Value;
    let value = match element {
        sm::messaging::Element::Integer(value) => Value::Integer(*value),
        sm::messaging::Element::String(value) => Value::String(value.clone()),
        sm::messaging::Element::Note(note) => Value::Note(note_value_out(note, None)),
    };
    pb::Element { value: Some(value) }
}

/// Decodes a message's elements; `field` names them in errors.
pub fn elements_in(elements: Vec<pb::Element>, field: &str) -> Result<Vec<sm::messaging::Element>, ApiError> {
    use pb::element::Value;
    elements
        .into_iter()
        .enumerate()
        .map(|(index, element)| match element.value {
            Some(Value::Integer(value)) => Ok(sm::messaging::Element::Integer(value)),
            Some(Value::String(value)) => Ok(sm::messaging::Element::String(value)),
            Some(Value::Note(note)) => {
                Ok(sm::messaging::Element::Note(note_value_in(note, &format!("{field}[{index}]"))?))
            }
            None => Err(ApiError::invalid(&format!("{field}[{index}]"), "has no value (integer, string or note)")),
        })
        .collect()
}

/// A stored note or a note in a message, as clients see it.
pub fn note_value_out(note: &sm::notes::NoteValue, expires_at_ms: Option<u64>) -> pb::Note {
    pb::Note {
        name: note.name.clone(),
        attributes: note.attributes.iter().map(|(name, value)| (name.clone(), attribute_out(value))).collect(),
        expires_at_ms,
    }
}

pub fn note_value_in(note: pb::Note, field: &str) -> Result<sm::notes::NoteValue, ApiError> {
    let attributes = note
        .attributes
        .into_iter()
        .map(|(name, value)| {
            let value = attribute_in(Some(value), &format!("{field}.attributes.{name}"))?;
            Ok((name, value))
        })
        .collect::<Result<_, ApiError>>()?;
    Ok(sm::notes::NoteValue { name: note.name, attributes })
}

/// A note attribute as clients see it.
pub fn attribute_out(attribute: &sm::notes::Attribute) -> pb::Attribute {
    use pb::attribute::Values;
    let values = match attribute {
        sm::notes::Attribute::Integer(values) => Values::Integers(pb::IntegerList { values: values.clone() }),
        sm::notes::Attribute::String(values) => Values::Strings(pb::StringList { values: values.clone() }),
        sm::notes::Attribute::DateTime(values) => Values::DateTimes(pb::IntegerList { values: values.clone() }),
    };
    pb::Attribute { values: Some(values) }
}

/// Decodes attribute values; `field` names them in errors.
pub fn attribute_in(attribute: Option<pb::Attribute>, field: &str) -> Result<sm::notes::Attribute, ApiError> {
    use pb::attribute::Values;
    match attribute.and_then(|a| a.values) {
        Some(Values::Integers(list)) => Ok(sm::notes::Attribute::Integer(list.values)),
        Some(Values::Strings(list)) => Ok(sm::notes::Attribute::String(list.values)),
        Some(Values::DateTimes(list)) => Ok(sm::notes::Attribute::DateTime(list.values)),
        None => Err(ApiError::invalid(field, "is required (integers, strings or date_times)")),
    }
}

/// A routing decision with its candidates and sort keys.
pub fn decision(recorded: &sm::routing::RecordedDecision) -> pb::RoutingDecision {
    let d = &recorded.decision;
    pb::RoutingDecision {
        at_ms: recorded.at_ms,
        strategy: d.strategy.as_str().to_string(),
        required_skills: recorded.required_skills.clone().into_iter().collect(),
        eligible: d.eligible,
        examined: d.examined,
        matched: d.matched,
        shortlist: d
            .shortlist
            .iter()
            .map(|c| pb::Candidate {
                agent: c.agent.clone(),
                site: c.site,
                local: c.local,
                idle_ms: c.idle_ms,
                route_cost: c.route_cost,
                skill_score: c.skill_score,
                score: c.score,
            })
            .collect(),
    }
}

/// An interaction as clients see it; `queue_position` is its 1-based place when queued.
pub fn interaction(i: &sm::routing::Interaction, queue_position: Option<u64>) -> pb::Interaction {
    use sm::routing::Stage;
    let mut out = pb::Interaction {
        interaction_id: i.request.interaction_id.clone(),
        media: i.request.media.as_str().to_string(),
        origin_site: i.request.origin_site,
        workgroup: i.request.workgroup.clone(),
        skills: i.request.skills.clone().into_iter().collect(),
        priority: i.request.priority,
        arrived_at_ms: i.arrived_at_ms,
        stage: sm::routing::stage_name(&i.stage).to_string(),
        declined_by: i.declined_by.iter().cloned().collect(),
        decisions: i.decisions.iter().map(decision).collect(),
        queue_position: queue_position.unwrap_or(0),
        ..pb::Interaction::default()
    };
    match &i.stage {
        Stage::Reserved { agent, site, expires_at_ms } => {
            (out.agent, out.agent_site, out.expires_at_ms) = (agent.clone(), *site, *expires_at_ms);
        }
        Stage::Active { agent, site } => (out.agent, out.agent_site) = (agent.clone(), *site),
        Stage::Finished { outcome, at_ms } => (out.outcome, out.finished_at_ms) = (outcome.clone(), *at_ms),
        Stage::Routing | Stage::Queued => {}
    }
    out
}

/// A workgroup's routing settings.
pub fn routing_settings(workgroup: &str, settings: &sm::routing::Settings) -> pb::RoutingSettings {
    pb::RoutingSettings {
        workgroup: workgroup.to_string(),
        strategy: settings.strategy.as_str().to_string(),
        local_margin_ms: settings.local_margin_ms,
        reservation_ttl_ms: settings.reservation_ttl_ms,
        not_answering_on_timeout: settings.not_answering_on_timeout,
        queue_max: settings.queue_max,
    }
}

/// Decodes routing settings; 0 for the TTL or the queue bound means the default.
pub fn routing_settings_in(settings: &pb::RoutingSettings) -> Result<sm::routing::Settings, ApiError> {
    let defaults = sm::routing::Settings::default();
    let strategy = match settings.strategy.as_str() {
        "" => defaults.strategy,
        name => sm::routing::Strategy::parse(name).ok_or_else(|| {
            ApiError::invalid("strategy", format!("{name:?} is not longest-idle, most-skilled or round-robin"))
        })?,
    };
    Ok(sm::routing::Settings {
        strategy,
        local_margin_ms: settings.local_margin_ms,
        reservation_ttl_ms: if settings.reservation_ttl_ms == 0 {
            defaults.reservation_ttl_ms
        } else {
            settings.reservation_ttl_ms
        },
        not_answering_on_timeout: settings.not_answering_on_timeout,
        queue_max: if settings.queue_max == 0 { defaults.queue_max } else { settings.queue_max },
    })
}

/// A workgroup's statistics.
pub fn workgroup_stats(stats: &sm::routing::WorkgroupStats) -> pb::WorkgroupStats {
    pb::WorkgroupStats {
        workgroup: stats.workgroup.clone(),
        logged_on: stats.agents.logged_on,
        ready: stats.agents.ready,
        available: stats.agents.available,
        on_phone: stats.agents.on_phone,
        reserved: stats.agents.reserved,
        queued: stats.queued,
        longest_wait_ms: stats.longest_wait_ms,
        routed: stats.counters.routed,
        accepted: stats.counters.accepted,
        rejected: stats.counters.rejected,
        timed_out: stats.counters.timed_out,
        cancelled: stats.counters.cancelled,
        completed: stats.counters.completed,
    }
}

/// An import mode's API name.
pub fn import_mode_name(mode: sm::config::ImportMode) -> &'static str {
    match mode {
        sm::config::ImportMode::Migration => "migration",
        sm::config::ImportMode::Recovery => "recovery",
    }
}
