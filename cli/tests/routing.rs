//! Routing over three real nodes: concurrent requests through every node never share an agent,
//! a queued interaction is assigned the moment an agent frees up (and the origin site hears it
//! through a watch), a reservation survives the leader's death, and bad requests get clear
//! errors.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use collective_proto::v1 as pb;
use collective_proto::v1::routing_client::RoutingClient;
use common::{bad_field, site, user, Cluster};
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::Code;

async fn routing(cluster: &Cluster, node: usize) -> RoutingClient<Channel> {
    RoutingClient::new(cluster.channel(node).await)
}

/// Sites 1 and 2 with leases; workgroup Support with `agents` members (agent00, agent01, …)
/// logged on at alternating sites in Available.
async fn contact_center(agents: usize) -> Cluster {
    let cluster = Cluster::start(3, &[]).await;
    let mut directory = cluster.directory(0).await;
    let mut presence = cluster.presence(0).await;
    for id in [1, 2] {
        directory.add_site(site(id, &format!("Site {id}"))).await.unwrap();
        directory.grant_lease(pb::GrantLeaseRequest { site: id, ttl_ms: 300_000 }).await.unwrap();
    }
    let workgroup = pb::Workgroup { name: "Support".into(), spans_sites: true, ..Default::default() };
    directory.add_workgroup(pb::AddWorkgroupRequest { workgroup: Some(workgroup) }).await.unwrap();
    for i in 0..agents {
        let name = format!("agent{i:02}");
        let home = 1 + (i % 2) as u32;
        let mut request = user(&name, home, &format!("{}", 2000 + i));
        request.user.as_mut().unwrap().skills = [("english".to_string(), 50)].into();
        directory.add_user(request).await.unwrap();
        let member = pb::WorkgroupMemberRequest { workgroup: "Support".into(), username: name.clone() };
        directory.add_workgroup_member(member).await.unwrap();
        let logon = pb::LogOnRequest { username: name, site: home, server: String::new() };
        presence.log_on(logon).await.unwrap();
    }
    cluster
}

