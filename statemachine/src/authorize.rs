//! Who may do what: the rules of the SPEC's "Security" section, applied to every command inside
//! `apply`, so the decision sees exactly the state the command changes (a user logging off between
//! a check at the edge and the write cannot slip through).
//!
//! - An administrator, and the collective itself, may do anything.
//! - A site whose trusted access makes it a master administrator may do anything.
//! - Any other site may change presence only for users logged on at it or homed at it, directory
//!   entries only for its home users, and only its own lease, messages, notes and calls.
//!   Collective-wide configuration (sites, statuses, workgroups, routing settings, imports, queue
//!   limits) is refused.
//!
//! The node's gRPC layer decides who the caller is and which RPCs it may call at all (see the
//! node's `auth` module); this module decides which entities it may touch.

use crate::command::{Command, Principal};
use crate::event::Event;
use crate::rejection::Rejection;
use crate::routing::Stage;
use crate::site::SiteId;
use crate::state::State;
use crate::user::key_of;

/// What the SPEC calls collective-wide configuration, for refusals.
const CONFIGURATION: &str = "collective-wide configuration needs an administrator or a master-administrator site";

/// What a user from another site may do at a site: the answer to `CheckTrustedAccess`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    /// The user is homed at the site (full rights there).
    pub home: bool,
    /// The user is logged on at the site now.
    pub logged_on: bool,
    /// May publish handlers.
    pub publish_handlers: bool,
    /// May manage handlers.
    pub manage_handlers: bool,
    /// Acts as a master administrator.
    pub master_administrator: bool,
}

impl State {
    /// Whether `site` exists and its trusted access makes it a master administrator.
    pub fn is_master_administrator(&self, site: SiteId) -> bool {
        self.sites.get(&site).is_some_and(|s| s.trusted_access.master_administrator)
    }

    /// Whether `site` acts for `username`: the user is homed at it or logged on at it.
    pub fn site_acts_for(&self, site: SiteId, username: &str) -> bool {
        let key = key_of(username);
        self.users.get(key.as_str()).is_some_and(|user| user.home_site == site)
            || self.presence.get(key.as_str()).and_then(|p| p.logon.as_ref()).is_some_and(|logon| logon.site == site)
    }

    /// What `username` may do at `site` (vendor: "trusted access" of a peer site). A user homed
    /// there has every right; anyone else has the site's trusted-access flags.
    pub fn trusted_access(&self, username: &str, site: SiteId) -> Result<Access, Rejection> {
        let user = self.user(username)?;
        let at = self.site(site)?;
        let home = user.home_site == site;
        let logged_on = self
            .presence
            .get(key_of(username).as_str())
            .and_then(|p| p.logon.as_ref())
            .is_some_and(|logon| logon.site == site);
        Ok(Access {
            home,
            logged_on,
            publish_handlers: home || at.trusted_access.publish_handlers,
            manage_handlers: home || at.trusted_access.manage_handlers,
            master_administrator: home || at.trusted_access.master_administrator,
        })
    }

    /// Refuses reading what is addressed to `site` (its message queue) unless `principal` is
    /// that site or an administrator.
    pub fn authorize_site_read(&self, principal: &Principal, site: SiteId) -> Result<(), Rejection> {
        match principal {
            Principal::Site(own) if *own != site && !self.is_master_administrator(*own) => {
                Err(Rejection::PermissionDenied {
                    reason: format!("site {own}: the queue of site {site} is that site's"),
                })
            }
            _ => Ok(()),
        }
    }

    /// Whether a watcher authenticated as `principal` may see `event`: inter-site messages (their
    /// contents, acks and requests) only reach the sites they are between; everything else is
    /// visible to every principal (presence and the directory are shared by design).
    pub fn event_visible_to(&self, principal: &Principal, event: &Event) -> bool {
        let Principal::Site(own) = principal else { return true };
        let between: &[SiteId] = match event {
            Event::MessageQueued(delivery) | Event::ResponseArrived(delivery) => {
                &[delivery.from_site, delivery.to_site]
            }
            Event::MessagesAcked { site, .. } => std::slice::from_ref(site),
            Event::RequestOpened { from_site, to_site, .. } => &[*from_site, *to_site],
            Event::RequestClosed { .. } => &[],
            _ => return true,
        };
        between.contains(own) || self.is_master_administrator(*own)
    }

