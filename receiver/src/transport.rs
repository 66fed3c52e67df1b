//! The receiver's HTTP/1.1 transport: the accept loop and the life of each
//! connection. It bounds what a client can hold without sending a complete
//! request: the number of open connections (`--max-connections`; beyond it
//! the loop stops accepting and the kernel queues new connections), and the
//! time to send a request head (`--header-timeout-secs`), which also closes
//! idle keep-alive connections, and as long for an answer to make progress
//! towards a client that does not read it (hyper has no write timeout, and
//! an unread answer would otherwise hold its connection and memory for
//! ever). Bodies are read by the handlers under their own limits
//! ([`crate::body`]).
//!
//! A stalled client must cost little memory: a connection is handed to
//! hyper (and gets hyper's buffers) only once its first request head is
//! complete, and the request head is copied out of hyper's read buffer so
//! that hyper can reuse that buffer for the body.
//!
//! An answer sent before the request body was read (a 413, a timeout, a
//! refusal) announces `Connection: close`, and the connection then closes
//! "lingering": it sends its end of the stream and reads and discards what
//! the client is still sending, for a bounded time and amount, before
//! closing. Closing a socket with unread data makes the kernel reset the
//! connection, and a reset destroys the answer before the client reads it.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{header, HeaderMap, HeaderValue, Request, Uri};
use axum::response::Response;
use axum::Router;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower_service::Service;

use crate::metrics::{Metrics, Phase};

/// Limits of the transport; see the module documentation.
#[derive(Debug, Clone, Copy)]
pub struct TransportLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
}

/// hyper's per-connection read buffer grows up to this. It bounds the
/// memory of a connection that sends fast and then stalls, and the size of
/// a request head (a larger head is answered 431).
const MAX_BUFFER: usize = 16 * 1024;

/// A lingering close reads at most this much, for at most this long, and
/// stops after this long without data.
const LINGER_BYTES: usize = 16 << 20;
const LINGER_TIME: Duration = Duration::from_secs(5);
const LINGER_IDLE: Duration = Duration::from_secs(2);

/// At shutdown, connections get this long to finish the request in hand;
/// what is left then is dropped (the writer still commits its queue).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `shutdown` resolves, then stops
/// accepting, lets every connection finish its request in hand (up to
/// [`SHUTDOWN_GRACE`]) and returns once all connections are closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: TransportLimits,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_BUFFER)
        .keep_alive(true);
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let stream = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of file descriptors or memory: wait for some to
                    // be freed rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
        };
        connections.spawn(connection(
            ClientStream::new(stream, limits.header_timeout),
            builder.clone(),
            app.clone(),
            metrics.clone(),
            stopping.clone(),
            slot,
        ));
    }
    drop(listener);
    let _ = stop.send(true);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            left = connections.len(),
            "closing connections still busy {} s after shutdown began",
            SHUTDOWN_GRACE.as_secs()
        );
        connections.shutdown().await;
    }
}

/// Errors of one incoming connection, not of the listener.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset)
}

/// Serves one connection until it ends, then closes it lingering.
async fn connection(
    mut stream: ClientStream,
    builder: http1::Builder,
    app: Router,
    metrics: Arc<Metrics>,
    mut stopping: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    let _open = metrics.connection_opened();
    let _ = stream.stream.set_nodelay(true);
    // hyper gets the connection once the first request head is complete:
    // until then it costs two buffers (8 and 16 KiB), this wait only the
    // bytes received.
    let head = tokio::select! {
        head = tokio::time::timeout(stream.timeout, stream.read_head()) => head,
        _ = stopping.wait_for(|stop| *stop) => return,
    };
    match head {
        Ok(true) => {}
        Ok(false) => return,
        Err(_) => {
            metrics.timeout(Phase::Head);
            return;
        }
    }
    let service = hyper::service::service_fn(move |request| {
        let app = app.clone();
        // Boxed so that the connection can be polled without pinning it,
        // which taking the socket back for the lingering close requires.
        Box::pin(respond(app, request))
            as Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>
    });
    let mut conn = builder.serve_connection(TokioIo::new(stream), service);
    let ended = tokio::select! {
        result = std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)) => Some(result),
        _ = stopping.wait_for(|stop| *stop) => None,
    };
    let result = match ended {
        Some(result) => result,
        None => {
            // Shutdown: close when idle, else after the request in hand.
            Pin::new(&mut conn).graceful_shutdown();
            std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)).await
        }
    };
    match result {
        Err(e) if e.is_timeout() => {
            // No complete request head in time (or an idle keep-alive
            // connection): the client is not sending, close at once.
            metrics.timeout(Phase::Head);
            return;
        }
        Err(e) if send_timed_out(&e) => {
            // The client does not read: no answer left to deliver.
            metrics.timeout(Phase::Send);
            return;
        }
        Err(e) => tracing::debug!(error = %e, "connection ended with an error"),
        Ok(()) => {}
    }
    linger(conn.into_parts().io.into_inner().stream).await;
}

/// Whether `e` is the failure of [`ClientStream`]'s send timeout.
fn send_timed_out(e: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        source = s.source();
    }
    false
}

