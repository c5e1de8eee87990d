//! Inter-site messages and notes over three real nodes: the vendor's Handler1/2/3 scenario, a
//! disconnected site catching up in order, a leader killed while messages flow, request
//! timeouts, broadcast, full queues and every note error path.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use collective_client::{MessageReader, MessageWriter};
use collective_proto::v1 as pb;
use collective_proto::v1::messages_client::MessagesClient;
use collective_proto::v1::notes_client::NotesClient;
use common::{http_get, reason, site, Cluster};
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::Code;

async fn messages(cluster: &Cluster, node: usize) -> MessagesClient<Channel> {
    MessagesClient::new(cluster.channel(node).await)
}

async fn notes(cluster: &Cluster, node: usize) -> NotesClient<Channel> {
    NotesClient::new(cluster.channel(node).await)
}

async fn with_sites(sites: &[(u32, bool)]) -> Cluster {
    let cluster = Cluster::start(3, &[]).await;
    let mut directory = cluster.directory(0).await;
    for &(id, active) in sites {
        let mut request = site(id, &format!("Site {id}"));
        request.site.as_mut().unwrap().active = Some(active);
        directory.add_site(request).await.unwrap();
    }
    cluster
}

fn event(from_site: u32, to_site: u32, elements: Vec<pb::Element>) -> pb::SendEventRequest {
    pb::SendEventRequest { from_site, to_site, object_id: "Orders".into(), event_id: "New".into(), elements }
}

