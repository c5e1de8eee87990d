//! The supervisors' board (Interaction Supervisor's views), served by every member on its HTTP
//! port: one page shipped inside the binary (`board.html`), its JSON, and a live feed of the
//! same events as `Watch`, as server-sent events.
//!
//! - `GET /board`: the page.
//! - `POST /board/session` with `{"token": …}` (administrator or site session token) or
//!   `{"site": N, "password": …}` (a site login): sets an HttpOnly, SameSite=Strict cookie that
//!   holds the credential; no secret ever travels in a URL. `DELETE /board/session` signs out.
//! - `GET /board/api/overview`: members, leader and term; sites with lease and message backlog;
//!   Enterprise Group Details per workgroup; the Interserver Routes matrix; the alert rules.
//! - `GET /board/api/presence?site=&workgroup=&group=&q=&offset=&limit=`: one page of the
//!   presence board (at most `PRESENCE_PAGE_MAX` rows; the total counts up to the search cap).
//! - `GET /board/events`: every event the viewer may see, `id` = revision; a reconnecting browser
//!   sends `Last-Event-ID` and resumes after it.
//!
//! A site sees what its principal sees over gRPC: its directory view and its events.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Query, State as Extract};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use collective_proto::v1 as pb;
use collective_statemachine::catalog::StatusGroup;
use collective_statemachine::limits::SEARCH_RESULTS_MAX;
use collective_statemachine::{EventRecord, Principal, SearchQuery};
use collective_sync::hub::Hub;
use serde::{Deserialize, Serialize};

use crate::api::convert;
use crate::auth::Caller;
use crate::node::Node;

/// The page.
const PAGE: &str = include_str!("board.html");
/// The cookie that carries a board session's credential.
const COOKIE: &str = "collective_board";
/// Rows of one presence page at most.
pub const PRESENCE_PAGE_MAX: usize = 500;
/// Events read from the hub per step of a feed.
const FEED_BATCH_EVENTS: usize = 256;
/// Chunks (one per batch) a feed queues for a slow connection before it stops reading the hub.
const FEED_CHUNKS_QUEUED: usize = 4;
/// Rendered events kept for the other boards (a few batches).
const FEED_FRAMES_MAX: usize = 4 * FEED_BATCH_EVENTS;
/// Shortest time between two chunks of a feed that has caught up (what it adds to a board's
/// update latency at most; a screen shows no more than a few dozen frames a second anyway).
const FEED_PACE: Duration = Duration::from_millis(25);
/// A comment sent on a feed that has been quiet this long, so proxies keep it open.
const FEED_KEEP_ALIVE: Duration = Duration::from_secs(15);
const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";
/// Tells the page to reload what it shows (its feed fell behind the retained history).
const RELOAD: &[u8] = b"event: reload\ndata: {}\n\n";
/// Workgroups shown in the overview at most (the rest: `collective route stats NAME`).
pub const OVERVIEW_WORKGROUPS_MAX: usize = 1_000;

type Failure = (StatusCode, Json<ErrorBody>);

/// An error as the page reads it.
#[derive(Serialize)]
pub struct ErrorBody {
    error: String,
}

fn failure(status: StatusCode, error: impl Into<String>) -> Failure {
    (status, Json(ErrorBody { error: error.into() }))
}

/// The board's routes, for the member's HTTP server.
pub fn routes(node: Arc<Node>) -> Router {
    Router::new()
        .route("/board", get(|| async { Html(PAGE) }))
        .route("/board/session", axum::routing::post(sign_in).delete(sign_out))
        .route("/board/api/overview", get(overview))
        .route("/board/api/presence", get(presence))
        .route("/board/events", get(events))
        .layer(Extension(Arc::new(FeedFrames::default())))
        .with_state(node)
}

/// Who is looking: the principal whose view the board shows.
fn viewer(node: &Node, headers: &HeaderMap) -> Result<Principal, Failure> {
    let Some(auth) = node.security.auth.as_ref() else {
        return Ok(Principal::Admin("admin".into()));
    };
    let token = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|cookies| cookies.split(';'))
        .filter_map(|cookie| cookie.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_string())
        .ok_or_else(|| failure(StatusCode::UNAUTHORIZED, "sign in"))?;
    let state = node.shared.state.read().expect("state lock");
    let authenticated = auth
        .token_caller(&token, node.now_ms(), &state)
        .map_err(|error| failure(StatusCode::UNAUTHORIZED, error.to_string()))?;
    match authenticated.caller {
        Caller::Admin(name) => Ok(Principal::Admin(name)),
        Caller::Site(site) => Ok(Principal::Site(site)),
        Caller::Node(_) => Err(failure(StatusCode::FORBIDDEN, "a member credential is not a board viewer")),
    }
}

