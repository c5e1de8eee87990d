//! Unary gRPC calls straight over one HTTP/2 connection (the `h2` crate), for `bench presence
//! --transport h2` and `bench read --transport h2`, against collective or etcd alike.
//!
//! Why: on this 2-core machine the bench shares the cores with the members it measures, so its
//! own CPU per call lowers what it reports. Through tonic's channel a unary call passes through
//! the channel's buffer task, hyper's connection task and a task hyper spawns to send the
//! request's body, each woken once or twice per call (perf: tokio, h2 and tonic were most of the
//! bench's ~20 µs per write at 1,000 clients). Here the calling task sends the request and its
//! one message itself and reads the answer's frames; only h2's connection task runs besides.
//! Plaintext only, with the CLI's bearer token if it has one; no reconnection.
//!
//! Errors are named by gRPC code as tonic names them (an HTTP status by the gRPC spec's table,
//! an HTTP/2 reset by its reason, a lost connection `Unavailable`), except that a call not
//! answered within [`CALL_TIMEOUT`] (the deadline the bench gives tonic's channel too) is
//! `DeadlineExceeded`, where tonic's channel reports its own deadline as `Cancelled`.

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{HeaderValue, CONTENT_TYPE, TE};
use http::uri::{Authority, PathAndQuery, Scheme};

use super::bench::{Target, Transport};
use super::client::Client;

/// How long a call may take.
pub(super) const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// One HTTP/2 connection to a member; clones share it. Each worker holds a clone of its own:
/// a handle waits for the server's stream limit only for its own previous request, and a clone
/// per call would cost two locks of the connection's state.
#[derive(Clone)]
pub(super) struct H2Channel {
    send: h2::client::SendRequest<Bytes>,
    authority: Authority,
    authorization: Option<HeaderValue>,
}

/// Refuses `--transport h2` where it cannot go, before a bench touches the cluster (creates its
/// users): collective over TLS.
pub(super) fn check(client: &Client, target: Target, transport: Transport) -> anyhow::Result<()> {
    if transport == Transport::H2 && target == Target::Collective && client.uses_tls() {
        anyhow::bail!("--transport h2 speaks plaintext HTTP/2; with --cacert use --transport tonic");
    }
    Ok(())
}

impl H2Channel {
    /// A connection to `endpoint` of `target` for `--transport h2` (after [`check`]), with the
    /// CLI's bearer token for collective.
    pub(super) async fn open(client: &Client, target: Target, endpoint: &str) -> anyhow::Result<H2Channel> {
        match target {
            Target::Collective => H2Channel::connect(endpoint, client.authorization()).await,
            Target::Etcd => H2Channel::connect(endpoint, None).await,
        }
    }

    /// Connects to `endpoint` (`host:port` or `http://host:port`) and drives the connection in a
    /// task of its own until every clone is dropped.
    async fn connect(endpoint: &str, authorization: Option<HeaderValue>) -> anyhow::Result<H2Channel> {
        let address = match endpoint.split_once("://") {
            None => endpoint,
            Some(("http", address)) => address,
            Some((scheme, _)) => {
                anyhow::bail!("endpoint {endpoint}: --transport h2 speaks plaintext only, not {scheme}:// (use --transport tonic)")
            }
        };
        let authority: Authority =
            address.parse().map_err(|e| anyhow::anyhow!("endpoint {endpoint}: not host:port ({e})"))?;
        let tcp = tokio::time::timeout(
            std::time::Duration::from_millis(super::client::CONNECT_TIMEOUT_MS),
            tokio::net::TcpStream::connect(address),
        )
        .await
        .map_err(|_| {
            anyhow::anyhow!("endpoint {endpoint}: no connection within {} ms", super::client::CONNECT_TIMEOUT_MS)
        })?
        .map_err(|e| anyhow::anyhow!("endpoint {endpoint}: {e}"))?;
        tcp.set_nodelay(true)?;
        let (send, connection) = h2::client::handshake(tcp)
            .await
            .map_err(|e| anyhow::anyhow!("endpoint {endpoint}: HTTP/2 handshake: {e}"))?;
        tokio::spawn(async move {
            // Ends when every clone of `send` is dropped or the connection fails; a failure shows
            // in the calls, as `Unavailable`.
            let _ = connection.await;
        });
        Ok(H2Channel { send, authority, authorization })
    }

