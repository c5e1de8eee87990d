//! Export and import rules: the export closure, the import plan, staging and the commit in one
//! entry.

use super::{
    Category, ConfigSet, ImportMode, RouteCost, SiteNote, WorkgroupConfig, WorkgroupSettings, IMPORTS_STAGED_MAX,
    IMPORT_CONFLICTS_REPORTED_MAX, IMPORT_PARTS_MAX, IMPORT_STAGING_TTL_MS,
};
use crate::command::{Command, SiteSpec};
use crate::event::Event;
use crate::notes::UpdateOp;
use crate::rejection::Rejection;
use crate::routing::Settings;
use crate::site::{Site, SiteId};
use crate::state::State;
use crate::user::{key_of, UserSpec};
use std::collections::{BTreeMap, BTreeSet};

fn site_spec(site: &Site) -> SiteSpec {
    SiteSpec {
        id: site.id,
        name: site.name.clone(),
        phone: site.phone.clone(),
        password_hash: site.password_hash.clone(),
        note_id_dial_string: site.note_id_dial_string.clone(),
        active: site.active,
        servers: site.servers.clone(),
        trusted_access: site.trusted_access,
    }
}

/// What an import does, step by step, and what stands in its way.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportPlan {
    /// Entities created, e.g. `user jo`.
    pub creates: Vec<String>,
    /// Entities changed.
    pub updates: Vec<String>,
    /// Entities deleted (or, for sites, deactivated).
    pub deletes: Vec<String>,
    /// Entities already equal to the file's.
    pub unchanged: u64,
    /// Why the import cannot be applied, one line per conflict naming the entity.
    pub conflicts: Vec<String>,
    /// The events of every step, in order (empty when there are conflicts).
    pub events: Vec<Event>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Action {
    Create,
    Update,
    Delete,
}

/// One step of an import: what it does to which entity, and the command that does it.
struct Step {
    action: Action,
    what: String,
    command: Command,
}

impl State {
    /// The configuration of the chosen categories plus everything they depend on; the second
    /// value says what the closure added and why.
    pub fn export_config(&self, chosen: &BTreeSet<Category>) -> (ConfigSet, Vec<String>) {
        let mut closure = Vec::new();
        let all = |category| chosen.contains(&category);
        // Routing settings and costs, then the workgroups and sites they name.
        let mut workgroups: BTreeSet<String> = BTreeSet::new();
        let mut sites: BTreeSet<SiteId> = BTreeSet::new();
        let mut users: BTreeSet<String> = BTreeSet::new();
        let (mut routing_settings, mut route_costs) = (Vec::new(), Vec::new());
        if all(Category::Routing) {
            for (key, settings) in &self.routing.settings {
                routing_settings.push(WorkgroupSettings {
                    workgroup: self.workgroups[key].name.clone(),
                    settings: settings.clone(),
                });
                workgroups.insert(key.clone());
            }
            for (from, row) in &self.routing.costs {
                for (to, cost) in row {
                    route_costs.push(RouteCost { from: *from, to: *to, cost: *cost });
                    sites.extend([*from, *to]);
                }
            }
        }
        if all(Category::Workgroups) {
            workgroups.extend(self.workgroups.keys().cloned());
        } else if !workgroups.is_empty() {
            closure.push(format!("workgroups: {} named by routing settings", workgroups.len()));
        }
        for key in &workgroups {
            users.extend(self.workgroups[key].members.iter().cloned());
        }
        if all(Category::Users) {
            users.extend(self.users.keys().map(|key| key.to_string()));
        } else if !users.is_empty() {
            closure.push(format!("users: {} members of the exported workgroups", users.len()));
        }
        let mut notes = Vec::new();
        if all(Category::Notes) {
            for (site, site_notes) in self.messaging.notes.iter() {
                for note in site_notes.values().filter(|note| note.live_at(self.last_at_ms)) {
                    notes.push(SiteNote { site: *site, value: note.value.clone(), expires_at_ms: note.expires_at_ms });
                    sites.insert(*site);
                }
            }
        }
        let before = sites.len();
        for key in &users {
            sites.insert(self.users[key.as_str()].home_site);
        }
        if all(Category::Sites) {
            sites.extend(self.sites.keys().copied());
        } else if !sites.is_empty() {
            closure.push(format!(
                "sites: {} home sites of the exported users{}",
                sites.len(),
                if before > 0 { " and sites named by route costs or holding notes" } else { "" }
            ));
        }
        let set = ConfigSet {
            complete: chosen.clone(),
            sites: sites.iter().map(|id| self.sites[id].clone()).collect(),
            statuses: if all(Category::Statuses) { self.catalog.values().cloned().collect() } else { vec![] },
            users: users
                .iter()
                .map(|key| {
                    let user = &self.users[key.as_str()];
                    UserSpec {
                        username: user.username.clone(),
                        display_name: user.display_name.clone(),
                        email: user.email.clone(),
                        home_site: user.home_site,
                        extension: user.extension.clone(),
                        skills: BTreeMap::from(&user.skills),
                        licences: user.licences.iter().cloned().collect(),
                    }
                })
                .collect(),
            workgroups: workgroups
                .iter()
                .map(|key| {
                    let workgroup = &self.workgroups[key];
                    WorkgroupConfig {
                        name: workgroup.name.clone(),
                        spans_sites: workgroup.spans_sites,
                        required_skills: workgroup.required_skills.clone(),
                        members: workgroup
                            .members
                            .iter()
                            .map(|member| self.users[member.as_str()].username.clone())
                            .collect(),
                    }
                })
                .collect(),
            routing_settings,
            route_costs,
            notes,
        };
        (set, closure)
    }

