//! The encoding of what a node writes or sends once per write: Raft log entries, the Raft and
//! forwarding RPC payloads, and presence history versions.
//!
//! A value is a format byte followed by the body: `1` is postcard (compact, no field names), the
//! encoding everything is written in. A body whose first byte is anything else is JSON, the
//! encoding earlier builds wrote (a JSON text never starts with byte 1), so logs and histories
//! those builds left behind still read. Snapshots and metadata stay JSON: they are written
//! rarely and read by people.
//!
//! Postcard cannot encode what needs a self-describing format (`#[serde(untagged)]`, `flatten`,
//! `skip_serializing_if`, `serde_json::Value`): the types that pass through here (commands,
//! events, presence versions, `ApiError`, openraft's messages) must not use them. Every cluster
//! test sends its commands and events through here, so one that did would fail there first.
//!
//! Upgrades: a build with this codec reads what older builds wrote, but older builds cannot read
//! what it sends or stores, so every member of a collective is upgraded together (stop all,
//! upgrade, start), and a member cannot go back to an older build afterwards.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The format byte of postcard bodies.
const POSTCARD: u8 = 1;

/// Why a value could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// Postcard refused the value or the bytes.
    #[error("postcard: {0}")]
    Postcard(#[from] postcard::Error),
    /// The bytes were JSON and did not decode.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// Nothing to decode.
    #[error("empty value")]
    Empty,
}

/// Appends `value`, encoded as by [`encode`], to `out`; on an error `out` is as it was.
pub fn encode_into<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
    /// Appends to a borrowed buffer, so a failed encoding cannot take the buffer with it.
    struct Append<'a>(&'a mut Vec<u8>);
    impl Extend<u8> for Append<'_> {
        fn extend<I: IntoIterator<Item = u8>>(&mut self, bytes: I) {
            self.0.extend(bytes);
        }
    }
    let start = out.len();
    out.push(POSTCARD);
    if let Err(error) = postcard::to_extend(value, Append(out)) {
        out.truncate(start);
        return Err(error.into());
    }
    Ok(())
}

/// Encodes `value` as the format byte and its postcard body.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(128);
    encode_into(value, &mut out)?;
    Ok(out)
}