    /// Calls the unary method `path` (`/package.Service/Method`) with `message`; the error is the
    /// gRPC code's name, as the bench's other transports report it.
    pub(super) async fn unary(&mut self, path: &'static str, message: &impl prost::Message) -> Result<(), String> {
        match tokio::time::timeout(CALL_TIMEOUT, self.call(path, message)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!("{:?}", tonic::Code::DeadlineExceeded)),
        }
    }

    async fn call(&mut self, path: &'static str, message: &impl prost::Message) -> Result<(), String> {
        let h2_error = |error: h2::Error| format!("{:?}", h2_code(&error));
        let mut body = BytesMut::with_capacity(5 + message.encoded_len());
        body.put_u8(0); // not compressed
        body.put_u32(message.encoded_len() as u32);
        message.encode(&mut body).map_err(|_| format!("{:?}", tonic::Code::Internal))?;
        let uri = http::Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(self.authority.clone())
            .path_and_query(PathAndQuery::from_static(path))
            .build()
            .map_err(|_| format!("{:?}", tonic::Code::Internal))?;
        let mut request = http::Request::post(uri).body(()).map_err(|_| format!("{:?}", tonic::Code::Internal))?;
        let headers = request.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert(TE, HeaderValue::from_static("trailers"));
        if let Some(authorization) = &self.authorization {
            headers.insert(http::header::AUTHORIZATION, authorization.clone());
        }
        std::future::poll_fn(|cx| self.send.poll_ready(cx)).await.map_err(h2_error)?;
        let (response, mut stream) = self.send.send_request(request, false).map_err(h2_error)?;
        stream.send_data(body.freeze(), true).map_err(h2_error)?;
        let response = response.await.map_err(h2_error)?;
        if response.status() != http::StatusCode::OK {
            return Err(format!("{:?}", http_code(response.status())));
        }
        // A trailers-only answer (an error) carries its status in the headers.
        if let Some(status) = response.headers().get("grpc-status") {
            return grpc_status(Some(status));
        }
        let mut body = response.into_body();
        let mut received = 0;
        while let Some(data) = body.data().await {
            let data = data.map_err(h2_error)?;
            received += data.len();
            let _ = body.flow_control().release_capacity(data.len());
        }
        let trailers = body.trailers().await.map_err(h2_error)?;
        grpc_status(trailers.as_ref().and_then(|trailers| trailers.get("grpc-status")))?;
        // An answer without its message (a 5-byte prefix at least) is not one, as tonic has it.
        if received < 5 {
            return Err(format!("{:?}", tonic::Code::Internal));
        }
        Ok(())
    }
}

/// The code of a call that failed in HTTP/2, as tonic names it: a lost connection or one going
/// away is `Unavailable`, a reset by its reason.
fn h2_code(error: &h2::Error) -> tonic::Code {
    if error.is_io() || error.is_go_away() {
        return tonic::Code::Unavailable;
    }
    match error.reason() {
        Some(h2::Reason::CANCEL) => tonic::Code::Cancelled,
        Some(h2::Reason::REFUSED_STREAM) => tonic::Code::Unavailable,
        Some(h2::Reason::ENHANCE_YOUR_CALM) => tonic::Code::ResourceExhausted,
        Some(h2::Reason::INADEQUATE_SECURITY) => tonic::Code::PermissionDenied,
        _ => tonic::Code::Internal,
    }
}