    /// Plans an import at entry time `at_ms`: its steps tried on a scratch copy of the state.
    pub fn plan_import(&self, mode: ImportMode, config: &ConfigSet, at_ms: u64) -> ImportPlan {
        let mut plan = ImportPlan::default();
        let steps = match self.import_steps(mode, config, &mut plan) {
            Ok(steps) => steps,
            Err(conflicts) => {
                plan.conflicts = conflicts;
                return plan;
            }
        };
        let mut scratch = self.clone();
        for step in steps {
            match scratch.apply_step(at_ms, &step.command) {
                Ok(events) => {
                    plan.events.extend(events);
                    match step.action {
                        Action::Create => plan.creates.push(step.what),
                        Action::Update => plan.updates.push(step.what),
                        Action::Delete => plan.deletes.push(step.what),
                    }
                }
                Err(rejection) => plan.conflicts.push(format!("{}: {rejection}", step.what)),
            }
        }
        if !plan.conflicts.is_empty() {
            plan.events.clear();
        }
        plan
    }

    pub(crate) fn decide_stage_import(
        &self,
        import_id: &str,
        part: u32,
        config: &ConfigSet,
    ) -> Result<Vec<Event>, Rejection> {
        if !self.imports.contains_key(import_id) && self.imports.len() >= IMPORTS_STAGED_MAX {
            return Err(Rejection::LimitReached {
                what: "imports being staged".into(),
                limit: IMPORTS_STAGED_MAX as u64,
            });
        }
        if part >= IMPORT_PARTS_MAX {
            return Err(Rejection::invalid("part", format!("{part} is over {IMPORT_PARTS_MAX}")));
        }
        Ok(vec![Event::ImportPartStaged { import_id: import_id.to_string(), part, config: Box::new(config.clone()) }])
    }

    /// Decides a `CommitImport`: every part present, then the plan's events or every conflict.
    pub(crate) fn decide_commit_import(
        &self,
        at_ms: u64,
        import_id: &str,
        parts: u32,
        mode: ImportMode,
    ) -> Result<Vec<Event>, Rejection> {
        let staged = self.imports.get(import_id).ok_or_else(|| Rejection::not_found("import", import_id))?;
        if let Some(missing) = (0..parts).find(|part| !staged.parts.contains_key(part)) {
            return Err(Rejection::precondition(
                "parts",
                format!("part {missing} of import {import_id} was never staged"),
            ));
        }
        if staged.parts.len() as u32 != parts {
            return Err(Rejection::precondition(
                "parts",
                format!("import {import_id} has {} parts staged, not {parts}", staged.parts.len()),
            ));
        }
        let mut events = self.decide_import(at_ms, mode, &staged.assembled())?;
        if let Some(Event::ConfigImported { import_id: id, .. }) = events.last_mut() {
            *id = import_id.to_string();
        }
        Ok(events)
    }