fn call(id: &str, origin: u32) -> pb::RouteRequest {
    pb::RouteRequest {
        interaction_id: id.into(),
        media: "call".into(),
        origin_site: origin,
        workgroup: "support".into(),
        skills: [("english".to_string(), 30)].into(),
        priority: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_routes_through_every_node_never_get_the_same_agent() {
    let cluster = contact_center(24).await;
    let mut clients = Vec::new();
    for node in 0..3 {
        clients.push(routing(&cluster, node).await);
    }
    // 36 calls at once, a third through each node: 24 agents, so 12 must queue.
    let mut tasks = Vec::new();
    for i in 0..36 {
        let mut client = clients[i % 3].clone();
        tasks.push(tokio::spawn(async move {
            client.route(call(&format!("call-{i:02}"), 1 + (i % 2) as u32)).await.unwrap().into_inner()
        }));
    }
    let mut agents: BTreeMap<String, String> = BTreeMap::new();
    let mut queued = 0;
    for task in tasks {
        let response = task.await.unwrap();
        let interaction = response.interaction.unwrap();
        match interaction.stage.as_str() {
            "reserved" => {
                let previous = agents.insert(interaction.agent.clone(), interaction.interaction_id.clone());
                assert!(
                    previous.is_none(),
                    "{} reserved for {previous:?} and {}",
                    interaction.agent,
                    interaction.interaction_id
                );
            }
            "queued" => queued += 1,
            other => panic!("unexpected stage {other}"),
        }
    }
    assert_eq!((agents.len(), queued), (24, 12));
    // Every node tells the same story.
    for node in 0..3 {
        let mut client = routing(&cluster, node).await;
        let stats = client
            .stats(pb::StatsRequest { workgroups: vec!["Support".into()], serializable: false })
            .await
            .unwrap()
            .into_inner();
        let support = &stats.workgroups[0];
        assert_eq!((support.reserved, support.available, support.queued, support.routed), (24, 0, 12, 24));
        let queue = client
            .list_queue(pb::ListQueueRequest { workgroup: "support".into(), limit: 0, serializable: false })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(queue.total, 12);
        let matrix = client.route_matrix(pb::RouteMatrixRequest { serializable: false }).await.unwrap().into_inner();
        assert_eq!(matrix.routes.iter().map(|r| r.count).sum::<u64>(), 24);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_call_goes_to_the_first_agent_who_frees_up_and_the_origin_hears_it() {
    let cluster = contact_center(2).await;
    let mut presence = cluster.presence(1).await;
    for agent in ["agent00", "agent01"] {
        let lunch = pb::SetStatusRequest {
            username: agent.into(),
            status_key: "At Lunch".into(),
            // 2100-01-01: far ahead (times past 9999 are refused).
            until_ms: Some(4_102_444_800_000),
            detail: String::new(),
        };
        presence.set_status(lunch).await.unwrap();
    }
    let mut client = routing(&cluster, 2).await;
    let routed = client.route(call("call-1", 2)).await.unwrap().into_inner();
    let interaction = routed.interaction.unwrap();
    assert_eq!(interaction.stage, "queued");
    assert!(interaction.decisions[0].shortlist.is_empty());
    // The origin site watches its routing events from the revision after the route.
    let watch = pb::WatchRequest {
        start_revision: routed.revision + 1,
        sites: vec![2],
        kinds: vec!["AgentReserved".into()],
        ..Default::default()
    };
    let mut events = cluster.presence(0).await.watch(watch).await.unwrap().into_inner();
    let available = pb::SetStatusRequest {
        username: "agent01".into(),
        status_key: "Available".into(),
        until_ms: None,
        detail: String::new(),
    };
    presence.set_status(available).await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(10), events.next()).await.unwrap().unwrap().unwrap();
    match event.body.unwrap() {
        pb::event::Body::AgentReserved(reserved) => {
            assert_eq!((reserved.interaction_id.as_str(), reserved.agent.as_str()), ("call-1", "agent01"));
        }
        other => panic!("expected AgentReserved, got {other:?}"),
    }
    // Routing the same id again answers with the same decision and changes nothing.
    let again = client.route(call("call-1", 2)).await.unwrap().into_inner();
    assert!(again.repeated);
    let interaction = again.interaction.unwrap();
    assert_eq!((interaction.stage.as_str(), interaction.agent.as_str()), ("reserved", "agent01"));
    assert_eq!(interaction.decisions.len(), 2, "queued, then reserved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_survives_the_leader_being_killed() {
    let mut cluster = contact_center(3).await;
    let leader = cluster.leader(0).await;
    let mut client = routing(&cluster, leader).await;
    let routed = client.route(call("call-1", 1)).await.unwrap().into_inner().interaction.unwrap();
    assert_eq!(routed.stage, "reserved");
    cluster.kill(leader);
    let survivors: Vec<usize> = (0..3).filter(|n| *n != leader).collect();
    cluster.wait_for_leader(&survivors).await;
    let mut client = routing(&cluster, survivors[0]).await;
    let explained = client
        .explain(pb::ExplainRequest { interaction_id: "call-1".into(), serializable: false })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((explained.stage.as_str(), explained.agent.as_str()), ("reserved", routed.agent.as_str()));
    let winner = &explained.decisions[0].shortlist[0];
    assert_eq!(winner.agent, routed.agent);
    // The agent takes it through another survivor: on the phone, and not routed to again.
    let mut other = routing(&cluster, survivors[1]).await;
    // Only the agent holding the reservation may take it.
    let wrong = pb::AcceptRequest { interaction_id: "call-1".into(), agent: "agent99".into() };
    assert_eq!(other.accept(wrong).await.unwrap_err().code(), Code::FailedPrecondition);
    let accept = pb::AcceptRequest { interaction_id: "call-1".into(), agent: routed.agent.clone() };
    other.accept(accept).await.unwrap();
    let next = other.route(call("call-2", 1)).await.unwrap().into_inner().interaction.unwrap();
    assert_eq!(next.stage, "reserved");
    assert_ne!(next.agent, routed.agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors() {
    let cluster = contact_center(1).await;
    let mut client = routing(&cluster, 0).await;
    let cases: Vec<(pb::RouteRequest, &str)> = vec![
        (pb::RouteRequest { interaction_id: String::new(), ..call("x", 1) }, "interaction_id"),
        (pb::RouteRequest { skills: [("english".to_string(), 101)].into(), ..call("x", 1) }, "skills"),
        (pb::RouteRequest { priority: 500, ..call("x", 1) }, "priority"),
        (pb::RouteRequest { media: "fax".into(), ..call("x", 1) }, "media"),
    ];
    for (request, field) in cases {
        let status = client.route(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert_eq!(bad_field(&status), field);
    }
    let status = client.route(pb::RouteRequest { workgroup: "Sales".into(), ..call("x", 1) }).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains("Sales"), "{}", status.message());
    let status =
        client.accept(pb::AcceptRequest { interaction_id: "nope".into(), agent: String::new() }).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    client.route(call("x", 1)).await.unwrap();
    let status = client.route(pb::RouteRequest { priority: 9, ..call("x", 1) }).await.unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    let settings = pb::RoutingSettings { workgroup: "support".into(), strategy: "random".into(), ..Default::default() };
    let status = client.set_settings(settings).await.unwrap_err();
    assert_eq!((status.code(), bad_field(&status).as_str()), (Code::InvalidArgument, "strategy"));
}
