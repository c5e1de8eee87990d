//! Read-only views over `State`: per-site directory visibility, company-wide search and
//! extension resolution. Pure functions of the state, so every replica answers alike.

use crate::catalog::StatusGroup;
use crate::limits::SEARCH_RESULTS_MAX;
use crate::presence::Presence;
use crate::rejection::Rejection;
use crate::site::SiteId;
use crate::small::Name;
use crate::state::State;
use crate::user::{key_of, User};

/// Filters of a directory search; every set filter must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchQuery {
    /// Substring of username or display name, case-insensitive.
    pub name: Option<String>,
    /// Exact extension.
    pub extension: Option<String>,
    /// Exact email, case-insensitive.
    pub email: Option<String>,
    /// Only users visible in this site's directory view.
    pub visible_at_site: Option<SiteId>,
    /// Only users homed at this site.
    pub home_site: Option<SiteId>,
    /// Only members of this workgroup.
    pub workgroup: Option<String>,
    /// Only users with this skill.
    pub skill: Option<String>,
    /// Only users whose status is in this group.
    pub status_group: Option<StatusGroup>,
    /// Only users logged on (true) or logged off (false).
    pub logged_on: Option<bool>,
    /// At most this many results (capped at `SEARCH_RESULTS_MAX`); 0 means the cap.
    pub limit: u32,
}

/// A directory entry: the user with its live presence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The user.
    pub user: &'a User,
    /// Its presence.
    pub presence: &'a Presence,
    /// Whether it is visible at every site.
    pub spanning: bool,
}

/// Who an extension reaches from a site, and how to dial it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution<'a> {
    /// The user.
    pub user: &'a User,
    /// The site where the user is now (its logon site, else its home site).
    pub current_site: SiteId,
    /// Whether the user is logged on.
    pub logged_on: bool,
    /// Dial string that reaches the user directly: `<extension>@<server of the current site>`.
    pub dial_string: String,
    /// Dial string over a tie line: the current site's note-id dial string, then the extension.
    pub tie_line_dial_string: String,
}

impl State {
    /// Whether a user appears in a site's directory view: at its home site always, everywhere
    /// while it is spanning.
    pub fn visible_at(&self, user: &User, site: SiteId) -> bool {
        user.home_site == site || self.is_spanning(&key_of(&user.username))
    }

    /// Company-wide directory search; results are ordered by username.
    pub fn search(&self, query: &SearchQuery) -> Vec<Entry<'_>> {
        let limit = if query.limit == 0 { SEARCH_RESULTS_MAX } else { (query.limit as usize).min(SEARCH_RESULTS_MAX) };
        let name = query.name.as_deref().map(str::to_lowercase);
        let workgroup = query.workgroup.as_deref().map(key_of);
        let candidates: Box<dyn Iterator<Item = &str>> = match (&workgroup, &query.extension) {
            (Some(wg), _) => match self.workgroups.get(wg) {
                Some(workgroup) => Box::new(workgroup.members.iter().map(String::as_str)),
                None => Box::new(std::iter::empty()),
            },
            (None, Some(extension)) => match self.extensions.get(extension.as_str()) {
                Some(holders) => Box::new(holders.iter().map(Name::as_str)),
                None => Box::new(std::iter::empty()),
            },
            (None, None) => Box::new(self.users.keys().map(Name::as_str)),
        };
        candidates
            .filter_map(|user_key| {
                let user = &self.users[user_key];
                let presence = &self.presence[user_key];
                let matches = name.as_ref().is_none_or(|n| {
                    user_key.contains(n.as_str()) || user.display_name.to_lowercase().contains(n.as_str())
                }) && query.extension.as_ref().is_none_or(|e| &user.extension == e)
                    && query.email.as_ref().is_none_or(|e| user.email.eq_ignore_ascii_case(e))
                    && query.visible_at_site.is_none_or(|site| self.visible_at(user, site))
                    && query.home_site.is_none_or(|site| user.home_site == site)
                    && query.skill.as_ref().is_none_or(|skill| user.skills.contains_key(skill))
                    && query.status_group.is_none_or(|group| {
                        self.catalog.get(&presence.status_key).is_some_and(|def| def.group == group)
                    })
                    && query.logged_on.is_none_or(|logged_on| presence.logon.is_some() == logged_on);
                matches.then(|| Entry { user, presence, spanning: self.is_spanning(user_key) })
            })
            .take(limit)
            .collect()
    }

    /// Resolves an extension as dialled from `from_site`: a user homed at that site wins, else the
    /// spanning user with that extension (the extension rule makes the answer unique).
    pub fn resolve_extension(&self, extension: &str, from_site: SiteId) -> Result<Resolution<'_>, Rejection> {
        self.site(from_site)?;
        let holders = self.extensions.get(extension).ok_or_else(|| Rejection::not_found("extension", extension))?;
        let user_key = holders
            .iter()
            .find(|key| self.users[*key].home_site == from_site)
            .or_else(|| holders.iter().find(|key| self.is_spanning(key)))
            .ok_or_else(|| Rejection::NotFound {
                kind: "extension".into(),
                key: format!("{extension} (not visible from site {from_site})"),
            })?;
        let user = &self.users[user_key];
        let presence = &self.presence[user_key];
        let (current_site, server) = match &presence.logon {
            Some(logon) => (logon.site, logon.server.clone()),
            None => (user.home_site, String::new()),
        };
        let site = self.site(current_site)?;
        let server =
            if server.is_empty() { site.servers.first().cloned().unwrap_or_else(|| site.name.clone()) } else { server };
        Ok(Resolution {
            user,
            current_site,
            logged_on: presence.logon.is_some(),
            dial_string: format!("{}@{}", user.extension, server),
            tie_line_dial_string: format!("{}{}", site.note_id_dial_string, user.extension),
        })
    }
}
