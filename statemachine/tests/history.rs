//! What the history records for an entry: one version per touched user, the last change of each,
//! in key order, and a tombstone for a user the entry deleted.

mod common;

use std::sync::Arc;

use collective_statemachine::{history, Batch, Command, Principal, Proposal, State, UserSpec};
use common::{apply, site_spec};

fn user(name: &str, extension: &str) -> UserSpec {
    UserSpec {
        username: name.into(),
        display_name: name.into(),
        email: format!("{}@example.com", name.to_lowercase()),
        home_site: 1,
        extension: extension.into(),
        skills: Default::default(),
        licences: Default::default(),
    }
}

fn status(username: &str, status_key: &str) -> Command {
    Command::SetStatus {
        username: username.into(),
        status_key: status_key.into(),
        until_ms: None,
        detail: String::new(),
    }
}

#[test]
fn an_entry_records_each_touched_user_once_at_its_last_change() {
    let mut state = State::new();
    apply(&mut state, 1, Command::AddSite(site_spec(1, "north"))).unwrap();
    for (name, extension) in [("carol", "8001"), ("Alice", "8002"), ("bob", "8003"), ("dave", "8004")] {
        apply(&mut state, 2, Command::AddUser(user(name, extension))).unwrap();
    }
    let commands = vec![
        status("carol", "Available"),
        status("Alice", "Available"),
        status("carol", "On Break"),
        Command::DeleteUser { username: "dave".into() },
        status("Alice", "Gone Home"),
        status("carol", "Away from desk"),
    ];
    let batch = Batch {
        at_ms: 10,
        proposals: Arc::from(
            commands.into_iter().map(|command| Proposal { principal: Principal::System, command }).collect::<Vec<_>>(),
        ),
    };
    let records: Vec<_> = state.apply_batch(&batch).into_iter().flat_map(|outcome| outcome.unwrap()).collect();
    let last_revision_of = |username: &str| {
        records.iter().filter(|r| r.event.username() == Some(username)).map(|r| r.revision).max().unwrap()
    };
    let versions = history::versions(&state, &records);
    let summary: Vec<_> = versions
        .iter()
        .map(|(key, at_ms, revision, version)| {
            (key.to_string(), *at_ms, *revision, version.status_key, version.deleted)
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("alice".to_string(), 10, last_revision_of("Alice"), "Gone Home", false),
            ("carol".to_string(), 10, last_revision_of("carol"), "Away from desk", false),
            ("dave".to_string(), 10, last_revision_of("dave"), "", true),
        ]
    );
    assert_eq!(versions[0].3.username, "Alice", "the version keeps the name as created");
}
