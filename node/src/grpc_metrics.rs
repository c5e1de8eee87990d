//! Per-RPC metrics in the shape of grpc-prometheus (what etcd exports), as a tower layer in
//! front of every gRPC service: `grpc_server_started_total`, `grpc_server_handled_total` (with
//! `grpc_code`), `grpc_server_msg_received_total`, `grpc_server_msg_sent_total` and the
//! `grpc_server_handling_seconds` histogram, each labelled `grpc_type`, `grpc_service` and
//! `grpc_method`.
//!
//! Only the methods the server's descriptors name get their own labels; any other path counts
//! as `unknown`, so a client cannot grow the label sets. A call's code is read from the response
//! headers (a trailers-only error) or the trailers; a body dropped before its end is `Canceled`,
//! as grpc-go reports it. Handles are resolved once per method, so a call costs a few atomic
//! increments.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::{Body, Frame};
use metrics::{Counter, Histogram};
use prost::Message;
use tonic::codegen::http;
use tonic::codegen::Bytes;

/// Buckets of `grpc_server_handling_seconds`: grpc-prometheus' defaults (5 ms to 10 s).
pub const HANDLING_BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// gRPC status codes by number, as grpc-prometheus names them.
const CODES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];
const CANCELED: usize = 1;
const UNKNOWN: usize = 2;

/// One method's metric handles.
struct Method {
    labels: [(&'static str, String); 3],
    started: Counter,
    received: Counter,
    sent: Counter,
    seconds: Histogram,
    /// `grpc_server_handled_total` per code, registered on first use (a method exports only the
    /// codes it has answered).
    handled: [OnceLock<Counter>; 17],
}

impl Method {
    fn new(grpc_type: &str, service: &str, method: &str) -> Method {
        let labels = [
            ("grpc_type", grpc_type.to_string()),
            ("grpc_service", service.to_string()),
            ("grpc_method", method.to_string()),
        ];
        Method {
            started: metrics::counter!("grpc_server_started_total", &labels),
            received: metrics::counter!("grpc_server_msg_received_total", &labels),
            sent: metrics::counter!("grpc_server_msg_sent_total", &labels),
            seconds: metrics::histogram!("grpc_server_handling_seconds", &labels),
            handled: Default::default(),
            labels,
        }
    }

    fn handled(&self, code: usize) {
        let code = code.min(CODES.len() - 1);
        self.handled[code]
            .get_or_init(|| {
                let mut labels = self.labels.to_vec();
                labels.push(("grpc_code", CODES[code].to_string()));
                metrics::counter!("grpc_server_handled_total", &labels)
            })
            .increment(1);
    }
}

/// Every method the descriptors name, by path (`/collective.v1.Presences/SetStatus`).
struct Methods {
    by_path: HashMap<String, Arc<Method>>,
    unknown: Arc<Method>,
}

impl Methods {
    fn from_descriptors(sets: &[&[u8]]) -> Methods {
        let mut by_path = HashMap::new();
        for set in sets {
            let Ok(set) = prost_types::FileDescriptorSet::decode(*set) else { continue };
            for file in &set.file {
                for service in &file.service {
                    let name = format!("{}.{}", file.package(), service.name());
                    for method in &service.method {
                        let grpc_type = match (method.client_streaming(), method.server_streaming()) {
                            (false, false) => "unary",
                            (true, false) => "client_stream",
                            (false, true) => "server_stream",
                            (true, true) => "bidi_stream",
                        };
                        let path = format!("/{name}/{}", method.name());
                        by_path.insert(path, Arc::new(Method::new(grpc_type, &name, method.name())));
                    }
                }
            }
        }
        Methods { by_path, unknown: Arc::new(Method::new("unknown", "unknown", "unknown")) }
    }

    fn of(&self, path: &str) -> Arc<Method> {
        self.by_path.get(path).unwrap_or(&self.unknown).clone()
    }
}

/// Builds [`GrpcMetrics`] around the server's services.
#[derive(Clone)]
pub struct GrpcMetricsLayer {
    methods: Arc<Methods>,
}

impl GrpcMetricsLayer {
    /// Labels for every method of these encoded `FileDescriptorSet`s.
    pub fn new(descriptor_sets: &[&[u8]]) -> GrpcMetricsLayer {
        GrpcMetricsLayer { methods: Arc::new(Methods::from_descriptors(descriptor_sets)) }
    }
}

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> GrpcMetrics<S> {
        GrpcMetrics { inner, methods: self.methods.clone() }
    }
}

/// The metrics around a service.
#[derive(Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    methods: Arc<Methods>,
}