/// Decodes what `encode` wrote, or the JSON earlier builds wrote.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    match bytes.split_first() {
        None => Err(CodecError::Empty),
        Some((&POSTCARD, body)) => Ok(postcard::from_bytes(body)?),
        Some(_) => Ok(serde_json::from_slice(bytes)?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use collective_statemachine::{Batch, Command, Principal, Proposal};

    fn batch() -> Batch {
        let proposal = Proposal {
            principal: Principal::Admin("root".into()),
            command: Command::SetStatus {
                username: "alice".into(),
                status_key: "Available".into(),
                until_ms: Some(5),
                detail: "back soon".into(),
            },
        };
        Batch { at_ms: 1_700_000_000_000, proposals: vec![proposal.clone(), proposal].into() }
    }

    #[test]
    fn postcard_round_trips_and_is_smaller_than_json() {
        let batch = batch();
        let bytes = encode(&batch).unwrap();
        assert_eq!(bytes[0], POSTCARD);
        assert_eq!(decode::<Batch>(&bytes).unwrap(), batch);
        assert!(bytes.len() * 2 < serde_json::to_vec(&batch).unwrap().len());
    }

    #[test]
    fn json_from_earlier_builds_still_decodes() {
        let batch = batch();
        assert_eq!(decode::<Batch>(&serde_json::to_vec(&batch).unwrap()).unwrap(), batch);
    }

    /// The log entry of `statemachine/tests/fixtures/batch-v1.json`, as the stored fixture holds it.
    fn entry_v1() -> crate::raft_types::Entry {
        let batch: Batch =
            serde_json::from_str(include_str!("../../statemachine/tests/fixtures/batch-v1.json")).expect("v1 batch");
        crate::raft_types::Entry {
            log_id: crate::raft_types::LogId::new(crate::raft_types::CommittedLeaderId::new(3), 41),
            payload: openraft::EntryPayload::Normal(batch),
        }
    }

    /// A membership entry of a three-member cluster, as the stored fixture holds it.
    fn membership_entry_v1() -> crate::raft_types::Entry {
        let nodes = (1..=3u64).map(|id| (id, openraft::BasicNode::new(format!("10.0.0.{id}:7001"))));
        let membership = openraft::Membership::new(
            vec![std::collections::BTreeSet::from([1, 2, 3])],
            nodes.collect::<std::collections::BTreeMap<_, _>>(),
        )
        .expect("a valid membership");
        crate::raft_types::Entry {
            log_id: crate::raft_types::LogId::new(crate::raft_types::CommittedLeaderId::new(1), 2),
            payload: openraft::EntryPayload::Membership(membership),
        }
    }

    /// A history version with `overdue`, as the stored fixture holds it.
    fn version_v2() -> collective_statemachine::history::PresenceVersion {
        collective_statemachine::history::PresenceVersion { overdue: true, ..version_v1() }
    }

    /// A history version from before `overdue`, as the stored fixture holds it.
    fn version_v1() -> collective_statemachine::history::PresenceVersion {
        collective_statemachine::history::PresenceVersion {
            username: "Jo".into(),
            status_key: "On Break".into(),
            status_group: collective_statemachine::StatusGroup::Break,
            logged_on_site: Some(7),
            home_site: 1,
            on_phone: true,
            workgroups: ["billing".to_string(), "sales".to_string()].into_iter().collect(),
            deleted: false,
            since_ms: 1_795_740_000_123,
            overdue: false,
        }
    }

    use crate::auth::hex;

    /// A fixture's bytes (hex, wrapped over lines).
    fn unhex(text: &str) -> Vec<u8> {
        crate::auth::unhex(&text.split_whitespace().collect::<String>()).expect("the fixture is hex")
    }

    /// Postcard lays fields out by position: a field added to a stored type (commands, events,
    /// history versions, openraft's entry) would make what earlier builds stored unreadable, or
    /// read wrong. These bytes were written with the layout postcard has had since the codec
    /// came in (commit ca9b2ed, unchanged since); they must still decode to the same values and
    /// the values must encode to the same bytes. If a change breaks this, stored logs and
    /// histories break with it: give the new layout a new format byte and keep decoding this
    /// one. Never edit a fixture; add a new one.
    #[test]
    fn stored_postcard_from_the_first_build_still_decodes() {
        check_stored(include_str!("../tests/fixtures/entry-v1.postcard.hex"), entry_v1(), "entry");
        check_stored(
            include_str!("../tests/fixtures/entry-membership-v1.postcard.hex"),
            membership_entry_v1(),
            "membership entry",
        );
        check_stored(include_str!("../tests/fixtures/version-v2.postcard.hex"), version_v2(), "history version");
        // Versions stored before `overdue` still read, as not overdue (`history::decode_version`).
        let v1 = unhex(include_str!("../tests/fixtures/version-v1.postcard.hex"));
        assert_eq!(crate::history::decode_version(&v1).unwrap(), version_v1(), "the stored v1 history version");
    }

    /// The history records versions borrowed from the state: they must write the stored bytes
    /// of the owned version, after whatever the buffer held.
    #[test]
    fn a_borrowed_version_encodes_as_the_owned_one() {
        let owned = version_v2();
        let borrowed = collective_statemachine::history::PresenceVersionRef {
            username: &owned.username,
            status_key: &owned.status_key,
            status_group: owned.status_group,
            logged_on_site: owned.logged_on_site,
            home_site: owned.home_site,
            on_phone: owned.on_phone,
            workgroups: &owned.workgroups,
            deleted: owned.deleted,
            since_ms: owned.since_ms,
            overdue: owned.overdue,
        };
        assert_eq!(borrowed.to_version(), owned);
        let mut out = b"key".to_vec();
        encode_into(&borrowed, &mut out).unwrap();
        assert_eq!(&out[..3], b"key");
        assert_eq!(hex(&out[3..]), hex(&unhex(include_str!("../tests/fixtures/version-v2.postcard.hex"))));
    }

    /// `expected` encodes to the stored bytes (hex), and they decode to it. A new fixture starts
    /// as an empty file: the failed comparison prints its bytes.
    fn check_stored<T>(stored: &str, expected: T, what: &str)
    where
        T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let bytes = unhex(stored);
        assert_eq!(hex(&encode(&expected).unwrap()), hex(&bytes), "the {what}'s layout changed");
        let decoded: T = decode(&bytes).unwrap_or_else(|e| panic!("the stored {what} does not decode: {e}"));
        assert_eq!(decoded, expected, "the stored {what} decodes to another value");
    }

    #[test]
    fn bad_bytes_are_errors() {
        assert!(matches!(decode::<Batch>(&[]), Err(CodecError::Empty)));
        assert!(matches!(decode::<Batch>(&[POSTCARD, 0xff]), Err(CodecError::Postcard(_))));
        assert!(matches!(decode::<Batch>(b"{\"at_ms\":"), Err(CodecError::Json(_))));
    }
}