    /// Staged imports past their time to live at `at_ms`.
    pub(crate) fn import_expiry_events(&self, at_ms: u64) -> Vec<Event> {
        self.imports
            .iter()
            .filter(|(_, staged)| staged.started_at_ms + IMPORT_STAGING_TTL_MS <= at_ms)
            .map(|(id, _)| Event::ImportDiscarded { import_id: id.clone(), reason: "expired".into() })
            .collect()
    }

    /// Decides an import of `config`: the plan's events, or every conflict.
    pub(crate) fn decide_import(
        &self,
        at_ms: u64,
        mode: ImportMode,
        config: &ConfigSet,
    ) -> Result<Vec<Event>, Rejection> {
        let plan = self.plan_import(mode, config, at_ms);
        if !plan.conflicts.is_empty() {
            let shown: Vec<&str> =
                plan.conflicts.iter().take(IMPORT_CONFLICTS_REPORTED_MAX).map(String::as_str).collect();
            return Err(Rejection::precondition(
                "import",
                format!("{} conflicts, nothing imported: {}", plan.conflicts.len(), shown.join("; ")),
            ));
        }
        let mut events = plan.events;
        events.push(Event::ConfigImported {
            import_id: String::new(),
            mode,
            complete: config.complete.clone(),
            creates: plan.creates.len() as u64,
            updates: plan.updates.len() as u64,
            deletes: plan.deletes.len() as u64,
        });
        Ok(events)
    }