/// The code of an answer whose HTTP status is not 200, by the gRPC spec's table
/// (`http-grpc-status-mapping.md`), as tonic has it.
fn http_code(status: http::StatusCode) -> tonic::Code {
    match status.as_u16() {
        400 => tonic::Code::Internal,
        401 => tonic::Code::Unauthenticated,
        403 => tonic::Code::PermissionDenied,
        404 => tonic::Code::Unimplemented,
        429 | 502 | 503 | 504 => tonic::Code::Unavailable,
        _ => tonic::Code::Unknown,
    }
}

/// `Ok` for grpc-status 0, else the code's name; a missing status is `Internal`, as tonic has it.
fn grpc_status(status: Option<&HeaderValue>) -> Result<(), String> {
    let code = status
        .and_then(|status| status.to_str().ok())
        .and_then(|status| status.parse::<i32>().ok())
        .map_or(tonic::Code::Internal, tonic::Code::from);
    match code {
        tonic::Code::Ok => Ok(()),
        code => Err(format!("{code:?}")),
    }
}

/// etcd's `PutRequest` (`etcdserverpb`, rpc.proto), the fields the bench sets.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct EtcdPutRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// The method of an etcd put.
pub(super) const ETCD_PUT: &str = "/etcdserverpb.KV/Put";

/// etcd's `RangeRequest`, the fields the bench sets: one key, linearizable or serializable.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct EtcdRangeRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bool, tag = "7")]
    pub serializable: bool,
}

