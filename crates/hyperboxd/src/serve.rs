//! The API's listeners and connections. Listeners are the unix socket and TCP
//! `[daemon] listen_addr`, bound here or handed over by systemd socket activation
//! (`LISTEN_FDS`). Each connection is served by hyper under the `[networking]` limits: at most
//! `max_connections` at once (the rest wait in the kernel's accept backlog until a slot frees),
//! `connection_timeout_secs` to send a request's headers (a slowloris client is dropped), TCP
//! keepalive probes after `tcp_keepalive_secs`. On shutdown, accepting stops and open
//! connections get a bounded time to finish.
//!
//! TCP connections go through the [`LiveSecurity`] in force when they are accepted: a TLS
//! handshake (which must finish within `connection_timeout_secs`, like the headers) when
//! `tls_cert` is set, and the bearer-token check in front of the API when `api_token_file` is
//! set. The unix socket is always plain.

use std::net::SocketAddr;
use std::os::fd::{FromRawFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use axum::Router;
use hb_config::Config;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{watch, Notify, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::tls::{LiveSecurity, TcpSecurity};

/// One listening socket of the API.
pub enum Listener {
    /// The unix socket (`[daemon] socket`).
    Unix(UnixListener),
    /// TCP (`[daemon] listen_addr`).
    Tcp(TcpListener),
}

impl Listener {
    /// Where it listens, for logs.
    pub fn describe(&self) -> String {
        match self {
            Listener::Unix(l) => match l.local_addr() {
                Ok(a) => match a.as_pathname() {
                    Some(p) => format!("unix://{}", p.display()),
                    None => "unix (unnamed)".into(),
                },
                Err(_) => "unix (unknown)".into(),
            },
            Listener::Tcp(l) => match l.local_addr() {
                Ok(a) => format!("tcp://{a}"),
                Err(_) => "tcp (unknown)".into(),
            },
        }
    }
}

/// The API's listeners, and whether systemd handed (some of) them over.
pub struct Listeners {
    /// Every socket to accept on.
    pub list: Vec<Listener>,
    /// True when the sockets came from socket activation (the unix socket file is then
    /// systemd's, not ours to remove).
    pub activated: bool,
    /// True when a TCP socket is off loopback (it then needs TLS and client authentication,
    /// on reloads too).
    pub remote_tcp: bool,
}

impl Listeners {
    /// Takes the sockets systemd passed (`LISTEN_FDS`), then binds what is still missing: the
    /// unix socket at `[daemon] socket` and TCP at `[daemon] listen_addr`. A TCP socket off
    /// loopback (configured or handed over by systemd) is refused unless `security` gives TLS
    /// and client authentication: the API controls root-level container work.
    pub fn open(config: &Config, security: &TcpSecurity) -> anyhow::Result<Listeners> {
        let tcp_addr: SocketAddr = config
            .daemon
            .listen_addr
            .parse()
            .with_context(|| format!("[daemon] listen_addr {:?}", config.daemon.listen_addr))?;
        refuse_unguarded(tcp_addr, security, "[daemon] listen_addr")?;
        let mut list = Vec::new();
        let activated_fds: Vec<RawFd> = sd_notify::listen_fds()
            .context("reading LISTEN_FDS from systemd")?
            .collect();
        let activated = !activated_fds.is_empty();
        for fd in activated_fds {
            let listener = adopt(fd)?;
            if let Listener::Tcp(l) = &listener {
                let addr = l
                    .local_addr()
                    .with_context(|| format!("address of socket-activated fd {fd}"))?;
                refuse_unguarded(addr, security, "the socket-activated TCP socket")?;
            }
            list.push(listener);
        }
        if !list.iter().any(|l| matches!(l, Listener::Unix(_))) {
            list.push(Listener::Unix(crate::socket::bind_unix(
                &config.daemon.socket,
            )?));
        }
        if !list.iter().any(|l| matches!(l, Listener::Tcp(_))) {
            let std = bind_tcp(tcp_addr)
                .with_context(|| format!("binding [daemon] listen_addr {tcp_addr}"))?;
            list.push(Listener::Tcp(
                TcpListener::from_std(std).context("registering the TCP listener")?,
            ));
        }
        let remote_tcp = list.iter().any(|l| match l {
            Listener::Tcp(t) => t.local_addr().map_or(true, |a| !a.ip().is_loopback()),
            Listener::Unix(_) => false,
        });
        Ok(Listeners {
            list,
            activated,
            remote_tcp,
        })
    }
}

/// Refuses a TCP address off loopback unless TCP has TLS and client authentication (config
/// validation says the same for `listen_addr`; this also covers systemd's sockets).
fn refuse_unguarded(addr: SocketAddr, security: &TcpSecurity, what: &str) -> anyhow::Result<()> {
    if addr.ip().is_loopback() || security.guards_remote_clients() {
        return Ok(());
    }
    bail!(
        "{what} {addr} is not a loopback address, and whoever reaches the API can run \
         containers as root: set [daemon] tls_cert and tls_key, and tls_client_ca (client \
         certificates) or api_token_file (a bearer token); or listen on 127.0.0.1"
    )
}

/// Clients beyond `max_connections` wait in the accept queue: make it deep (std's 128 would
/// drop SYNs of a burst, and clients would stall in SYN retries of a second or more).
const BACKLOG: i32 = 4096;

fn bind_tcp(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    sock.set_reuse_address(true)?;
    sock.bind(&addr.into())?;
    sock.listen(BACKLOG)?;
    sock.set_nonblocking(true)?;
    Ok(sock.into())
}

/// A socket passed by systemd: a unix or TCP listener, told apart by its address family.
fn adopt(fd: RawFd) -> anyhow::Result<Listener> {
    // SAFETY: systemd passes these fds to us alone (LISTEN_PID was checked by listen_fds), and
    // each is wrapped exactly once here.
    let sock = unsafe { socket2::Socket::from_raw_fd(fd) };
    let addr = sock
        .local_addr()
        .with_context(|| format!("inspecting socket-activated fd {fd}"))?;
    sock.set_nonblocking(true)
        .with_context(|| format!("making fd {fd} non-blocking"))?;
    if addr.is_unix() {
        let std: std::os::unix::net::UnixListener = sock.into();
        Ok(Listener::Unix(
            UnixListener::from_std(std).context("registering a socket-activated unix socket")?,
        ))
    } else if addr.as_socket().is_some() {
        let std: std::net::TcpListener = sock.into();
        Ok(Listener::Tcp(
            TcpListener::from_std(std).context("registering a socket-activated TCP socket")?,
        ))
    } else {
        bail!("socket-activated fd {fd} is neither a unix nor a TCP socket")
    }
}

/// The `[networking]` connection settings, live: SIGHUP changes them for new connections.
pub struct ConnectionLimits {
    slots: Arc<Semaphore>,
    max: AtomicUsize,
    header_timeout_ms: AtomicU64,
    keepalive_secs: AtomicU64,
}

impl ConnectionLimits {
    /// Limits from `[networking]`.
    pub fn new(config: &Config) -> Arc<ConnectionLimits> {
        let max = config.networking.max_connections as usize;
        let l = Arc::new(ConnectionLimits {
            slots: Arc::new(Semaphore::new(max)),
            max: AtomicUsize::new(max),
            header_timeout_ms: AtomicU64::new(0),
            keepalive_secs: AtomicU64::new(0),
        });
        l.apply(config);
        l
    }

    /// Takes the values of `config` (on start and on SIGHUP).
    pub fn apply(&self, config: &Config) {
        self.header_timeout_ms.store(
            config
                .networking
                .connection_timeout_secs
                .saturating_mul(1000),
            Ordering::Relaxed,
        );
        self.keepalive_secs
            .store(config.networking.tcp_keepalive_secs, Ordering::Relaxed);
        let new = config.networking.max_connections as usize;
        let old = self.max.swap(new, Ordering::Relaxed);
        if new > old {
            self.slots.add_permits(new - old);
        } else if new < old {
            // Taking slots away waits for connections holding them to end.
            let slots = self.slots.clone();
            tokio::spawn(async move {
                if let Ok(p) = slots.acquire_many_owned((old - new) as u32).await {
                    p.forget();
                }
            });
        }
    }

    /// The current maximum of concurrent connections.
    pub fn max_connections(&self) -> usize {
        self.max.load(Ordering::Relaxed)
    }
}

/// Told when connections open and close (the metrics' connection gauge).
pub trait ConnectionObserver: Send + Sync {
    /// A connection was accepted.
    fn opened(&self);
    /// A connection ended (or was upgraded away to a hijacked stream).
    fn closed(&self);
}

/// Connections in flight, so shutdown can wait for them.
#[derive(Default)]
struct InFlight {
    count: AtomicUsize,
    idle: Notify,
}

/// What connections share: the limits, the observer, the shutdown signal and the count of
/// connections in flight.
#[derive(Clone)]
struct Shared {
    limits: Arc<ConnectionLimits>,
    observer: Arc<dyn ConnectionObserver>,
    shutdown: watch::Receiver<bool>,
    in_flight: Arc<InFlight>,
}

/// Serves `app` on every listener until `shutdown` turns true, then lets open connections
/// finish for at most `drain`. TCP connections get the TLS and token check in force.
pub async fn serve(
    listeners: Listeners,
    app: Router,
    security: LiveSecurity,
    limits: Arc<ConnectionLimits>,
    observer: Arc<dyn ConnectionObserver>,
    shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    let tcp_app = app.clone().layer(axum::middleware::from_fn_with_state(
        security.clone(),
        crate::tls::require_token,
    ));
    let shared = Shared {
        limits,
        observer,
        shutdown,
        in_flight: Arc::new(InFlight::default()),
    };
    let mut loops = Vec::new();
    for listener in listeners.list {
        let (app, tls) = match &listener {
            Listener::Unix(_) => (app.clone(), None),
            Listener::Tcp(_) => (tcp_app.clone(), Some(security.clone())),
        };
        loops.push(tokio::spawn(accept_loop(
            listener,
            app,
            tls,
            shared.clone(),
        )));
    }
    for l in loops {
        let _ = l.await;
    }
    let in_flight = shared.in_flight;
    let wait_idle = async {
        loop {
            let notified = in_flight.idle.notified();
            if in_flight.count.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    };
    if tokio::time::timeout(drain, wait_idle).await.is_err() {
        tracing::warn!(
            open = in_flight.count.load(Ordering::Relaxed),
            "connections still open after {}s of draining; closing them",
            drain.as_secs()
        );
    }
}

/// One connection's hold on the server: its slot, its place in the observer's gauge and in
/// the drain count, all given back when it is dropped (however the connection ends).
struct ConnectionGuard {
    _permit: tokio::sync::OwnedSemaphorePermit,
    observer: Arc<dyn ConnectionObserver>,
    in_flight: Arc<InFlight>,
}

impl ConnectionGuard {
    fn new(permit: tokio::sync::OwnedSemaphorePermit, shared: &Shared) -> ConnectionGuard {
        shared.in_flight.count.fetch_add(1, Ordering::AcqRel);
        shared.observer.opened();
        ConnectionGuard {
            _permit: permit,
            observer: shared.observer.clone(),
            in_flight: shared.in_flight.clone(),
        }
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.observer.closed();
        if self.in_flight.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.in_flight.idle.notify_waiters();
        }
    }
}

/// `tls`: the TCP protection, for TCP listeners (whose connections take the TLS in force
/// when accepted).
async fn accept_loop(listener: Listener, app: Router, tls: Option<LiveSecurity>, shared: Shared) {
    let mut shutdown = shared.shutdown.clone();
    let limits = shared.limits.clone();
    loop {
        if *shutdown.borrow() {
            return;
        }
        // A free slot first: beyond max_connections, clients wait in the backlog.
        let permit = tokio::select! {
            p = limits.slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = shutdown.changed() => return,
        };
        let accepted = tokio::select! {
            a = accept(&listener, &limits) => a,
            _ = shutdown.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(listener = %listener.describe(), "accept failed: {e}");
                // Out of fds and the like: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let header_timeout =
            Duration::from_millis(limits.header_timeout_ms.load(Ordering::Relaxed).max(1));
        let guard = ConnectionGuard::new(permit, &shared);
        let service = TowerToHyperService::new(app.clone());
        let tls = tls.as_ref().and_then(LiveSecurity::tls);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            serve_connection(stream, peer, tls, service, header_timeout, shutdown).await;
            drop(guard);
        });
    }
}

/// Serves one accepted connection: the TLS handshake first when TCP has TLS (bounded by the
/// header timeout, so a client that connects and never speaks is cut off like a slowloris),
/// then HTTP/1.1 with upgrades until it ends or shutdown asks it to.
async fn serve_connection(
    stream: Stream,
    peer: Option<SocketAddr>,
    tls: Option<TlsAcceptor>,
    service: TowerToHyperService<Router>,
    header_timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let stream = match (stream, tls) {
        (Stream::Tcp(tcp), Some(acceptor)) => {
            let handshake = tokio::time::timeout(header_timeout, acceptor.accept(tcp));
            let done = tokio::select! {
                r = handshake => r,
                _ = shutdown.changed() => return,
            };
            match done {
                Ok(Ok(s)) => Stream::Tls(Box::new(s)),
                Ok(Err(e)) => {
                    tracing::info!(peer = ?peer, "TLS handshake refused: {e}");
                    return;
                }
                Err(_) => {
                    tracing::debug!(
                        peer = ?peer,
                        "TLS handshake not done within {} ms; closing",
                        header_timeout.as_millis()
                    );
                    return;
                }
            }
        }
        (s, _) => s,
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new());
    builder.header_read_timeout(header_timeout);
    let conn = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!("connection ended: {e}");
    }
}