/// What the sign-in form sends.
#[derive(Deserialize)]
struct SignIn {
    token: Option<String>,
    site: Option<u32>,
    password: Option<String>,
}

async fn sign_in(Extract(node): Extract<Arc<Node>>, Json(form): Json<SignIn>) -> Result<Response, Failure> {
    let token = match (form.token, form.site, form.password) {
        (Some(token), None, None) if !token.is_empty() => token,
        (None, Some(site), Some(password)) => {
            use collective_proto::v1::auth_server::Auth;
            let login = crate::api::auth::AuthService { node: node.clone() }
                .login(tonic::Request::new(pb::LoginRequest { site, password }))
                .await
                .map_err(|status| failure(StatusCode::UNAUTHORIZED, status.message().to_string()))?;
            login.into_inner().token
        }
        _ => return Err(failure(StatusCode::BAD_REQUEST, "send {\"token\"} or {\"site\", \"password\"}")),
    };
    if token.contains(|c: char| c.is_control() || c == ';' || c == ',' || c.is_whitespace()) {
        return Err(failure(StatusCode::UNAUTHORIZED, "the token is malformed"));
    }
    let mut headers = HeaderMap::new();
    headers.insert(
        header::COOKIE,
        format!("{COOKIE}={token}").parse().map_err(|_| failure(StatusCode::UNAUTHORIZED, "the token is malformed"))?,
    );
    let principal = viewer(&node, &headers)?;
    // Over TLS (`http_tls`) the cookie is never sent in the clear.
    let secure = if node.config.http_tls { "; Secure" } else { "" };
    let cookie = format!("{COOKIE}={token}; Path=/board; HttpOnly; SameSite=Strict{secure}");
    let body = Json(serde_json::json!({ "principal": principal.to_string() }));
    Ok(([(header::SET_COOKIE, cookie)], body).into_response())
}

async fn sign_out() -> impl IntoResponse {
    let cookie = format!("{COOKIE}=; Path=/board; HttpOnly; SameSite=Strict; Max-Age=0");
    ([(header::SET_COOKIE, cookie)], StatusCode::NO_CONTENT)
}

/// A site's line on the board.
#[derive(Serialize)]
struct SiteRow {
    id: u32,
    name: String,
    active: bool,
    lease_alive: bool,
    lease_expires_at_ms: u64,
    backlog_messages: u64,
    backlog_bytes: u64,
}

/// The overview: everything but the presence board.
#[derive(Serialize)]
struct Overview {
    viewer: String,
    member: u64,
    revision: u64,
    cluster: pb::ClusterStatus,
    sites: Vec<SiteRow>,
    workgroups: Vec<pb::WorkgroupStats>,
    routes: Vec<pb::RouteCount>,
    alerts: Vec<pb::AlertRuleState>,
}

async fn overview(Extract(node): Extract<Arc<Node>>, headers: HeaderMap) -> Result<Json<Overview>, Failure> {
    let principal = viewer(&node, &headers)?;
    let cluster = {
        use collective_proto::v1::cluster_server::Cluster;
        crate::api::cluster::ClusterService { node: node.clone() }
            .status(tonic::Request::new(pb::ClusterStatusRequest {}))
            .await
            .map_err(|status| failure(StatusCode::SERVICE_UNAVAILABLE, status.message().to_string()))?
            .into_inner()
    };
    let state = node.shared.state.read().expect("state lock");
    let now_ms = node.now_ms().max(state.last_at_ms);
    let sites = state
        .sites
        .values()
        .map(|site| {
            let lease = state.leases.get(&site.id);
            let queue = state.messaging.queues.get(&site.id);
            SiteRow {
                id: site.id,
                name: site.name.clone(),
                active: site.active,
                lease_alive: lease.is_some(),
                lease_expires_at_ms: lease.map_or(0, |lease| lease.expires_at_ms),
                backlog_messages: queue.map_or(0, |queue| queue.deliveries.len() as u64),
                backlog_bytes: queue.map_or(0, |queue| queue.bytes),
            }
        })
        .collect();
    let workgroups = state
        .workgroups
        .values()
        .take(OVERVIEW_WORKGROUPS_MAX)
        .filter_map(|workgroup| state.workgroup_stats(&workgroup.name, now_ms).ok())
        .map(|stats| convert::workgroup_stats(&stats))
        .collect();
    let routes = state
        .routing
        .matrix
        .iter()
        .flat_map(|(origin, row)| {
            row.iter().map(|(agent, count)| pb::RouteCount { origin_site: *origin, agent_site: *agent, count: *count })
        })
        .collect();
    Ok(Json(Overview {
        viewer: principal.to_string(),
        member: node.id,
        revision: state.revision,
        cluster,
        sites,
        workgroups,
        routes,
        alerts: crate::api::alerts::rules_out(&state),
    }))
}