/// The method of an etcd get.
pub(super) const ETCD_RANGE: &str = "/etcdserverpb.KV/Range";

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// A server answering each path its own way, checking the call's framing first: a call
    /// framed wrong is refused as `INVALID_ARGUMENT`.
    async fn serve(listener: tokio::net::TcpListener) {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut connection = h2::server::handshake(tcp).await.unwrap();
        while let Some(call) = connection.accept().await {
            let (request, respond) = call.unwrap();
            tokio::spawn(answer(request, respond));
        }
    }

    async fn answer(request: http::Request<h2::RecvStream>, mut respond: h2::server::SendResponse<Bytes>) {
        let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let framed_headers = header("content-type") == "application/grpc" && header("te") == "trailers";
        let token = header("authorization");
        let path = request.uri().path().to_string();
        let mut body = request.into_body();
        let mut bytes = Vec::new();
        while let Some(data) = body.data().await {
            let data = data.unwrap();
            body.flow_control().release_capacity(data.len()).unwrap();
            bytes.extend_from_slice(&data);
        }
        let framed_body = bytes.len() >= 5
            && bytes[0] == 0
            && u32::from_be_bytes(bytes[1..5].try_into().unwrap()) as usize == bytes.len() - 5;
        let trailers = |code: &str| {
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_str(code).unwrap());
            trailers
        };
        let ok = || http::Response::builder().status(200).header("content-type", "application/grpc").body(()).unwrap();
        let message = Bytes::from_static(&[0, 0, 0, 0, 0]);
        let status = match path.as_str() {
            _ if !(framed_headers && framed_body) => "3",
            "/t/token" if token != "Bearer s3cret" => "16",
            "/t/ok" | "/t/token" => "0",
            "/t/not-found" => "5",
            "/t/refused" => {
                let mut only = ok();
                only.headers_mut().insert("grpc-status", HeaderValue::from_static("16"));
                respond.send_response(only, true).unwrap();
                return;
            }
            "/t/unavailable" => {
                respond.send_response(http::Response::builder().status(503).body(()).unwrap(), true).unwrap();
                return;
            }
            "/t/no-trailers" => {
                respond.send_response(ok(), false).unwrap().send_data(message, true).unwrap();
                return;
            }
            "/t/no-message" => {
                respond.send_response(ok(), false).unwrap().send_trailers(trailers("0")).unwrap();
                return;
            }
            _ => "12",
        };
        let mut stream = respond.send_response(ok(), false).unwrap();
        stream.send_data(message, false).unwrap();
        stream.send_trailers(trailers(status)).unwrap();
    }

    #[tokio::test]
    async fn a_call_is_framed_as_grpc_and_every_answer_named_by_its_code() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(serve(listener));
        let token = Some(HeaderValue::from_static("Bearer s3cret"));
        let mut channel = H2Channel::connect(&format!("http://{address}"), token).await.unwrap();
        let message = EtcdPutRequest { key: b"k".to_vec(), value: b"v".to_vec() };
        let cases = [
            ("/t/ok", Ok(())),
            ("/t/token", Ok(())),
            ("/t/not-found", Err("NotFound")),
            ("/t/refused", Err("Unauthenticated")),
            ("/t/unavailable", Err("Unavailable")),
            ("/t/no-trailers", Err("Internal")),
            ("/t/no-message", Err("Internal")),
        ];
        for (path, expected) in cases {
            let outcome = channel.unary(path, &message).await;
            assert_eq!(outcome, expected.map_err(str::to_string), "{path}");
        }
        // Without the token the same call is refused.
        let mut stranger = H2Channel { authorization: None, ..channel.clone() };
        assert_eq!(stranger.unary("/t/token", &message).await, Err("Unauthenticated".to_string()));
    }

    #[tokio::test]
    async fn a_call_on_a_connection_the_server_dropped_is_unavailable() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut connection = h2::server::handshake(tcp).await.unwrap();
            // Takes the first call and goes away without answering it.
            let _call = connection.accept().await;
        });
        let mut channel = H2Channel::connect(&address, None).await.unwrap();
        let message = EtcdPutRequest { key: b"k".to_vec(), value: b"v".to_vec() };
        assert_eq!(channel.unary("/t/ok", &message).await, Err("Unavailable".to_string()));
        server.await.unwrap();
        assert_eq!(channel.unary("/t/ok", &message).await, Err("Unavailable".to_string()));
    }

    #[tokio::test]
    async fn only_plaintext_endpoints_are_taken() {
        let error = H2Channel::connect("https://127.0.0.1:1", None).await.err().unwrap().to_string();
        assert!(error.contains("plaintext only"), "{error}");
        let error = H2Channel::connect("127.0.0.1:1", None).await.err().unwrap().to_string();
        assert!(error.contains("endpoint 127.0.0.1:1"), "{error}");
    }

    #[test]
    fn etcd_requests_encode_as_etcds_protos() {
        // rpc.proto: PutRequest key = 1, value = 2; RangeRequest key = 1, serializable = 7.
        let put = EtcdPutRequest { key: b"k".to_vec(), value: b"v".to_vec() }.encode_to_vec();
        assert_eq!(put, [0x0a, 1, b'k', 0x12, 1, b'v']);
        let range = EtcdRangeRequest { key: b"k".to_vec(), serializable: true }.encode_to_vec();
        assert_eq!(range, [0x0a, 1, b'k', 0x38, 1]);
    }

    #[test]
    fn http_statuses_and_resets_map_as_in_tonic() {
        assert_eq!(http_code(http::StatusCode::NOT_FOUND), tonic::Code::Unimplemented);
        assert_eq!(http_code(http::StatusCode::SERVICE_UNAVAILABLE), tonic::Code::Unavailable);
        assert_eq!(http_code(http::StatusCode::IM_A_TEAPOT), tonic::Code::Unknown);
        assert_eq!(h2_code(&h2::Error::from(h2::Reason::CANCEL)), tonic::Code::Cancelled);
        assert_eq!(h2_code(&h2::Error::from(h2::Reason::REFUSED_STREAM)), tonic::Code::Unavailable);
    }

    #[test]
    fn a_status_is_its_code_and_a_missing_one_internal() {
        assert_eq!(grpc_status(Some(&HeaderValue::from_static("0"))), Ok(()));
        assert_eq!(grpc_status(Some(&HeaderValue::from_static("14"))), Err("Unavailable".to_string()));
        assert_eq!(grpc_status(None), Err("Internal".to_string()));
        assert_eq!(grpc_status(Some(&HeaderValue::from_static("x"))), Err("Internal".to_string()));
    }
}