/// Handler3: a site's receiving handler. Events (correlation id 0) carry a string and an
/// integer; requests carry an integer and are answered with twice its value.
async fn handler3(mut client: MessagesClient<Channel>, site: u32, count: usize) -> Vec<(String, i64)> {
    let request = pb::SubscribeRequest {
        site,
        filters: vec![pb::HandlerFilter { object_id: "Orders".into(), event_id: String::new() }],
    };
    let mut stream = client.subscribe(request).await.unwrap().into_inner();
    let mut events = Vec::new();
    for _ in 0..count {
        let delivery = stream.next().await.unwrap().unwrap();
        let mut reader = MessageReader::new(&delivery.elements);
        if delivery.correlation_id == 0 {
            events.push((reader.string().unwrap().to_string(), reader.integer().unwrap()));
        } else {
            let value = reader.integer().unwrap();
            assert!(reader.string().is_err(), "a request carries one integer");
            let response = pb::SendResponseRequest {
                from_site: site,
                correlation_id: delivery.correlation_id,
                response_destination: delivery.response_destination,
                elements: MessageWriter::new().integer(value * 2).finish(),
            };
            client.send_response(response).await.unwrap();
        }
        client.ack(pb::AckRequest { site, ids: vec![delivery.id] }).await.unwrap();
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler1_handler2_handler3_between_two_sites() {
    let cluster = with_sites(&[(1, true), (2, true)]).await;
    let receiver = tokio::spawn(handler3(messages(&cluster, 1).await, 2, 2));
    let mut sender = messages(&cluster, 2).await;
    // Handler1: an event with a string and an integer.
    let sent = sender
        .send_event(event(1, 2, MessageWriter::new().string("new order").integer(42).finish()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sent.message_ids.len(), 1);
    // Handler2: a request with an integer, waiting for the response.
    let request = pb::SendRequestRequest {
        from_site: 1,
        to_site: 2,
        object_id: "Orders".into(),
        event_id: "Price".into(),
        elements: MessageWriter::new().integer(21).finish(),
        timeout_ms: 20_000,
    };
    let answer = sender.send_request(request).await.unwrap().into_inner();
    assert!(!answer.timed_out);
    let response = answer.response.unwrap();
    assert_eq!((response.correlation_id, response.from_site, response.to_site), (answer.correlation_id, 2, 1));
    assert_eq!(MessageReader::new(&response.elements).integer(), Ok(42));
    assert_eq!(receiver.await.unwrap(), vec![("new order".to_string(), 42)]);
    // Acknowledged and answered: nothing stays behind.
    let backlog = sender.backlog(pb::BacklogRequest { site: 0, serializable: false }).await.unwrap().into_inner();
    assert!(backlog.sites.iter().all(|s| s.messages == 0), "{backlog:?}");
    assert_eq!(backlog.open_requests, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnected_site_gets_everything_in_order_when_it_reconnects() {
    let cluster = with_sites(&[(1, true), (2, true)]).await;
    let mut client = messages(&cluster, 0).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        let sent =
            client.send_event(event(1, 2, MessageWriter::new().string(format!("m{i}")).integer(i).finish())).await;
        ids.extend(sent.unwrap().into_inner().message_ids);
    }
    let backlog = client.backlog(pb::BacklogRequest { site: 2, serializable: false }).await.unwrap().into_inner();
    assert_eq!(backlog.sites[0].messages, 20);
    // The backlog is in the metrics too (refreshed every second).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = http_get(&cluster.http[1], "/metrics");
        if metrics.contains("collective_site_queue_messages{site=\"2\"} 20") {
            break;
        }
        assert!(Instant::now() < deadline, "no backlog gauge for site 2 in:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The same task reports the member's resident memory.
    let metrics = http_get(&cluster.http[1], "/metrics");
    let rss: f64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("collective_process_resident_memory_bytes "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no resident memory gauge in:\n{metrics}"));
    assert!(rss > 1e6, "resident memory {rss} bytes");
    let receive = |node: usize| {
        let cluster = &cluster;
        async move {
            let mut stream = messages(cluster, node)
                .await
                .subscribe(pb::SubscribeRequest { site: 2, filters: vec![] })
                .await
                .unwrap()
                .into_inner();
            let mut got = Vec::new();
            while let Ok(Some(delivery)) = tokio::time::timeout(Duration::from_millis(1_500), stream.next()).await {
                let delivery = delivery.unwrap();
                got.push((delivery.id, MessageReader::new(&delivery.elements).string().unwrap().to_string()));
            }
            got
        }
    };
    let first = receive(1).await;
    assert_eq!(first.iter().map(|(id, _)| *id).collect::<Vec<_>>(), ids, "everything, in order");
    assert_eq!(first[19].1, "m19");
    // Half acknowledged; the rest comes again, with the same ids, on another node.
    client.ack(pb::AckRequest { site: 2, ids: ids[..10].to_vec() }).await.unwrap();
    let second = receive(2).await;
    assert_eq!(second, first[10..].to_vec());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_loses_no_acknowledged_send_and_reorders_nothing() {
    let mut cluster = with_sites(&[(1, true), (2, true)]).await;
    let endpoints: Vec<Channel> = {
        let mut channels = Vec::new();
        for node in 0..3 {
            channels.push(cluster.channel(node).await);
        }
        channels
    };
    // The receiver fails over between nodes and acknowledges what it handled.
    let receiver_channels = endpoints.clone();
    let receiver = tokio::spawn(async move {
        let mut seen: Vec<(u64, i64)> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut node = 0;
        while Instant::now() < deadline && seen.iter().filter(|(_, seq)| *seq == -1).count() == 0 {
            let mut client = MessagesClient::new(receiver_channels[node % 3].clone());
            node += 1;
            let Ok(stream) = client.subscribe(pb::SubscribeRequest { site: 2, filters: vec![] }).await else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            let mut stream = stream.into_inner();
            while let Ok(Some(Ok(delivery))) = tokio::time::timeout(Duration::from_secs(3), stream.next()).await {
                let seq = MessageReader::new(&delivery.elements).integer().unwrap();
                seen.push((delivery.id, seq));
                let _ = client.ack(pb::AckRequest { site: 2, ids: vec![delivery.id] }).await;
                if seq == -1 {
                    break;
                }
            }
        }
        seen
    });
    let leader = cluster.leader(0).await;
    let mut acknowledged = BTreeMap::new();
    let mut node = 0;
    for seq in 0..150i64 {
        if seq == 50 {
            cluster.kill(leader);
        }
        if node % 3 == leader && seq >= 50 {
            node += 1;
        }
        let mut client = MessagesClient::new(endpoints[node % 3].clone());
        match client.send_event(event(1, 2, MessageWriter::new().integer(seq).finish())).await {
            Ok(sent) => {
                acknowledged.insert(seq, sent.into_inner().message_ids[0]);
            }
            // Unknown outcome: not retried (a retry would be a new message), not counted; the
            // next send waits for the election a little.
            Err(_) => {
                node += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    // The end marker, retried until acknowledged.
    loop {
        node += 1;
        if node % 3 == leader {
            continue;
        }
        let mut client = MessagesClient::new(endpoints[node % 3].clone());
        if client.send_event(event(1, 2, MessageWriter::new().integer(-1).finish())).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let seen = receiver.await.unwrap();
    assert!(acknowledged.len() >= 100, "only {} sends acknowledged", acknowledged.len());
    let mut id_of_seq = BTreeMap::new();
    let mut last_new = 0;
    for (id, seq) in &seen {
        match id_of_seq.insert(*seq, *id) {
            // A redelivery: same message, same id.
            Some(previous) => assert_eq!(previous, *id, "seq {seq} arrived under two ids"),
            None => {
                assert!(*id > last_new, "delivery {id} (seq {seq}) came after {last_new}: reordered");
                last_new = *id;
            }
        }
    }
    for (seq, id) in &acknowledged {
        assert_eq!(id_of_seq.get(seq), Some(id), "acknowledged send {seq} (id {id}) was lost");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_failures_broadcast_and_full_queues() {
    let cluster = with_sites(&[(1, true), (2, true), (3, true), (4, false)]).await;
    let mut client = messages(&cluster, 0).await;
    let request = |to_site: u32, timeout_ms: u64| pb::SendRequestRequest {
        from_site: 1,
        to_site,
        object_id: "Orders".into(),
        event_id: "Price".into(),
        elements: vec![],
        timeout_ms,
    };
    // Nobody answers: a timeout, which is not an error.
    let answer = client.send_request(request(2, 300)).await.unwrap().into_inner();
    assert!(answer.timed_out && answer.response.is_none());
    // Failures are errors: unknown site, inactive site, a response nobody waits for.
    assert_eq!(client.send_request(request(9, 300)).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(client.send_request(request(4, 300)).await.unwrap_err().code(), Code::FailedPrecondition);
    let late = pb::SendResponseRequest {
        from_site: 2,
        correlation_id: answer.correlation_id,
        response_destination: 1,
        elements: vec![],
    };
    assert_eq!(client.send_response(late).await.unwrap_err().code(), Code::NotFound, "the request closed on timeout");
    // Broadcast: every other active site, once.
    let sent = client.send_event(event(1, 0, vec![])).await.unwrap().into_inner();
    assert_eq!(sent.message_ids.len(), 2);
    let backlog = client.backlog(pb::BacklogRequest { site: 0, serializable: false }).await.unwrap().into_inner();
    let counts: BTreeMap<u32, u64> = backlog.sites.iter().map(|s| (s.site, s.messages)).collect();
    // Site 2 also holds the unanswered request.
    assert_eq!(counts, BTreeMap::from([(1, 0), (2, 2), (3, 1), (4, 0)]));
    // Full queue: RESOURCE_EXHAUSTED, nothing dropped; room again after an acknowledgement.
    client.set_queue_limits(pb::QueueLimits { messages: 2, bytes: 1 << 20 }).await.unwrap();
    let full = client.send_event(event(1, 2, vec![])).await.unwrap_err();
    assert_eq!((full.code(), reason(&full)), (Code::ResourceExhausted, "LIMIT_REACHED".to_string()));
    client.ack(pb::AckRequest { site: 2, ids: vec![answer.correlation_id] }).await.unwrap();
    client.send_event(event(1, 2, vec![])).await.unwrap();
    // Bad input names the field.
    let empty = pb::SendEventRequest { object_id: String::new(), ..event(1, 2, vec![]) };
    assert_eq!(common::bad_field(&client.send_event(empty).await.unwrap_err()), "object_id");
    let hollow = event(1, 2, vec![pb::Element { value: None }]);
    assert_eq!(common::bad_field(&client.send_event(hollow).await.unwrap_err()), "elements[0]");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn note_operations_and_their_errors() {
    let cluster = with_sites(&[(1, true), (2, true)]).await;
    let mut client = notes(&cluster, 1).await;
    let integers =
        |values: Vec<i64>| pb::Attribute { values: Some(pb::attribute::Values::Integers(pb::IntegerList { values })) };
    let update = |attribute: &str, op: &str, values: pb::Attribute| pb::UpdateAttributeRequest {
        site: 1,
        name: "Order".into(),
        attribute: attribute.into(),
        op: op.into(),
        values: Some(values),
    };
    let get = |attribute: &str, kind: &str| pb::GetAttributeRequest {
        site: 1,
        name: "Order".into(),
        attribute: attribute.into(),
        r#type: kind.into(),
        serializable: false,
    };
    assert_eq!(
        client.update_attribute(update("qty", "replace", integers(vec![1]))).await.unwrap_err().code(),
        Code::NotFound
    );
    client.create_note(pb::CreateNoteRequest { site: 1, name: "Order".into(), ttl_minutes: 30 }).await.unwrap();
    let again = client.create_note(pb::CreateNoteRequest { site: 1, name: "order".into(), ttl_minutes: 0 }).await;
    assert_eq!(again.unwrap_err().code(), Code::AlreadyExists);
    assert_eq!(
        client.update_attribute(update("qty", "append", integers(vec![1]))).await.unwrap_err().code(),
        Code::NotFound
    );
    client.update_attribute(update("qty", "replace", integers(vec![1, 2, 2]))).await.unwrap();
    client.update_attribute(update("qty", "append", integers(vec![3]))).await.unwrap();
    client.update_attribute(update("qty", "remove", integers(vec![2]))).await.unwrap();
    let strings =
        pb::Attribute { values: Some(pb::attribute::Values::Strings(pb::StringList { values: vec!["x".into()] })) };
    assert_eq!(
        client.update_attribute(update("qty", "append", strings)).await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    assert_eq!(
        common::bad_field(&client.update_attribute(update("qty", "merge", integers(vec![]))).await.unwrap_err()),
        "op"
    );
    assert_eq!(client.get_attribute(get("qty", "Integer")).await.unwrap().into_inner(), integers(vec![1, 3]));
    // Missing and wrong type are different errors.
    assert_eq!(client.get_attribute(get("price", "Integer")).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(client.get_attribute(get("qty", "String")).await.unwrap_err().code(), Code::FailedPrecondition);
    assert_eq!(common::bad_field(&client.get_attribute(get("qty", "Float")).await.unwrap_err()), "type");
    // Notes are scoped to their site.
    let elsewhere = pb::GetNoteRequest { site: 2, name: "Order".into(), serializable: false };
    assert_eq!(client.get_note(elsewhere).await.unwrap_err().code(), Code::NotFound);
    let note =
        client.get_note(pb::GetNoteRequest { site: 1, name: "ORDER".into(), serializable: false }).await.unwrap();
    let note = note.into_inner();
    assert!(note.expires_at_ms.is_some());
    // Put Note / Get Note: the note travels inside a message, and the reader checks its name.
    let mut messages = messages(&cluster, 2).await;
    messages.send_event(event(1, 2, MessageWriter::new().note(note.clone()).finish())).await.unwrap();
    let mut stream = messages.subscribe(pb::SubscribeRequest { site: 2, filters: vec![] }).await.unwrap().into_inner();
    let delivery = stream.next().await.unwrap().unwrap();
    let mut reader = MessageReader::new(&delivery.elements);
    assert!(matches!(reader.note("Invoice"), Err(collective_client::ReadError::NoteNameMismatch { .. })));
    assert_eq!(reader.note("Order").unwrap().attributes, note.attributes);
    client.remove_note(pb::NoteRef { site: 1, name: "Order".into() }).await.unwrap();
    assert_eq!(
        client.remove_note(pb::NoteRef { site: 1, name: "Order".into() }).await.unwrap_err().code(),
        Code::NotFound
    );
    assert!(client
        .list_notes(pb::ListNotesRequest { site: 1, serializable: false })
        .await
        .unwrap()
        .into_inner()
        .notes
        .is_empty());
    let bad_ttl = client.create_note(pb::CreateNoteRequest { site: 1, name: "N".into(), ttl_minutes: 1_000_000 }).await;
    assert_eq!(common::bad_field(&bad_ttl.unwrap_err()), "ttl_minutes");
}