/// The presence board's filters and page.
#[derive(Deserialize)]
struct PresenceQuery {
    site: Option<u32>,
    workgroup: Option<String>,
    group: Option<String>,
    q: Option<String>,
    offset: Option<usize>,
    limit: Option<usize>,
}

/// A line of the presence board.
#[derive(Serialize)]
struct PresenceRow {
    username: String,
    display_name: String,
    extension: String,
    home_site: u32,
    status: String,
    group: String,
    detail: String,
    logged_on_site: u32,
    on_phone: bool,
    since_ms: u64,
}

/// One page of the presence board.
#[derive(Serialize)]
struct PresencePage {
    revision: u64,
    /// Matching users, counted up to the search cap (`capped` says when there are more).
    total: usize,
    capped: bool,
    offset: usize,
    rows: Vec<PresenceRow>,
}

async fn presence(
    Extract(node): Extract<Arc<Node>>,
    headers: HeaderMap,
    Query(query): Query<PresenceQuery>,
) -> Result<Json<PresencePage>, Failure> {
    let principal = viewer(&node, &headers)?;
    let status_group = match query.group.as_deref().filter(|group| !group.is_empty()) {
        Some(group) => Some(
            StatusGroup::parse(group).ok_or_else(|| failure(StatusCode::BAD_REQUEST, format!("group {group:?}")))?,
        ),
        None => None,
    };
    let limit = query.limit.unwrap_or(50).clamp(1, PRESENCE_PAGE_MAX);
    let offset = query.offset.unwrap_or(0);
    let text = query.q.filter(|q| !q.trim().is_empty()).map(|q| q.trim().to_string());
    let is_extension = text.as_ref().is_some_and(|t| t.chars().all(|c| c.is_ascii_digit()));
    let search = SearchQuery {
        name: text.clone().filter(|_| !is_extension),
        extension: text.filter(|_| is_extension),
        visible_at_site: match principal {
            Principal::Site(site) => Some(site),
            _ => None,
        },
        home_site: query.site.filter(|site| *site != 0),
        workgroup: query.workgroup.filter(|w| !w.is_empty()),
        status_group,
        limit: SEARCH_RESULTS_MAX as u32,
        ..SearchQuery::default()
    };
    let state = node.shared.state.read().expect("state lock");
    let found = state.search(&search);
    let rows = found
        .iter()
        .skip(offset)
        .take(limit)
        .map(|entry| {
            let presence = entry.presence;
            let group = state.catalog.get(&presence.status_key).map_or("", |def| def.group.as_str());
            PresenceRow {
                username: entry.user.username.clone(),
                display_name: entry.user.display_name.clone(),
                extension: entry.user.extension.clone(),
                home_site: entry.user.home_site,
                status: presence.status_key.clone(),
                group: group.to_string(),
                detail: presence.detail.clone(),
                logged_on_site: presence.logon.as_ref().map_or(0, |logon| logon.site),
                on_phone: !presence.interactions.is_empty(),
                since_ms: presence.since_ms,
            }
        })
        .collect();
    Ok(Json(PresencePage {
        revision: state.revision,
        total: found.len(),
        capped: found.len() >= SEARCH_RESULTS_MAX,
        offset,
        rows,
    }))
}

