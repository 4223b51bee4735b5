//! The CLI's connection to hyperboxd: HTTP/1.1 over the unix socket (`unix://PATH`) or TCP
//! (`tcp://HOST:PORT`, with TLS and a bearer token when asked: see `tls.rs`), one request per
//! connection, with errors that say how to start the daemon when nobody answers and what to
//! change when TLS or the token is refused.

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::tls::{ApiToken, ClientTls, SecurityOptions};

/// Default daemon address.
pub const DEFAULT_HOST: &str = "unix:///run/hyperbox/hyperbox.sock";

/// Where the daemon listens.
#[derive(Clone, Debug)]
pub enum DaemonAddr {
    /// A unix socket path.
    Unix(String),
    /// host:port.
    Tcp(String),
}

impl DaemonAddr {
    /// Parses `unix:///path`, `tcp://host:port`, `https://host:port` (TCP; the caller turns
    /// TLS on), or a bare socket path.
    pub fn parse(s: &str) -> anyhow::Result<DaemonAddr> {
        if let Some(p) = s.strip_prefix("unix://") {
            Ok(DaemonAddr::Unix(p.to_string()))
        } else if let Some(h) = s
            .strip_prefix("tcp://")
            .or_else(|| s.strip_prefix("https://"))
        {
            Ok(DaemonAddr::Tcp(h.trim_end_matches('/').to_string()))
        } else if s.starts_with('/') {
            Ok(DaemonAddr::Unix(s.to_string()))
        } else {
            bail!(
                "invalid daemon address {s:?}: use unix:///path/to/socket, tcp://host:port or \
                 https://host:port"
            )
        }
    }
}

impl std::fmt::Display for DaemonAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DaemonAddr::Unix(p) => write!(f, "unix://{p}"),
            DaemonAddr::Tcp(h) => write!(f, "tcp://{h}"),
        }
    }
}

/// How hb reaches hyperboxd: the address, and on TCP the TLS settings and the bearer token
/// (the unix socket needs neither: its file mode guards it).
#[derive(Clone)]
pub struct Daemon {
    addr: DaemonAddr,
    tls: Option<ClientTls>,
    token: Option<ApiToken>,
}

impl Daemon {
    /// The daemon at `host` (`-H`) with `options`; reads the certificate, key and token files
    /// now, so a missing or broken one is reported before anything is sent. `https://` asks
    /// for TLS as `--tls` does.
    pub fn new(host: &str, options: &SecurityOptions) -> anyhow::Result<Daemon> {
        let addr = DaemonAddr::parse(host)?;
        let (tls, token) = match &addr {
            DaemonAddr::Tcp(host_port) => {
                let tls = if host.starts_with("https://") || options.wants_tls() {
                    Some(ClientTls::new(options, host_port)?)
                } else {
                    None
                };
                (tls, ApiToken::from_options(options)?)
            }
            // A flag is a mistake worth saying; HYPERBOX_TLS_VERIFY in the environment is
            // meant for the TCP daemon and does not stop hb from using a local socket.
            DaemonAddr::Unix(_) if options.wants_tls_by_flag() => bail!(
                "TLS options (--tls, --tlsverify, --tlscacert, --tlscert, --tlskey) are for \
                 tcp:// addresses; {addr} is a unix socket, guarded by its file mode"
            ),
            DaemonAddr::Unix(_) => (None, None),
        };
        Ok(Daemon { addr, tls, token })
    }

    /// A request error as the user should read it: a TLS failure says what to change, and a
    /// plain connection to a TLS port says to use TLS.
    fn request_failed(&self, e: hyper::Error) -> anyhow::Error {
        match &self.tls {
            Some(tls) => {
                if let Some(why) = tls.explain(&e) {
                    return anyhow!("talking to the daemon at {self}: {why}");
                }
            }
            None if matches!(self.addr, DaemonAddr::Tcp(_)) && looks_like_tls_port(&e) => {
                return anyhow!(
                    "talking to the daemon at {self}: {e}\nthe answer is not plain HTTP: if \
                     the daemon serves TLS on this port ([daemon] tls_cert), add --tlsverify \
                     --tlscacert FILE (or -H https://HOST:PORT)"
                );
            }
            None => {}
        }
        anyhow::Error::new(e).context("talking to the daemon (did it stop?)")
    }