/// Passes one request to the router. When the answer leaves part of the
/// request body unread, it says `Connection: close`: the rest of the body
/// would otherwise be taken for the next request.
async fn respond(mut app: Router, request: Request<Incoming>) -> Result<Response, Infallible> {
    let (mut parts, body) = request.into_parts();
    detach_head(&mut parts);
    let ended = Arc::new(AtomicBool::new(false));
    let had_body = !hyper::body::Body::is_end_stream(&body);
    let body = axum::body::Body::new(TrackEnd { inner: body, ended: ended.clone() });
    let mut response = app.call(Request::from_parts(parts, body)).await?;
    if had_body && !ended.load(Ordering::Acquire) {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(response)
}

/// Copies the request head out of hyper's read buffer. hyper's URI and
/// header values are slices of that buffer, and while any of them lives
/// hyper cannot reuse the buffer to read the body: it allocates another
/// one, 8 KiB more for every client that stalls in its body.
fn detach_head(parts: &mut axum::http::request::Parts) {
    if let Ok(uri) = Uri::try_from(parts.uri.to_string()) {
        parts.uri = uri;
    }
    let mut headers = HeaderMap::with_capacity(parts.headers.len());
    for (name, value) in &parts.headers {
        let mut copy = HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
        copy.set_sensitive(value.is_sensitive());
        headers.append(name.clone(), copy);
    }
    parts.headers = headers;
}

/// A request body that records whether it was read to its end.
struct TrackEnd {
    inner: Incoming,
    ended: Arc<AtomicBool>,
}

impl hyper::body::Body for TrackEnd {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None))
            || (matches!(polled, Poll::Ready(Some(Ok(_)))) && self.inner.is_end_stream())
        {
            self.ended.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A client's socket as hyper sees it: the bytes read while waiting for the
/// first request head come first, and a write that makes no progress for
/// `timeout` fails (the client is not reading its answer).
struct ClientStream {
    stream: TcpStream,
    /// Read before hyper took over; `consumed` of them already passed on.
    head: Vec<u8>,
    consumed: usize,
    timeout: Duration,
    /// Armed while a write is pending; reset by any progress.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl ClientStream {
    fn new(stream: TcpStream, timeout: Duration) -> ClientStream {
        ClientStream { stream, head: Vec::new(), consumed: 0, timeout, stalled: None }
    }

    /// Reads until the first request head is complete (true), or the client
    /// closes or fails (false). A head longer than hyper's buffer is handed
    /// on as complete: hyper answers it with 431.
    async fn read_head(&mut self) -> bool {
        loop {
            if self.stream.readable().await.is_err() {
                return false;
            }
            // The buffer lives only while there is data to copy: a client
            // that stalls holds just the bytes it sent.
            let mut buf = [0u8; 4096];
            match self.stream.try_read(&mut buf) {
                Ok(0) => return false,
                Ok(n) => {
                    // Blank lines before a request are skipped (as hyper
                    // does), so that "\r\n\r\n" alone is no complete head.
                    let mut data = &buf[..n];
                    if self.head.is_empty() {
                        let blank = data.iter().take_while(|b| matches!(b, b'\r' | b'\n')).count();
                        data = &data[blank..];
                        if data.is_empty() {
                            continue;
                        }
                    }
                    let from = self.head.len().saturating_sub(3);
                    self.head.reserve_exact(data.len());
                    self.head.extend_from_slice(data);
                    let tail = &self.head[from..];
                    let complete = tail.windows(4).any(|w| w == b"\r\n\r\n")
                        || tail.windows(2).any(|w| w == b"\n\n");
                    if complete || self.head.len() >= MAX_BUFFER {
                        return true;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return false,
            }
        }
    }

    /// Passes a write's result through, failing one that stayed pending
    /// past the timeout.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if polled.is_ready() {
            self.stalled = None;
            return polled;
        }
        let timeout = self.timeout;
        let stalled = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client did not read its answer in time",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl tokio::io::AsyncRead for ClientStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.consumed < self.head.len() {
            let n = buf.remaining().min(self.head.len() - self.consumed);
            let from = self.consumed;
            buf.put_slice(&self.head[from..from + n]);
            self.consumed += n;
            if self.consumed == self.head.len() {
                self.head = Vec::new();
                self.consumed = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for ClientStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.watch(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.stream).poll_flush(cx);
        self.watch(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Sends our end of the stream after the answer, then reads and discards
/// what the client still sends until it closes too, goes quiet or exceeds
/// the linger limits; then the socket is closed.
async fn linger(mut stream: TcpStream) {
    use tokio::io::AsyncWriteExt;
    if stream.shutdown().await.is_err() {
        return;
    }
    let until = Instant::now() + LINGER_TIME;
    let mut left = LINGER_BYTES;
    loop {
        let wait = until.min(Instant::now() + LINGER_IDLE);
        match tokio::time::timeout_at(wait, stream.readable()).await {
            Ok(Ok(())) => {}
            _ => return,
        }
        // The buffer lives only while data is there to read: a lingering
        // connection holds no memory while it waits.
        let mut buf = [0u8; 16 * 1024];
        match stream.try_read(&mut buf) {
            Ok(0) => return,
            Ok(n) if n >= left => return,
            Ok(n) => left -= n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

/// Raises the soft limit on open files towards what `max_connections`
/// needs (plus room for the database, DNS and logs), within the hard
/// limit. Returns the soft limit now in force, or `None` when unknown.
pub fn raise_open_file_limit(max_connections: usize) -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let wanted = max_connections as u64 + 256;
    let limit = getrlimit(Resource::Nofile);
    let current = limit.current?;
    if current >= wanted {
        return Some(current);
    }
    let raised = limit.maximum.map_or(wanted, |hard| hard.min(wanted));
    if raised <= current {
        return Some(current);
    }
    match setrlimit(Resource::Nofile, Rlimit { current: Some(raised), maximum: limit.maximum }) {
        Ok(()) => Some(raised),
        Err(e) => {
            tracing::warn!(error = %e, "could not raise the open-file limit");
            Some(current)
        }
    }
}
