//! Site leases and site renumbering: expiry by entry time logs users off as unreachable, a new
//! leader's renewal never expires a healthy lease, and ChangeSiteId rewrites every reference.

use std::collections::{BTreeMap, BTreeSet};

use collective_statemachine::{Command, Event, Rejection, SiteSpec, State, TrustedAccess, UserSpec};

mod common;
use common::{apply, HASH};

fn setup() -> State {
    let mut state = State::new();
    for id in [1, 2] {
        let site = SiteSpec {
            id,
            name: format!("Site {id}"),
            phone: "+1 555 0100".into(),
            password_hash: HASH.into(),
            note_id_dial_string: String::new(),
            active: true,
            servers: vec![format!("cic{id}")],
            trusted_access: TrustedAccess::default(),
        };
        apply(&mut state, 1_000, Command::AddSite(site)).unwrap();
    }
    for (name, home) in [("ann", 1), ("ben", 1), ("cat", 2)] {
        let user = UserSpec {
            username: name.into(),
            display_name: name.into(),
            email: format!("{name}@example.com"),
            home_site: home,
            extension: format!("{home}{}", name.len() * 100 + name.as_bytes()[0] as usize),
            skills: BTreeMap::new(),
            licences: BTreeSet::new(),
        };
        apply(&mut state, 1_000, Command::AddUser(user)).unwrap();
    }
    apply(&mut state, 1_000, Command::LogOn { username: "ann".into(), site: 1, server: String::new() }).unwrap();
    apply(&mut state, 1_000, Command::LogOn { username: "cat".into(), site: 1, server: String::new() }).unwrap();
    apply(&mut state, 1_000, Command::LogOn { username: "ben".into(), site: 2, server: String::new() }).unwrap();
    state
}

#[test]
fn expired_lease_logs_off_exactly_the_users_at_that_site() {
    let mut state = setup();
    assert_eq!(
        apply(&mut state, 10_000, Command::GrantLease { site: 1, ttl_ms: 5_000 }).unwrap(),
        vec![Event::LeaseGranted { site: 1, ttl_ms: 5_000, expires_at_ms: 15_000 }]
    );
    assert_eq!(state.next_timer_ms(), Some(15_000));
    apply(&mut state, 12_000, Command::KeepAlive { site: 1 }).unwrap();
    assert_eq!(apply(&mut state, 16_999, Command::Tick).unwrap(), vec![], "kept alive until 17,000");
    assert_eq!(
        apply(&mut state, 17_000, Command::Tick).unwrap(),
        vec![
            Event::LeaseEnded { site: 1, reason: "expired".into() },
            Event::UserLoggedOff { username: "ann".into(), site: 1, reason: "site-unreachable".into() },
            Event::UserLoggedOff { username: "cat".into(), site: 1, reason: "site-unreachable".into() },
        ]
    );
    assert!(state.presence["ben"].logon.is_some(), "users at other sites stay logged on");
    assert_eq!(state.next_timer_ms(), None);
    // A keepalive after expiry is refused; the site must grant a new lease.
    assert!(matches!(apply(&mut state, 17_001, Command::KeepAlive { site: 1 }), Err(Rejection::NotFound { .. })));
    apply(&mut state, 17_002, Command::GrantLease { site: 1, ttl_ms: 5_000 }).unwrap();
}

#[test]
fn a_new_leaders_renewal_keeps_healthy_leases() {
    let mut state = setup();
    apply(&mut state, 10_000, Command::GrantLease { site: 1, ttl_ms: 5_000 }).unwrap();
    // Keepalives were lost during the election; the new leader renews before its first Tick.
    assert_eq!(
        apply(&mut state, 14_000, Command::RenewLeases).unwrap(),
        vec![Event::LeaseRenewed { site: 1, expires_at_ms: 19_000 }]
    );
    assert_eq!(apply(&mut state, 16_000, Command::Tick).unwrap(), vec![]);
    assert!(state.presence["ann"].logon.is_some());
}

