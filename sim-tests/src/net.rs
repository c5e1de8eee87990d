//! The simulated network and clock handed to the real node: turmoil's TCP under tonic, and
//! turmoil's clock as the wall clock.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use collective::environment::Environment;
use hyper_util::client::legacy::connect::{Connected as ClientConnected, Connection};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::codegen::http::Uri;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::transport::{Channel, Endpoint};

/// The port every simulated node serves gRPC on.
pub const GRPC_PORT: u16 = 7000;

/// A turmoil TCP stream that tonic can serve and connect over.
pub struct SimStream(pub turmoil::net::TcpStream);

impl Connected for SimStream {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        TcpConnectInfo { local_addr: self.0.local_addr().ok(), remote_addr: self.0.peer_addr().ok() }
    }
}

impl Connection for SimStream {
    fn connected(&self) -> ClientConnected {
        ClientConnected::new()
    }
}

impl AsyncRead for SimStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for SimStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Connects tonic channels through turmoil's network.
#[derive(Clone, Copy, Debug, Default)]
pub struct SimConnector;

impl tower_service::Service<Uri> for SimConnector {
    type Response = TokioIo<SimStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        Box::pin(async move {
            let authority =
                uri.authority().ok_or_else(|| io::Error::other(format!("{uri} has no host:port")))?.to_string();
            let stream = turmoil::net::TcpStream::connect(authority).await?;
            Ok(TokioIo::new(SimStream(stream)))
        })
    }
}

/// The environment of a simulated node: turmoil's clock (from the fixed epoch of the run),
/// network, and random bytes from `seed`.
pub fn environment(seed: u64) -> Environment {
    let rng = std::sync::Mutex::new(<rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed));
    Environment {
        entropy: Arc::new(move |buffer| rand::RngCore::fill_bytes(&mut *rng.lock().expect("rng lock"), buffer)),
        clock: Arc::new(|| turmoil::since_epoch().map(|d| d.as_millis() as u64).unwrap_or(0)),
        connect: Arc::new(|endpoint: Endpoint| endpoint.connect_with_connector_lazy(SimConnector)),
        inline_blocking: true,
        log_sync: Default::default(),
    }
}

/// A client channel to a simulated node (by host name), connecting lazily.
pub fn channel(host: &str) -> Channel {
    Endpoint::from_shared(format!("http://{host}:{GRPC_PORT}"))
        .expect("host names are valid URIs")
        .connect_timeout(Duration::from_millis(500))
        .connect_with_connector_lazy(SimConnector)
}

/// Accepted connections of a turmoil listener, as tonic's `serve_with_incoming` wants them.
pub fn incoming(
    listener: turmoil::net::TcpListener,
) -> impl futures::Stream<Item = io::Result<SimStream>> + Send + 'static {
    futures::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _)| SimStream(stream));
        Some((accepted, listener))
    })
}