    /// Refuses `command` when `principal` may not ask for it (PERMISSION_DENIED naming the rule).
    pub fn authorize(&self, principal: &Principal, command: &Command) -> Result<(), Rejection> {
        let site = match principal {
            Principal::Admin(_) | Principal::System => return Ok(()),
            // A directory source's poll makes only its own, fenced changes.
            Principal::Source(kind) => {
                return match command {
                    Command::StartSourcePoll { .. } | Command::SourceStep { .. } | Command::FinishSourcePoll { .. } => {
                        Ok(())
                    }
                    _ => Err(Rejection::PermissionDenied { reason: format!("source:{kind} may only apply its polls") }),
                };
            }
            Principal::Site(site) => *site,
        };
        if self.is_master_administrator(site) {
            return Ok(());
        }
        let deny = |reason: String| Err(Rejection::PermissionDenied { reason: format!("site {site}: {reason}") });
        let own = |other: SiteId, what: &str| {
            if other == site {
                Ok(())
            } else {
                deny(format!("{what} of site {other} belongs to that site"))
            }
        };
        let acts_for = |username: &str| {
            if self.site_acts_for(site, username) {
                Ok(())
            } else {
                deny(format!("user {username} is neither homed nor logged on here"))
            }
        };
        let home_user = |username: &str| match self.users.get(key_of(username).as_str()) {
            Some(user) if user.home_site == site => Ok(()),
            Some(_) => deny(format!("user {username} is homed at another site")),
            None => Ok(()),
        };
        let reserved_agent = |interaction_id: &str| match self.routing.interactions.get(interaction_id) {
            Some(interaction) => match &interaction.stage {
                Stage::Reserved { agent, .. } | Stage::Active { agent, .. } => acts_for(agent),
                _ => Ok(()),
            },
            None => Ok(()),
        };
        match command {
            Command::SetStatus { username, .. }
            | Command::LogOff { username, .. }
            | Command::StartInteraction { username, .. }
            | Command::EndInteraction { username, .. } => acts_for(username),
            // A site logs its home users on anywhere, and any user on at itself (a roaming user
            // arriving) unless they are logged on at another site: moving them away from there
            // is for that site, the home site or an administrator.
            Command::LogOn { username, site: at, .. } => {
                let key = key_of(username);
                let current = self.presence.get(key.as_str()).and_then(|p| p.logon.as_ref()).map(|logon| logon.site);
                match (self.users.get(key.as_str()), current) {
                    (Some(user), _) if user.home_site == site => Ok(()),
                    _ if *at != site => deny(format!("user {username} may be logged on only here")),
                    (_, Some(elsewhere)) if elsewhere != site => {
                        deny(format!("user {username} is logged on at site {elsewhere}; log them off there first"))
                    }
                    _ => Ok(()),
                }
            }
            Command::AddUser(spec) => own(spec.home_site, "a user homed").and_then(|()| home_user(&spec.username)),
            Command::UpdateUser(spec) => home_user(&spec.username).and_then(|()| {
                if spec.home_site == site {
                    Ok(())
                } else {
                    deny(format!("user {} may not be moved to site {}", spec.username, spec.home_site))
                }
            }),
            Command::DeleteUser { username } => home_user(username),
            Command::GrantLease { site: other, .. }
            | Command::KeepAlive { site: other }
            | Command::RevokeLease { site: other } => own(*other, "the lease"),
            Command::SendMessage { from_site, .. } => own(*from_site, "a message sent on behalf"),
            Command::AckMessages { site: other, .. } => own(*other, "the queue"),
            Command::CloseRequest { correlation_id, .. } => match self.messaging.requests.get(correlation_id) {
                Some(request) => own(request.from_site, "a request"),
                None => Ok(()),
            },
            Command::CreateNote { site: other, .. } | Command::RemoveNote { site: other, .. } => own(*other, "a note"),
            // Notes carry call data between sites: any site may update one (SPEC "Notes").
            Command::UpdateNoteAttribute { .. } => Ok(()),
            Command::RouteInteraction(request) => own(request.origin_site, "a call arriving"),
            Command::AcceptInteraction { interaction_id, .. } | Command::RejectInteraction { interaction_id, .. } => {
                reserved_agent(interaction_id)
            }
            Command::CancelInteraction { interaction_id } => match self.routing.interactions.get(interaction_id) {
                Some(interaction) => own(interaction.request.origin_site, "a call arriving"),
                None => Ok(()),
            },
            Command::AddSite(_)
            | Command::SetSiteActive { .. }
            | Command::UpdateSite(_)
            | Command::ChangeSiteId { .. }
            | Command::AddWorkgroup { .. }
            | Command::DeleteWorkgroup { .. }
            | Command::AddWorkgroupMember { .. }
            | Command::RemoveWorkgroupMember { .. }
            | Command::PutStatusDef(_)
            | Command::SetQueueLimits(_)
            | Command::StageImport { .. }
            | Command::CommitImport { .. }
            | Command::AbortImport { .. }
            | Command::SetRoutingSettings { .. }
            | Command::SetRouteCost { .. }
            | Command::RenewLeases
            | Command::Tick
            | Command::RecordAuthFailure { .. }
            | Command::SetSource { .. }
            | Command::RemoveSource
            | Command::PollSourceNow
            | Command::StartSourcePoll { .. }
            | Command::SourceStep { .. }
            | Command::FinishSourcePoll { .. }
            | Command::PutAlertRule(_)
            | Command::RemoveAlertRule { .. }
            | Command::AlertsDelivered { .. } => deny(CONFIGURATION.to_string()),
        }
    }
}