impl<S> tower::Service<http::Request<tonic::body::Body>> for GrpcMetrics<S>
where
    S: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let method = self.methods.of(request.uri().path());
        method.started.increment(1);
        let started = Instant::now();
        let request = request.map(|body| tonic::body::Body::new(Counted::new(body, method.received.clone(), None)));
        // The ready service is the one in `self`; a fresh clone takes its place.
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        Box::pin(async move {
            let response = inner.call(request).await?;
            let in_headers = status_code(response.headers());
            let end = Outcome { method: method.clone(), started, in_headers, recorded: false };
            Ok(response.map(|body| tonic::body::Body::new(Counted::new(body, method.sent.clone(), Some(end)))))
        })
    }
}

/// The `grpc-status` in a header map, as a code number.
fn status_code(headers: &http::HeaderMap) -> Option<usize> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// Records a call's code and duration once, when its response body ends (or is dropped).
struct Outcome {
    method: Arc<Method>,
    started: Instant,
    in_headers: Option<usize>,
    recorded: bool,
}

impl Outcome {
    fn record(&mut self, code: usize) {
        if !self.recorded {
            self.recorded = true;
            self.method.handled(code);
            self.method.seconds.record(self.started.elapsed().as_secs_f64());
        }
    }
}

impl Drop for Outcome {
    fn drop(&mut self) {
        self.record(CANCELED);
    }
}

/// A body whose gRPC messages are counted (length-prefixed frames: a flag byte and a 4-byte
/// length, split across chunks at any point); a response body also records its call's outcome.
struct Counted {
    inner: tonic::body::Body,
    messages: Counter,
    header: [u8; 5],
    header_len: usize,
    remaining: u64,
    outcome: Option<Outcome>,
}

impl Counted {
    fn new(inner: tonic::body::Body, messages: Counter, outcome: Option<Outcome>) -> Counted {
        Counted { inner, messages, header: [0; 5], header_len: 0, remaining: 0, outcome }
    }

    /// The messages that start in `chunk`.
    fn count(&mut self, mut chunk: &[u8]) -> u64 {
        let mut messages = 0;
        while !chunk.is_empty() {
            if self.remaining > 0 {
                let take = chunk.len().min(self.remaining.min(usize::MAX as u64) as usize);
                self.remaining -= take as u64;
                chunk = &chunk[take..];
                continue;
            }
            let take = chunk.len().min(5 - self.header_len);
            self.header[self.header_len..self.header_len + take].copy_from_slice(&chunk[..take]);
            self.header_len += take;
            chunk = &chunk[take..];
            if self.header_len == 5 {
                self.header_len = 0;
                self.remaining =
                    u64::from(u32::from_be_bytes([self.header[1], self.header[2], self.header[3], self.header[4]]));
                messages += 1;
            }
        }
        messages
    }
}

impl Body for Counted {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let data = data.clone();
                    let messages = this.count(&data);
                    if messages > 0 {
                        this.messages.increment(messages);
                    }
                } else if let (Some(trailers), Some(outcome)) = (frame.trailers_ref(), this.outcome.as_mut()) {
                    outcome.record(status_code(trailers).unwrap_or(UNKNOWN));
                }
            }
            Poll::Ready(None) => {
                if let Some(outcome) = this.outcome.as_mut() {
                    let code = outcome.in_headers.unwrap_or(UNKNOWN);
                    outcome.record(code);
                }
            }
            Poll::Ready(Some(Err(_))) | Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counted() -> Counted {
        Counted::new(tonic::body::Body::empty(), metrics::Counter::noop(), None)
    }

    #[test]
    fn messages_are_counted_across_any_split() {
        // Three messages of 3, 0 and 300 bytes.
        let mut stream = Vec::new();
        for len in [3u32, 0, 300] {
            stream.push(0u8);
            stream.extend_from_slice(&len.to_be_bytes());
            stream.extend(std::iter::repeat_n(7u8, len as usize));
        }
        for split in [1, 2, 4, 5, 6, 64, stream.len()] {
            let mut body = counted();
            let messages: u64 = stream.chunks(split).map(|chunk| body.count(chunk)).sum();
            assert_eq!(messages, 3, "split {split}");
            // Every byte consumed: no partial header or payload left.
            assert_eq!((body.header_len, body.remaining), (0, 0), "split {split}");
        }
    }

    #[test]
    fn only_described_methods_get_labels() {
        let methods = Methods::from_descriptors(&[collective_proto::FILE_DESCRIPTOR_SET]);
        let set_status = methods.of("/collective.v1.Presences/SetStatus");
        assert_eq!(set_status.labels[0].1, "unary");
        assert_eq!(set_status.labels[1].1, "collective.v1.Presences");
        assert_eq!(methods.of("/collective.v1.Presences/Submit").labels[0].1, "bidi_stream");
        assert_eq!(methods.of("/anything/else").labels[2].1, "unknown");
    }
}