    /// A failed TLS handshake as the user should read it.
    fn handshake_failed(&self, tls: &ClientTls, e: std::io::Error) -> anyhow::Error {
        if let Some(why) = tls.explain(&e) {
            return anyhow!("TLS handshake with the daemon at {self} failed: {why}");
        }
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            return anyhow!(
                "TLS handshake with the daemon at {self} failed: it closed the connection \
                 ({e}); is it serving TLS on this port ([daemon] tls_cert)? Without TLS, \
                 drop --tls / --tlsverify / https://"
            );
        }
        anyhow!("TLS handshake with the daemon at {self} failed: {e}")
    }

    /// A 401, which on TCP comes from the token check: says whether a token was sent and
    /// where it came from. The daemon's own message follows in parentheses.
    async fn token_refused(&self, resp: Response<Incoming>) -> anyhow::Error {
        let status = resp.status();
        let body = match resp.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => Bytes::new(),
        };
        let daemon_says = error_message(status, &body);
        let message = match &self.token {
            Some(token) => format!(
                "the daemon at {self} refused the API token from {} ({daemon_says}); check \
                 it against the daemon's [daemon] api_token_file",
                token.origin
            ),
            None => format!(
                "the daemon at {self} requires an API token ({daemon_says}): pass \
                 --token-file FILE or set HYPERBOX_TOKEN"
            ),
        };
        ApiFailure {
            status,
            message,
            exit_code: 125,
        }
        .into()
    }
}

impl std::fmt::Display for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.addr, &self.tls) {
            (DaemonAddr::Tcp(h), Some(_)) => write!(f, "https://{h}"),
            (addr, _) => write!(f, "{addr}"),
        }
    }
}

/// Whether a plain-HTTP request error looks like a TLS server's answer: not HTTP, or the
/// connection cut (a rustls server sends an alert and closes on bytes that are not TLS).
fn looks_like_tls_port(e: &hyper::Error) -> bool {
    let reset = std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionReset);
    e.is_parse() || e.is_incomplete_message() || reset
}

/// A request body: nothing, bytes, or a stream read from a file.
pub type RequestBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// An empty body.
pub fn empty() -> RequestBody {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed()
}

/// A JSON body.
pub fn json_body(v: &serde_json::Value) -> RequestBody {
    Full::new(Bytes::from(v.to_string()))
        .map_err(|never| match never {})
        .boxed()
}

/// A body streamed from an async reader (a file or stdin).
pub fn reader_body(mut r: impl tokio::io::AsyncRead + Send + Unpin + 'static) -> RequestBody {
    use tokio::io::AsyncReadExt;
    let (mut tx, body) = http_body_util::Channel::<Bytes, std::io::Error>::new(4);
    tokio::spawn(async move {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match r.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => {
                    if tx
                        .send_data(Bytes::copy_from_slice(&buf[..n]))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                Err(e) => {
                    tx.abort(e);
                    break;
                }
            }
        }
    });
    body.boxed()
}

/// Sends one request to the daemon.
pub async fn send(
    daemon: &Daemon,
    method: Method,
    path: &str,
    body: RequestBody,
    content_type: Option<&str>,
) -> anyhow::Result<Response<Incoming>> {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, "hyperbox");
    if let Some(ct) = content_type {
        req = req.header(hyper::header::CONTENT_TYPE, ct);
    }
    let req = req.body(body).context("building the request")?;
    send_request(daemon, req).await
}

/// Sends `req` on a new connection to `daemon`: TLS and the token on TCP when configured.
/// Every request goes through here, the hijacked ones (attach, exec) included.
async fn send_request(
    daemon: &Daemon,
    mut req: Request<RequestBody>,
) -> anyhow::Result<Response<Incoming>> {
    let addr = &daemon.addr;
    let not_running = |e: std::io::Error| {
        let hint = match addr {
            DaemonAddr::Unix(_) => "is hyperboxd running? start it with `hyperboxd` (as root, or with [daemon] socket and data_dir in your config), or point hb at it with -H / HYPERBOX_HOST",
            DaemonAddr::Tcp(_) => "is hyperboxd running and listening there?",
        };
        anyhow!("cannot connect to the HyperBox daemon at {daemon}: {e}\n{hint}")
    };
    match addr {
        DaemonAddr::Unix(p) => {
            let stream = tokio::net::UnixStream::connect(p)
                .await
                .map_err(not_running)?;
            exchange(stream, req)
                .await
                .map_err(|e| daemon.request_failed(e))
        }
        DaemonAddr::Tcp(h) => {
            if let Some(token) = &daemon.token {
                req.headers_mut()
                    .insert(hyper::header::AUTHORIZATION, token.header.clone());
            }
            let stream = tokio::net::TcpStream::connect(h)
                .await
                .map_err(not_running)?;
            let resp = match &daemon.tls {
                Some(tls) => {
                    let stream = tls
                        .connect(stream)
                        .await
                        .map_err(|e| daemon.handshake_failed(tls, e))?;
                    exchange(stream, req).await
                }
                None => exchange(stream, req).await,
            }
            .map_err(|e| daemon.request_failed(e))?;
            if resp.status() == StatusCode::UNAUTHORIZED {
                return Err(daemon.token_refused(resp).await);
            }
            Ok(resp)
        }
    }
}

