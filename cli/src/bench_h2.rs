//! Unary gRPC calls straight over one HTTP/2 connection (the `h2` crate), for `bench presence
//! --transport h2` and `bench read --transport h2`, against collective or etcd alike.
//!
//! Why: on this 2-core machine the bench shares the cores with the members it measures, so its
//! own CPU per call lowers what it reports. Through tonic's channel a unary call passes through
//! the channel's buffer task, hyper's connection task and a task hyper spawns to send the
//! request's body, each woken once or twice per call (perf: tokio, h2 and tonic were most of the
//! bench's 22 µs per write at 1,000 clients). Here the calling task sends the request and its
//! one message itself and reads the answer's frames; only h2's connection task runs besides.
//! Plaintext only, with the CLI's bearer token if it has one; no reconnection: a call on a lost
//! connection fails as `Unavailable`, one not answered within [`CALL_TIMEOUT`] as
//! `DeadlineExceeded` (the deadline the bench gives tonic's channel too).

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{HeaderValue, CONTENT_TYPE, TE};
use http::uri::{Authority, PathAndQuery, Scheme};

use super::bench::Target;
use super::client::Client;

/// How long a call may take.
pub(super) const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// One HTTP/2 connection to a member; clones share it.
#[derive(Clone)]
pub(super) struct H2Channel {
    send: h2::client::SendRequest<Bytes>,
    authority: Authority,
    authorization: Option<HeaderValue>,
}

impl H2Channel {
    /// A connection to `endpoint` of `target` for `--transport h2`, with the CLI's bearer token
    /// for collective; refused when the CLI speaks TLS to collective.
    pub(super) async fn open(client: &Client, target: Target, endpoint: &str) -> anyhow::Result<H2Channel> {
        match target {
            Target::Collective if client.uses_tls() => {
                anyhow::bail!("--transport h2 speaks plaintext HTTP/2; with --cacert use --transport tonic")
            }
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
    pub(super) async fn unary(&self, path: &'static str, message: &impl prost::Message) -> Result<(), String> {
        match tokio::time::timeout(CALL_TIMEOUT, self.call(path, message)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!("{:?}", tonic::Code::DeadlineExceeded)),
        }
    }

    async fn call(&self, path: &'static str, message: &impl prost::Message) -> Result<(), String> {
        let unavailable = |_| format!("{:?}", tonic::Code::Unavailable);
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
        let mut send = self.send.clone().ready().await.map_err(unavailable)?;
        let (response, mut stream) = send.send_request(request, false).map_err(unavailable)?;
        stream.send_data(body.freeze(), true).map_err(unavailable)?;
        let response = response.await.map_err(unavailable)?;
        if response.status() != http::StatusCode::OK {
            return Err(format!("HTTP {}", response.status().as_u16()));
        }
        // A trailers-only answer (an error) carries its status in the headers.
        if let Some(status) = response.headers().get("grpc-status") {
            return grpc_status(Some(status));
        }
        let mut body = response.into_body();
        while let Some(data) = body.data().await {
            let data = data.map_err(unavailable)?;
            let _ = body.flow_control().release_capacity(data.len());
        }
        let trailers = body.trailers().await.map_err(unavailable)?;
        grpc_status(trailers.as_ref().and_then(|trailers| trailers.get("grpc-status")))
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

    #[test]
    fn a_status_is_its_code_and_a_missing_one_internal() {
        assert_eq!(grpc_status(Some(&HeaderValue::from_static("0"))), Ok(()));
        assert_eq!(grpc_status(Some(&HeaderValue::from_static("14"))), Err("Unavailable".to_string()));
        assert_eq!(grpc_status(None), Err("Internal".to_string()));
        assert_eq!(grpc_status(Some(&HeaderValue::from_static("x"))), Err("Internal".to_string()));
    }
}