    /// The import's steps in dependency order; structural conflicts (a site id or name held by
    /// another site, a workgroup whose kind differs in migration) are reported up front.
    fn import_steps(
        &self,
        mode: ImportMode,
        config: &ConfigSet,
        plan: &mut ImportPlan,
    ) -> Result<Vec<Step>, Vec<String>> {
        let recovery = |category| mode == ImportMode::Recovery && config.complete.contains(&category);
        let mut steps = Vec::new();
        let mut conflicts = Vec::new();
        let mut step = |action, what: String, command| steps.push(Step { action, what, command });
        for site in &config.sites {
            let what = format!("site {} ({})", site.id, site.name);
            match (self.sites.get(&site.id), self.site_names.get(&key_of(&site.name))) {
                // Recovery of the sites restores a renamed site's name, unless another site has it.
                (Some(existing), None) if key_of(&existing.name) != key_of(&site.name) && recovery(Category::Sites) => {
                    step(
                        Action::Update,
                        format!("{what}, renamed from {:?}", existing.name),
                        Command::UpdateSite(site_spec(site)),
                    )
                }
                (Some(existing), _) if key_of(&existing.name) != key_of(&site.name) => conflicts.push(format!(
                    "{what}: site id {} is {:?} here; renumber one of them (site change-id) first",
                    site.id, existing.name
                )),
                (None, Some(other)) => conflicts.push(format!(
                    "{what}: the name belongs to site {other} here; renumber it to {} (site change-id) first",
                    site.id
                )),
                (Some(existing), _) if existing == site => plan.unchanged += 1,
                (Some(_), _) => step(Action::Update, what, Command::UpdateSite(site_spec(site))),
                (None, None) => step(Action::Create, what, Command::AddSite(site_spec(site))),
            }
        }
        for status in &config.statuses {
            match self.catalog.get(&status.key) {
                Some(existing) if existing == status => plan.unchanged += 1,
                existing => step(
                    if existing.is_some() { Action::Update } else { Action::Create },
                    format!("status {:?}", status.key),
                    Command::PutStatusDef(status.clone()),
                ),
            }
        }
        // Notes: replaced whole when they differ; an expired one in the file is skipped.
        let now = self.last_at_ms;
        for note in &config.notes {
            let what = format!("note {} at site {}", note.value.name, note.site);
            let remaining = note.expires_at_ms.map(|expires| expires.saturating_sub(now));
            if remaining == Some(0) {
                continue;
            }
            let ttl_minutes =
                remaining.map(|ms| ms.div_ceil(60_000).clamp(1, u64::from(crate::limits::NOTE_TTL_MINUTES_MAX)) as u32);
            let current = self.messaging.notes.note(note.site, &note.value.name, now).ok();
            if current.is_some_and(|current| current.value == note.value && current.expires_at_ms == note.expires_at_ms)
            {
                plan.unchanged += 1;
                continue;
            }
            let action = if current.is_some() { Action::Update } else { Action::Create };
            if current.is_some() {
                step(action, what.clone(), Command::RemoveNote { site: note.site, name: note.value.name.clone() });
            }
            step(
                action,
                what.clone(),
                Command::CreateNote { site: note.site, name: note.value.name.clone(), ttl_minutes },
            );
            for (attribute, values) in &note.value.attributes {
                step(
                    action,
                    format!("{what}: attribute {attribute}"),
                    Command::UpdateNoteAttribute {
                        site: note.site,
                        name: note.value.name.clone(),
                        attribute: attribute.clone(),
                        op: UpdateOp::Replace,
                        values: values.clone(),
                    },
                );
            }
        }
        if recovery(Category::Notes) {
            let keep: BTreeSet<(SiteId, &str)> = config.notes.iter().map(|n| (n.site, n.value.name.as_str())).collect();
            for (site, notes) in self.messaging.notes.iter() {
                for note in notes.values().filter(|n| n.live_at(now) && !keep.contains(&(*site, n.value.name.as_str())))
                {
                    step(
                        Action::Delete,
                        format!("note {} at site {site}", note.value.name),
                        Command::RemoveNote { site: *site, name: note.value.name.clone() },
                    );
                }
            }
        }
        let file_workgroups: BTreeMap<String, &WorkgroupConfig> =
            config.workgroups.iter().map(|w| (key_of(&w.name), w)).collect();
        let file_users: BTreeSet<String> = config.users.iter().map(|u| key_of(&u.username)).collect();
        // Deletions first, so what the file brings can take their names and extensions.
        let mut replaced = BTreeSet::new();
        if recovery(Category::Workgroups) {
            for (key, workgroup) in &self.workgroups {
                match file_workgroups.get(key) {
                    None => step(
                        Action::Delete,
                        format!("workgroup {}", workgroup.name),
                        Command::DeleteWorkgroup { name: workgroup.name.clone() },
                    ),
                    Some(file)
                        if file.spans_sites != workgroup.spans_sites
                            || file.required_skills != workgroup.required_skills =>
                    {
                        replaced.insert(key.clone());
                        step(
                            Action::Delete,
                            format!("workgroup {} (replaced)", workgroup.name),
                            Command::DeleteWorkgroup { name: workgroup.name.clone() },
                        );
                    }
                    Some(file) => {
                        let keep: BTreeSet<String> = file.members.iter().map(|m| key_of(m)).collect();
                        for member in workgroup.members.iter().filter(|m| !keep.contains(*m)) {
                            let username = self.users[member.as_str()].username.clone();
                            step(
                                Action::Delete,
                                format!("membership of {username} in {}", workgroup.name),
                                Command::RemoveWorkgroupMember { workgroup: workgroup.name.clone(), username },
                            );
                        }
                    }
                }
            }
        }
        if recovery(Category::Users) {
            for (key, user) in &self.users {
                if !file_users.contains(key.as_str()) {
                    step(
                        Action::Delete,
                        format!("user {}", user.username),
                        Command::DeleteUser { username: user.username.clone() },
                    );
                }
            }
        }
        // Updates before creates: a user the file moves off an extension or email frees it for
        // a new user taking it. (Two existing users swapping values is still a conflict.)
        let (existing, new): (Vec<&UserSpec>, Vec<&UserSpec>) =
            config.users.iter().partition(|spec| self.users.contains_key(key_of(&spec.username).as_str()));
        for spec in existing.into_iter().chain(new) {
            let what = format!("user {}", spec.username);
            match self.users.get(key_of(&spec.username).as_str()) {
                Some(existing)
                    if existing.display_name == spec.display_name
                        && existing.email == spec.email
                        && existing.home_site == spec.home_site
                        && existing.extension == spec.extension
                        && existing.skills.iter().eq(spec.skills.iter())
                        && existing.licences.iter().eq(spec.licences.iter()) =>
                {
                    plan.unchanged += 1
                }
                Some(_) => step(Action::Update, what, Command::UpdateUser(spec.clone())),
                None => step(Action::Create, what, Command::AddUser(spec.clone())),
            }
        }
        for workgroup in &config.workgroups {
            let key = key_of(&workgroup.name);
            let existing = self.workgroups.get(&key).filter(|_| !replaced.contains(&key));
            let what = format!("workgroup {}", workgroup.name);
            match existing {
                Some(existing)
                    if existing.spans_sites != workgroup.spans_sites
                        || existing.required_skills != workgroup.required_skills =>
                {
                    conflicts.push(format!(
                        "{what}: spans_sites or required skills differ from the collective's; recovery mode replaces it"
                    ));
                    continue;
                }
                Some(_) => plan.unchanged += 1,
                None => step(
                    Action::Create,
                    what,
                    Command::AddWorkgroup {
                        name: workgroup.name.clone(),
                        spans_sites: workgroup.spans_sites,
                        required_skills: workgroup.required_skills.clone(),
                    },
                ),
            }
            let members = existing.map(|w| &w.members);
            for member in &workgroup.members {
                if members.is_some_and(|members| members.contains(&key_of(member))) {
                    continue;
                }
                step(
                    Action::Create,
                    format!("membership of {member} in {}", workgroup.name),
                    Command::AddWorkgroupMember { workgroup: workgroup.name.clone(), username: member.clone() },
                );
            }
        }
        let file_settings: BTreeMap<String, &Settings> =
            config.routing_settings.iter().map(|s| (key_of(&s.workgroup), &s.settings)).collect();
        for entry in &config.routing_settings {
            let key = key_of(&entry.workgroup);
            let current = (!replaced.contains(&key)).then(|| self.routing.settings.get(&key)).flatten();
            if current == Some(&entry.settings) {
                plan.unchanged += 1;
                continue;
            }
            step(
                if current.is_some() { Action::Update } else { Action::Create },
                format!("routing settings of {}", entry.workgroup),
                Command::SetRoutingSettings { workgroup: entry.workgroup.clone(), settings: entry.settings.clone() },
            );
        }
        let file_costs: BTreeMap<(SiteId, SiteId), u32> =
            config.route_costs.iter().map(|c| ((c.from, c.to), c.cost)).collect();
        for cost in &config.route_costs {
            let current = self.routing.cost(cost.from, cost.to);
            if current == cost.cost {
                plan.unchanged += 1;
                continue;
            }
            step(
                if current == 0 { Action::Create } else { Action::Update },
                format!("route cost {} -> {}", cost.from, cost.to),
                Command::SetRouteCost { from: cost.from, to: cost.to, cost: cost.cost },
            );
        }
        if recovery(Category::Routing) {
            for (key, settings) in &self.routing.settings {
                let deleted = recovery(Category::Workgroups) && !file_workgroups.contains_key(key);
                if !file_settings.contains_key(key) && !deleted && *settings != Settings::default() {
                    let workgroup = self.workgroups[key].name.clone();
                    step(
                        Action::Delete,
                        format!("routing settings of {workgroup} (back to the defaults)"),
                        Command::SetRoutingSettings { workgroup, settings: Settings::default() },
                    );
                }
            }
            for (from, row) in &self.routing.costs {
                for to in row.keys().filter(|to| !file_costs.contains_key(&(*from, **to))) {
                    step(
                        Action::Delete,
                        format!("route cost {from} -> {to}"),
                        Command::SetRouteCost { from: *from, to: *to, cost: 0 },
                    );
                }
            }
        }
        if recovery(Category::Sites) {
            let file_sites: BTreeSet<SiteId> = config.sites.iter().map(|s| s.id).collect();
            for (id, site) in &self.sites {
                if !file_sites.contains(id) && site.active {
                    step(
                        Action::Delete,
                        format!("site {id} ({}) deactivated (sites are never deleted)", site.name),
                        Command::SetSiteActive { site: *id, active: false },
                    );
                }
            }
        }
        if conflicts.is_empty() {
            Ok(steps)
        } else {
            Err(conflicts)
        }
    }
}

impl State {
    pub(crate) fn decide_abort_import(&self, import_id: &str) -> Result<Vec<Event>, Rejection> {
        if !self.imports.contains_key(import_id) {
            return Err(Rejection::not_found("import", import_id));
        }
        Ok(vec![Event::ImportDiscarded { import_id: import_id.to_string(), reason: "aborted".into() }])
    }

    pub(crate) fn fold_import(&mut self, event: &Event, at_ms: u64) {
        match event {
            Event::ConfigImported { import_id, .. } | Event::ImportDiscarded { import_id, .. } => {
                self.imports.remove(import_id);
            }
            Event::ImportPartStaged { import_id, part, config } => {
                let staged = self
                    .imports
                    .entry(import_id.clone())
                    .or_insert_with(|| crate::config::StagedImport { started_at_ms: at_ms, parts: BTreeMap::new() });
                staged.parts.insert(*part, (**config).clone());
            }
            _ => {}
        }
    }
}