#[test]
fn lease_input_is_checked() {
    let mut state = setup();
    assert!(
        matches!(apply(&mut state, 1, Command::GrantLease { site: 1, ttl_ms: 10 }), Err(Rejection::InvalidArgument { field, .. }) if field == "ttl_ms")
    );
    assert!(matches!(
        apply(&mut state, 1, Command::GrantLease { site: 7, ttl_ms: 5_000 }),
        Err(Rejection::NotFound { .. })
    ));
    assert!(matches!(apply(&mut state, 1, Command::RevokeLease { site: 2 }), Err(Rejection::NotFound { .. })));
}

#[test]
fn change_site_id_rewrites_every_reference() {
    let mut state = setup();
    apply(&mut state, 2_000, Command::GrantLease { site: 1, ttl_ms: 5_000 }).unwrap();
    assert!(matches!(
        apply(&mut state, 3_000, Command::ChangeSiteId { old: 1, new: 2 }),
        Err(Rejection::AlreadyExists { .. })
    ));
    assert!(matches!(
        apply(&mut state, 3_000, Command::ChangeSiteId { old: 9, new: 10 }),
        Err(Rejection::NotFound { .. })
    ));
    assert!(matches!(
        apply(&mut state, 3_000, Command::ChangeSiteId { old: 1, new: 1000 }),
        Err(Rejection::InvalidArgument { .. })
    ));
    assert_eq!(
        apply(&mut state, 3_000, Command::ChangeSiteId { old: 1, new: 11 }).unwrap(),
        vec![Event::SiteIdChanged { old: 1, new: 11 }]
    );
    assert!(state.site(1).is_err());
    assert_eq!(state.site(11).unwrap().name, "Site 1");
    assert_eq!(state.site_names["site 1"], 11);
    assert_eq!(state.user("ann").unwrap().home_site, 11);
    assert_eq!(state.presence["cat"].logon.as_ref().unwrap().site, 11);
    assert!(state.leases.contains_key(&11) && !state.leases.contains_key(&1));
    assert_eq!(state.resolve_extension(&state.user("ann").unwrap().extension.clone(), 11).unwrap().current_site, 11);
    // The renumbered lease still expires and logs the users off at the new id.
    let events = apply(&mut state, 7_000, Command::Tick).unwrap();
    assert!(events.contains(&Event::UserLoggedOff {
        username: "ann".into(),
        site: 11,
        reason: "site-unreachable".into()
    }));
}

#[test]
fn an_expired_lease_never_comes_back_without_its_users_logged_off() {
    let mut state = setup();
    apply(&mut state, 10_000, Command::GrantLease { site: 1, ttl_ms: 5_000 }).unwrap();
    // The old leader stamped an entry after expiry but its Tick was lost in the election.
    apply(&mut state, 15_500, Command::LogOn { username: "ben".into(), site: 2, server: String::new() }).unwrap();
    assert_eq!(apply(&mut state, 16_000, Command::RenewLeases).unwrap(), vec![], "an expired lease was renewed");
    // The site reconnects: its stale lease ends (users logged off) before the new one starts.
    assert_eq!(
        apply(&mut state, 16_500, Command::GrantLease { site: 1, ttl_ms: 5_000 }).unwrap(),
        vec![
            Event::LeaseEnded { site: 1, reason: "expired".into() },
            Event::UserLoggedOff { username: "ann".into(), site: 1, reason: "site-unreachable".into() },
            Event::UserLoggedOff { username: "cat".into(), site: 1, reason: "site-unreachable".into() },
            Event::LeaseGranted { site: 1, ttl_ms: 5_000, expires_at_ms: 21_500 },
        ]
    );
    apply(&mut state, 17_000, Command::SetSiteActive { site: 1, active: false }).unwrap();
    assert!(matches!(
        apply(&mut state, 17_100, Command::KeepAlive { site: 1 }),
        Err(Rejection::FailedPrecondition { .. })
    ));
}
