//! The HTTP server of the monitoring endpoint: hyper (HTTP/1.1) on a current-thread tokio
//! runtime in a thread of its own, so it shares nothing with ingest but the CPU.
//!
//! A client cannot tie it up: at most [`MAX_CONNECTIONS`] are served at once (more are
//! closed on accept), a request's header must arrive within [`HEADER_TIMEOUT`], and a
//! connection lives at most [`CONNECTION_LIFETIME`] (then it is closed after the response
//! in flight, which gets [`SHUTDOWN_GRACE`] to go out to a slow reader).

use std::convert::Infallible;
use std::io;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Semaphore};

use super::routes::Routes;

/// Connections served at once; Prometheus and an operator need a handful.
pub const MAX_CONNECTIONS: usize = 32;
/// Time for a client to send a request's header (also bounds an idle kept-alive connection).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest life of one connection (longer than Prometheus's usual scrape interval, so a
/// scraper's kept-alive connection serves a few scrapes).
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// After its lifetime, how long a connection may take to finish the response in flight.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Pause after a failed accept (e.g. out of file descriptors), instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Binds the endpoint's socket (at startup, so a port in use stops the listener at once).
pub fn bind(addr: SocketAddr) -> io::Result<StdTcpListener> {
    let listener = StdTcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// The running server; [`HttpServer::shutdown`] stops it.
pub struct HttpServer {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    local_addr: SocketAddr,
}

impl HttpServer {
    /// Serves `routes` on `listener` from a new thread.
    pub fn start(listener: StdTcpListener, routes: Routes) -> io::Result<HttpServer> {
        let local_addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (stop, stopped) = oneshot::channel();
        let routes = Arc::new(routes);
        let thread = std::thread::Builder::new().name("http".into()).spawn(move || {
            runtime.block_on(async move {
                match TcpListener::from_std(listener) {
                    Ok(listener) => serve(listener, routes, stopped).await,
                    Err(error) => tracing::error!("http: cannot serve: {error}"),
                }
            });
            // Connections still open are dropped with the runtime.
        })?;
        Ok(HttpServer { stop: Some(stop), thread: Some(thread), local_addr })
    }

    /// The address served (the port is known even when the config said `:0`).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, drops open connections and ends the thread.
    pub fn shutdown(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop_now();
    }
}

async fn serve(listener: TcpListener, routes: Arc<Routes>, mut stopped: oneshot::Receiver<()>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut refused_since_report = 0u64;
    loop {
        let accepted = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!("http: accept failed: {error}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Closing at once keeps the ones being served going; said once per burst.
            if refused_since_report == 0 {
                tracing::warn!(
                    "http: {MAX_CONNECTIONS} connections already open; closing new ones"
                );
            }
            refused_since_report += 1;
            drop(stream);
            continue;
        };
        refused_since_report = 0;
        let routes = routes.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let reply = routes.respond(request.method(), request.uri());
                async move { Ok::<_, Infallible>(reply) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                () = tokio::time::sleep(CONNECTION_LIFETIME) => {
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(SHUTDOWN_GRACE, connection).await;
                }
            }
            drop(slot);
        });
    }
}
