//! A seeded workload: commands drawn from a small universe of sites, users and workgroups so that
//! collisions, conflicts and rejections happen often.

use std::collections::{BTreeMap, BTreeSet};

use collective_statemachine::{Command, SiteSpec, State, TrustedAccess, UserSpec};
use rand::rngs::StdRng;
use rand::Rng;

const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA";
const STATUSES: [&str; 6] = ["Available", "Gone Home", "At Lunch", "On Break", "Code Red", "No Such Status"];

/// Draws the next command. Reads the state only to pick plausible targets.
pub fn next_command(rng: &mut StdRng, state: &State, at_ms: u64) -> Command {
    let site = rng.gen_range(1..=4u32);
    let user = format!("user{}", rng.gen_range(0..24));
    let workgroup = ["Support", "Sales", "Billing"][rng.gen_range(0..3)].to_string();
    match rng.gen_range(0..100) {
        0..=4 => Command::AddSite(SiteSpec {
            id: site,
            name: format!("Site {}", rng.gen_range(1..=5)),
            phone: "+1 555 0100".into(),
            password_hash: HASH.into(),
            note_id_dial_string: String::new(),
            active: rng.gen_bool(0.9),
            servers: vec![format!("cic{site}")],
            trusted_access: TrustedAccess::default(),
        }),
        5..=6 => Command::SetSiteActive { site, active: rng.gen_bool(0.7) },
        7..=16 => Command::AddUser(UserSpec {
            username: user.clone(),
            display_name: user.to_uppercase(),
            email: format!("{user}@example.com"),
            home_site: site,
            extension: format!("{}", 100 + rng.gen_range(0..12)),
            skills: BTreeMap::from([("english".to_string(), rng.gen_range(1..=100))]),
            licences: BTreeSet::new(),
        }),
        17..=18 => Command::DeleteUser { username: user },
        19..=21 => {
            Command::AddWorkgroup { name: workgroup, spans_sites: rng.gen_bool(0.6), required_skills: BTreeMap::new() }
        }
        22 => Command::DeleteWorkgroup { name: workgroup },
        23..=32 => Command::AddWorkgroupMember { workgroup, username: user },
        33..=37 => Command::RemoveWorkgroupMember { workgroup, username: user },
        38..=62 => {
            let status_key = STATUSES[rng.gen_range(0..STATUSES.len())].to_string();
            let needs_until = state.catalog.get(&status_key).is_some_and(|d| d.requires_date || d.requires_time);
            let until_ms = (needs_until && rng.gen_bool(0.9)).then(|| at_ms + rng.gen_range(1..3_600_000));
            Command::SetStatus { username: user, status_key, until_ms, detail: String::new() }
        }
        63..=77 => Command::LogOn { username: user, site, server: String::new() },
        78..=85 => Command::LogOff { username: user, reason: "user".into() },
        86..=87 => Command::GrantLease { site, ttl_ms: rng.gen_range(1_000..5_000) },
        88 => Command::KeepAlive { site },
        89 => Command::Tick,
        90 => match rng.gen_range(0..4) {
            0 => Command::ChangeSiteId { old: site, new: rng.gen_range(1..=6) },
            1 => Command::RevokeLease { site },
            _ => Command::RenewLeases,
        },
        91..=93 => Command::StartInteraction { username: user, interaction_id: format!("call{}", rng.gen_range(0..4)) },
        _ => Command::EndInteraction { username: user, interaction_id: format!("call{}", rng.gen_range(0..4)) },
    }
}