/// One accepted connection (TCP gets keepalive and no Nagle delay) and its peer, for logs.
async fn accept(
    listener: &Listener,
    limits: &ConnectionLimits,
) -> std::io::Result<(Stream, Option<SocketAddr>)> {
    match listener {
        Listener::Unix(l) => {
            let (s, _) = l.accept().await?;
            Ok((Stream::Unix(s), None))
        }
        Listener::Tcp(l) => {
            let (s, peer) = l.accept().await?;
            // Options failing on one connection (its peer already gone) say nothing about the
            // listener: serve it anyway instead of backing off the accept loop.
            if let Err(e) = s.set_nodelay(true) {
                tracing::debug!("TCP_NODELAY: {e}");
            }
            let secs = limits.keepalive_secs.load(Ordering::Relaxed).max(1);
            let ka = socket2::TcpKeepalive::new()
                .with_time(Duration::from_secs(secs))
                .with_interval(Duration::from_secs(secs.clamp(1, 75)));
            if let Err(e) = socket2::SockRef::from(&s).set_tcp_keepalive(&ka) {
                tracing::debug!("TCP keepalive: {e}");
            }
            Ok((Stream::Tcp(s), Some(peer)))
        }
    }
}

/// A unix, TCP or TLS-over-TCP stream behind one type, for hyper.
pub enum Stream {
    /// From the unix socket.
    Unix(tokio::net::UnixStream),
    /// From TCP.
    Tcp(tokio::net::TcpStream),
    /// From TCP, after the TLS handshake.
    Tls(Box<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>),
}

impl tokio::io::AsyncRead for Stream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Unix(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Stream::Tcp(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => match std::pin::Pin::new(s.as_mut()).poll_read(cx, buf) {
                // A peer that half-closes TCP without TLS's close_notify (a hijacked stream's
                // client ending stdin) has ended its side: end of input, not a failure.
                std::task::Poll::Ready(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    std::task::Poll::Ready(Ok(()))
                }
                other => other,
            },
        }
    }
}

impl tokio::io::AsyncWrite for Stream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Unix(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Stream::Tcp(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Unix(s) => std::pin::Pin::new(s).poll_flush(cx),
            Stream::Tcp(s) => std::pin::Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Unix(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Stream::Tcp(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Tells systemd (when it started us with `Type=notify`) how the daemon is doing; a no-op
/// without `NOTIFY_SOCKET`.
pub fn notify_systemd(state: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(false, state) {
        tracing::warn!("cannot notify systemd: {e}");
    }
}

/// Removes the unix socket file on shutdown unless systemd owns it.
pub fn remove_socket_file(listeners_activated: bool, path: &Path) {
    if !listeners_activated {
        let _ = std::fs::remove_file(path);
    }
}
