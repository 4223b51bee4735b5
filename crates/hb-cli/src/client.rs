//! The CLI's connection to hyperboxd: HTTP/1.1 over the unix socket (`unix://PATH`) or TCP
//! (`tcp://HOST:PORT`), one request per connection, with errors that say how to start the
//! daemon when nobody answers.

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

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
    /// Parses `unix:///path`, `tcp://host:port`, or a bare socket path.
    pub fn parse(s: &str) -> anyhow::Result<DaemonAddr> {
        if let Some(p) = s.strip_prefix("unix://") {
            Ok(DaemonAddr::Unix(p.to_string()))
        } else if let Some(h) = s.strip_prefix("tcp://") {
            Ok(DaemonAddr::Tcp(h.trim_end_matches('/').to_string()))
        } else if s.starts_with('/') {
            Ok(DaemonAddr::Unix(s.to_string()))
        } else {
            bail!("invalid daemon address {s:?}: use unix:///path/to/socket or tcp://host:port")
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
    addr: &DaemonAddr,
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
    send_request(addr, req).await
}

async fn send_request(
    addr: &DaemonAddr,
    req: Request<RequestBody>,
) -> anyhow::Result<Response<Incoming>> {
    let not_running = |e: std::io::Error| {
        let hint = match addr {
            DaemonAddr::Unix(_) => "is hyperboxd running? start it with `hyperboxd` (as root, or with [daemon] socket and data_dir in your config), or point hb at it with -H / HYPERBOX_HOST",
            DaemonAddr::Tcp(_) => "is hyperboxd running and listening there?",
        };
        anyhow!("cannot connect to the HyperBox daemon at {addr}: {e}\n{hint}")
    };
    let resp = match addr {
        DaemonAddr::Unix(p) => {
            let stream = tokio::net::UnixStream::connect(p)
                .await
                .map_err(not_running)?;
            exchange(stream, req).await?
        }
        DaemonAddr::Tcp(h) => {
            let stream = tokio::net::TcpStream::connect(h)
                .await
                .map_err(not_running)?;
            exchange(stream, req).await?
        }
    };
    Ok(resp)
}

async fn exchange<S>(stream: S, req: Request<RequestBody>) -> anyhow::Result<Response<Incoming>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP handshake with the daemon")?;
    tokio::spawn(async move {
        // with_upgrades: an attach hands the connection over to the raw stream.
        let _ = conn.with_upgrades().await;
    });
    sender
        .send_request(req)
        .await
        .context("talking to the daemon (did it stop?)")
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
    addr: &DaemonAddr,
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
    let resp = send_request(addr, req).await?;
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