/// One HTTP/1.1 exchange over `stream`, kept open for an upgrade.
async fn exchange<S>(
    stream: S,
    req: Request<RequestBody>,
) -> Result<Response<Incoming>, hyper::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        // with_upgrades: an attach hands the connection over to the raw stream.
        let _ = conn.with_upgrades().await;
    });
    sender.send_request(req).await
}

/// A request the daemon refused: its HTTP status, message and, for a failed container start,
/// the exit code `hb run` ends with (Docker's 125 / 126 / 127).
#[derive(Debug)]
pub struct ApiFailure {
    /// HTTP status.
    pub status: StatusCode,
    /// The daemon's message.
    pub message: String,
    /// Exit code for `run`/`start`/`exec`.
    pub exit_code: i32,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiFailure {}

/// Reads a whole response; a status other than 2xx or 304 (Docker's "already started" /
/// "already stopped") becomes an [`ApiFailure`] with the daemon's message.
pub async fn read_ok(resp: Response<Incoming>) -> anyhow::Result<Bytes> {
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .context("reading the daemon's answer")?
        .to_bytes();
    if !status.is_success() && status != StatusCode::NOT_MODIFIED {
        let exit_code = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("hyperbox_exit_code").and_then(|c| c.as_i64()))
            .map_or(125, |c| c as i32);
        return Err(ApiFailure {
            status,
            message: error_message(status, &body),
            exit_code,
        }
        .into());
    }
    Ok(body)
}

/// Sends a request that hijacks the connection (attach, exec start) and returns the raw
/// stream once the daemon has switched protocols.
pub async fn upgrade(
    daemon: &Daemon,
    path: &str,
    body: Option<&serde_json::Value>,
) -> anyhow::Result<hyper::upgrade::Upgraded> {
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(hyper::header::HOST, "hyperbox")
        .header(hyper::header::CONNECTION, "Upgrade")
        .header(hyper::header::UPGRADE, "tcp");
    let body = match body {
        Some(v) => {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
            json_body(v)
        }
        None => empty(),
    };
    let req = req.body(body).context("building the request")?;
    let resp = send_request(daemon, req).await?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        read_ok(resp).await?;
        bail!("the daemon did not switch protocols for {path}");
    }
    hyper::upgrade::on(resp)
        .await
        .context("taking over the connection for the stream")
}

/// The daemon's `{"message": …}`, or the raw text.
pub fn error_message(status: StatusCode, body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| {
            format!(
                "daemon answered {status}: {}",
                String::from_utf8_lossy(body)
            )
        })
}

/// Reads a JSON-lines streaming body, calling `each` per object.
pub async fn for_each_json_line(
    resp: Response<Incoming>,
    mut each: impl FnMut(serde_json::Value) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let status = resp.status();
    let mut body = resp.into_body();
    if !status.is_success() {
        let b = body
            .collect()
            .await
            .context("reading the daemon's answer")?
            .to_bytes();
        bail!("{}", error_message(status, &b));
    }
    let mut pending: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.context("the daemon's stream broke off")?;
        if let Some(data) = frame.data_ref() {
            pending.extend_from_slice(data);
            while let Some(pos) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=pos).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let v: serde_json::Value = serde_json::from_slice(&line).with_context(|| {
                    format!(
                        "unreadable progress line {:?}",
                        String::from_utf8_lossy(&line)
                    )
                })?;
                each(v)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_flags_with_a_unix_socket_are_refused_but_the_environment_is_not() {
        let flag = SecurityOptions {
            tls_verify: true,
            ..Default::default()
        };
        let err = Daemon::new("unix:///run/x.sock", &flag)
            .err()
            .expect("refused")
            .to_string();
        assert!(
            err.contains("tcp://") && err.contains("unix socket"),
            "{err}"
        );
        let env = SecurityOptions {
            tls_verify_env: true,
            token: Some("0123456789abcdef".into()),
            ..Default::default()
        };
        let d = Daemon::new("unix:///run/x.sock", &env).expect("plain socket");
        assert!(d.tls.is_none() && d.token.is_none());
    }

    #[test]
    fn https_addresses_turn_tls_on() {
        // A cert dir whose ca.pem is unusable: reading it is how TLS shows it was turned on.
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("ca.pem"), "not a certificate\n").expect("write");
        let options = SecurityOptions {
            cert_dir: Some(dir.path().to_path_buf()),
            ..Default::default()
        };
        let err = format!(
            "{:#}",
            Daemon::new("https://127.0.0.1:2376", &options)
                .err()
                .expect("the cert dir's ca.pem was read")
        );
        assert!(
            err.contains("ca.pem") && err.contains("no PEM CERTIFICATE"),
            "{err}"
        );
        let plain = Daemon::new("tcp://127.0.0.1:2375", &options).expect("plain tcp");
        assert!(plain.tls.is_none());
        assert_eq!(plain.to_string(), "tcp://127.0.0.1:2375");
    }
}