async fn events(
    Extract(node): Extract<Arc<Node>>,
    Extension(frames): Extension<Arc<FeedFrames>>,
    headers: HeaderMap,
) -> Result<Response, Failure> {
    let principal = viewer(&node, &headers)?;
    let resume = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok())
        .map(|revision| revision + 1);
    // A browser resuming after a compaction (or a restart that replaced the history) starts
    // from now, told to reload what it shows.
    let (mut subscription, reload) = match Hub::subscribe(&node.shared.events, resume) {
        Ok(subscription) => (subscription, false),
        Err(_) if resume.is_some() => (
            Hub::subscribe(&node.shared.events, None)
                .map_err(|error| failure(StatusCode::SERVICE_UNAVAILABLE, format!("{error:?}")))?,
            true,
        ),
        Err(error) => return Err(failure(StatusCode::SERVICE_UNAVAILABLE, format!("{error:?}"))),
    };
    let (shared, node_events) = (node.shared.clone(), node.shared.events.clone());
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, Infallible>>(FEED_CHUNKS_QUEUED);
    tokio::spawn(async move {
        if reload && tx.send(Ok(Bytes::from_static(RELOAD))).await.is_err() {
            return;
        }
        loop {
            let batch = tokio::select! {
                batch = tokio::time::timeout(FEED_KEEP_ALIVE, subscription.next_batch(FEED_BATCH_EVENTS)) => batch,
                _ = tx.closed() => return,
            };
            let chunk = match batch {
                Err(_) => Bytes::from_static(KEEP_ALIVE),
                // Fell behind the retained history: the page reloads and reconnects.
                Ok(Err(_)) => return drop(tx.send(Ok(Bytes::from_static(RELOAD))).await),
                // Only a site's view is filtered (`event_visible_to`); an administrator sees every
                // event, with no lock on the state.
                Ok(Ok(batch)) => match &principal {
                    Principal::Site(_) => {
                        let state = shared.state.read().expect("state lock");
                        frames.chunk(
                            batch
                                .iter()
                                .map(|record| &**record)
                                .filter(|record| state.event_visible_to(&principal, &record.event)),
                        )
                    }
                    _ => frames.chunk(batch.iter().map(|record| &**record)),
                },
            };
            if !chunk.is_empty() && tx.send(Ok(chunk)).await.is_err() {
                return;
            }
            // A feed that has caught up waits a moment for more: a busy collective then costs
            // each board a few chunks a second, not one per applied batch.
            if subscription.cursor() >= node_events.next_sequence() {
                tokio::time::sleep(FEED_PACE).await;
            }
        }
    });
    let body = axum::body::Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    Ok(([(header::CONTENT_TYPE, "text/event-stream"), (header::CACHE_CONTROL, "no-cache")], body).into_response())
}

/// The live feed's events already turned into their server-sent-event text, by revision. Every
/// open board sends the same events: each is rendered once, not once per board, and a board's
/// batch goes out as one chunk. A revision always names the same event (it is applied from the
/// committed log), so a frame never goes stale; the oldest are dropped past `FEED_FRAMES_MAX`.
#[derive(Default)]
pub struct FeedFrames(std::sync::Mutex<BTreeMap<u64, Bytes>>);

impl FeedFrames {
    /// The frames of `records`, in order, as one chunk.
    fn chunk<'a>(&self, records: impl Iterator<Item = &'a EventRecord>) -> Bytes {
        let records: Vec<&EventRecord> = records.collect();
        let mut found: Vec<Option<Bytes>> = {
            let frames = self.0.lock().expect("feed frames lock");
            records.iter().map(|record| frames.get(&record.revision).cloned()).collect()
        };
        let mut rendered = Vec::new();
        for (slot, record) in found.iter_mut().zip(&records) {
            if slot.is_none() {
                let frame = frame(record);
                rendered.push((record.revision, frame.clone()));
                *slot = Some(frame);
            }
        }
        if !rendered.is_empty() {
            let mut frames = self.0.lock().expect("feed frames lock");
            frames.extend(rendered);
            while frames.len() > FEED_FRAMES_MAX {
                frames.pop_first();
            }
        }
        let mut chunk = Vec::with_capacity(found.iter().flatten().map(Bytes::len).sum());
        for frame in found.iter().flatten() {
            chunk.extend_from_slice(frame);
        }
        Bytes::from(chunk)
    }
}

/// One event as server-sent-event text: its revision as the id (what `Last-Event-ID` resumes
/// from) and its JSON on one line (serde_json escapes every newline inside strings).
fn frame(record: &EventRecord) -> Bytes {
    let data = serde_json::json!({ "kind": record.event.kind(), "event": convert::event(record) });
    Bytes::from(format!("id: {}\ndata: {data}\n\n", record.revision))
}
