//! The container half of the Docker Engine API: `/containers/...` and `/exec/...`.
//! Attach and exec use Docker's hijacked connection (HTTP upgrade to a raw stream carrying the
//! multiplexed framing, or raw bytes with a TTY), so the docker CLI and `hb` share one protocol.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::api::{read_json_body, ApiError, ApiResult, Query};
use crate::containers::record::{ContainerRecord, Status, ZERO_TIME};
use crate::containers::{signal_number, ContainerError, Containers};
use crate::log_tail::LogTail;
use crate::Daemon;

impl From<ContainerError> for ApiError {
    fn from(e: ContainerError) -> Self {
        let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        ApiError::with_exit_code(status, e.message, e.exit_code)
    }
}

/// Routes `/containers/...` and `/exec/...`; `None` when the path is not one of them.
pub(crate) async fn route(
    d: std::sync::Arc<Daemon>,
    method: &Method,
    path: &str,
    q: &Query,
    req: Request,
) -> Option<ApiResult> {
    let c = d.containers.clone();
    let rest = if let Some(r) = path.strip_prefix("/containers/") {
        r
    } else if let Some(r) = path.strip_prefix("/exec/") {
        return Some(exec_route(&c, method, r, q, req).await);
    } else {
        return None;
    };
    Some(match (method, rest) {
        (&Method::GET, "json") => list(&c, q),
        (&Method::POST, "create") => create(&c, q, req.into_body()).await,
        (&Method::POST, "prune") => prune(&c).await,
        _ => {
            let (key, action) = rest.split_once('/').unwrap_or((rest, ""));
            let key = key.to_string();
            match (method, action) {
                (&Method::GET, "json") => inspect(&c, &key),
                (&Method::POST, "start") => match c.start(&key).await {
                    Ok(Some(_)) => Ok(no_content()),
                    Ok(None) => Ok(StatusCode::NOT_MODIFIED.into_response()),
                    Err(e) => Err(e.into()),
                },
                (&Method::POST, "stop") => stop(&c, &key, q).await,
                (&Method::POST, "restart") => restart(&c, &key, q).await,
                (&Method::POST, "kill") => kill(&c, &key, q).await,
                (&Method::POST, "wait") => wait(&c, &key, q).await,
                (&Method::POST, "attach") => attach(&c, &key, q, req).await,
                (&Method::POST, "resize") => resize(&c, &key, q).await,
                (&Method::POST, "exec") => exec_create(&c, &key, req.into_body()).await,
                (&Method::GET, "logs") => logs(&c, &key, q).await,
                (&Method::GET, "top") => top(&c, &key),
                (&Method::GET, "stats") => stats(&c, &key, q).await,
                (&Method::DELETE, "") => c
                    .remove(&key, q.flag("force"))
                    .await
                    .map(|_| no_content())
                    .map_err(Into::into),
                _ => Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!("page not found: {method} {path} is not offered by hyperboxd"),
                )),
            }
        }
    })
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

async fn create(c: &Containers, q: &Query, body: Body) -> ApiResult {
    let v = read_json_body(body).await?;
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "container config must be a JSON object",
        ));
    }
    crate::containers::config::check_types(&v).map_err(ApiError::bad_request)?;
    let r = c.create(v, q.get("name").map(str::to_string)).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({"Id": r.id, "Warnings": []})),
    )
        .into_response())
}

fn status_text(r: &ContainerRecord) -> String {
    match r.state.status {
        Status::Running => format!("Up {}", since(&r.state.started_at)),
        Status::Exited => format!(
            "Exited ({}) {} ago",
            r.state.exit_code,
            since(&r.state.finished_at)
        ),
        Status::Created => "Created".into(),
        Status::Removing => "Removal In Progress".into(),
        Status::Dead => "Dead".into(),
    }
}

/// "3 seconds", "5 minutes", ... since an RFC 3339 time.
fn since(t: &str) -> String {
    let Some(secs) = parse_rfc3339(t) else {
        return "a moment".into();
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let d = (now - secs).max(0);
    match d {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        2..=59 => format!("{d} seconds"),
        60..=119 => "About a minute".into(),
        120..=3599 => format!("{} minutes", d / 60),
        3600..=7199 => "About an hour".into(),
        7200..=172_799 => format!("{} hours", d / 3600),
        _ => format!("{} days", d / 86_400),
    }
}

/// Seconds since the epoch of `YYYY-MM-DDTHH:MM:SS[.frac]Z`.
pub fn parse_rfc3339(t: &str) -> Option<i64> {
    if t.len() < 19 || t.starts_with("0001-") {
        return None;
    }
    let num = |a: usize, b: usize| t.get(a..b)?.parse::<i64>().ok();
    let (y, m, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hh, mm, ss) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    // days_from_civil (H. Hinnant)
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

fn ports_json(r: &ContainerRecord) -> Value {
    let mut out = Vec::new();
    for p in &r.state.ports {
        if let Ok(m) = hb_net::parse_port_mapping(p) {
            out.push(json!({
                "IP": m.host_ip.map(|i| i.to_string()).unwrap_or_else(|| "0.0.0.0".into()),
                "PrivatePort": m.container_port,
                "PublicPort": m.host_port,
                "Type": format!("{:?}", m.protocol).to_ascii_lowercase(),
            }));
        }
    }
    Value::Array(out)
}

fn command_line(r: &ContainerRecord) -> String {
    std::iter::once(r.path.as_str())
        .chain(r.args.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(" ")
}

fn list(c: &Containers, q: &Query) -> ApiResult {
    let all = q.flag("all");
    let filters: HashMap<String, Vec<String>> = match q.get("filters") {
        Some(f) if !f.is_empty() => parse_filters(f)?,
        _ => HashMap::new(),
    };
    let mut records = c.snapshot();
    records.sort_by(|a, b| b.created.cmp(&a.created));
    let out: Vec<Value> = records
        .iter()
        .filter(|r| all || r.state.status == Status::Running || filters.contains_key("status"))
        .filter(|r| matches_filters(r, &filters))
        .map(|r| {
            json!({
                "Id": r.id,
                "Names": [format!("/{}", r.name)],
                "Image": r.image,
                "ImageID": r.image_id,
                "Command": command_line(r),
                "Created": r.created_unix,
                "Ports": ports_json(r),
                "Labels": r.config["Labels"],
                "State": r.state.status.as_str(),
                "Status": status_text(r),
                "HostConfig": {"NetworkMode": r.host_config["NetworkMode"].as_str().unwrap_or("default")},
                "Mounts": [],
            })
        })
        .collect();
    Ok(axum::Json(Value::Array(out)).into_response())
}

/// Docker's `filters` query: `{"status":["exited"]}` or the older `{"status":{"exited":true}}`.
pub(crate) fn parse_filters(raw: &str) -> Result<HashMap<String, Vec<String>>, ApiError> {
    let v: Value = serde_json::from_str(raw)
        .map_err(|e| ApiError::bad_request(format!("invalid filters: {e}")))?;
    let mut out = HashMap::new();
    let Some(obj) = v.as_object() else {
        return Err(ApiError::bad_request("invalid filters: not an object"));
    };
    for (k, vals) in obj {
        let list = match vals {
            Value::Array(a) => a
                .iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect(),
            Value::Object(o) => o.keys().cloned().collect(),
            _ => return Err(ApiError::bad_request(format!("invalid filter {k}"))),
        };
        out.insert(k.clone(), list);
    }
    Ok(out)
}

fn matches_filters(r: &ContainerRecord, f: &HashMap<String, Vec<String>>) -> bool {
    f.iter().all(|(k, vals)| {
        vals.iter().any(|v| match k.as_str() {
            "status" => r.state.status.as_str() == v,
            "name" => r.name.contains(v.trim_start_matches('/')),
            "id" => r.id.starts_with(v),
            "ancestor" => {
                r.image == *v
                    || r.image_id.starts_with(v)
                    || r.image_id.trim_start_matches("sha256:").starts_with(v)
            }
            "label" => match v.split_once('=') {
                Some((lk, lv)) => r.config["Labels"][lk].as_str() == Some(lv),
                None => !r.config["Labels"][v.as_str()].is_null(),
            },
            "exited" => r.state.status == Status::Exited && r.state.exit_code.to_string() == *v,
            _ => true,
        })
    })
}

/// Docker's inspect document for a container.
pub fn inspect_json(r: &ContainerRecord, log_path: PathBuf) -> Value {
    let ip = r.state.ip.clone().unwrap_or_default();
    let mut ports = serde_json::Map::new();
    for p in &r.state.ports {
        if let Ok(m) = hb_net::parse_port_mapping(p) {
            let key = format!(
                "{}/{}",
                m.container_port,
                format!("{:?}", m.protocol).to_ascii_lowercase()
            );
            let entry = ports.entry(key).or_insert_with(|| json!([]));
            if let Some(a) = entry.as_array_mut() {
                a.push(json!({
                    "HostIp": m.host_ip.map(|i| i.to_string()).unwrap_or_else(|| "0.0.0.0".into()),
                    "HostPort": m.host_port.to_string(),
                }));
            }
        }
    }
    let mode = r.host_config["NetworkMode"]
        .as_str()
        .filter(|m| !m.is_empty() && *m != "default")
        .unwrap_or("bridge");
    let mounts: Vec<Value> = r.host_config["Binds"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|b| b.as_str())
                .map(|b| {
                    let parts: Vec<&str> = b.split(':').collect();
                    json!({
                        "Type": "bind",
                        "Source": parts.first().copied().unwrap_or(""),
                        "Destination": parts.get(1).copied().unwrap_or(""),
                        "Mode": parts.get(2).copied().unwrap_or(""),
                        "RW": parts.get(2).is_none_or(|m| !m.split(',').any(|o| o == "ro")),
                        "Propagation": "rprivate",
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    json!({
        "Id": r.id,
        "Created": r.created,
        "Path": r.path,
        "Args": r.args,
        "State": {
            "Status": r.state.status.as_str(),
            "Running": r.state.status == Status::Running,
            "Paused": false,
            "Restarting": false,
            "OOMKilled": r.state.oom_killed,
            "Dead": r.state.status == Status::Dead,
            "Pid": r.state.pid,
            "ExitCode": r.state.exit_code,
            "Error": r.state.error,
            "StartedAt": r.state.started_at,
            "FinishedAt": r.state.finished_at,
        },
        "Image": r.image_id,
        "ResolvConfPath": "",
        "HostnamePath": "",
        "HostsPath": "",
        "LogPath": log_path,
        "Name": format!("/{}", r.name),
        "RestartCount": 0,
        "Driver": "overlay",
        "Platform": "linux",
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "HostConfig": effective_host_config(&r.host_config),
        "Mounts": mounts,
        "Config": r.config,
        "NetworkSettings": {
            "IPAddress": ip,
            "IPPrefixLen": if ip.is_empty() { 0 } else { 16 },
            "Gateway": "",
            "Ports": Value::Object(ports),
            "Networks": { mode: { "IPAddress": ip } },
        },
    })
}

/// The container's HostConfig as the client sent it, with what the engine decided filled in:
/// the log driver is always json-file with HyperBox's rotation (clients such as docker-py read
/// `LogConfig.Type` to know whether logs can be fetched).
fn effective_host_config(sent: &Value) -> Value {
    let mut h = if sent.is_object() {
        sent.clone()
    } else {
        json!({})
    };
    h["LogConfig"] = json!({"Type": "json-file", "Config": {
        "max-size": format!("{}m", crate::containers::LOG_MAX_MIB),
        "max-file": crate::containers::LOG_MAX_FILES.to_string(),
    }});
    h
}

fn inspect(c: &Containers, key: &str) -> ApiResult {
    let r = c.find(key)?;
    Ok(axum::Json(inspect_json(&r, c.log_path(&r.id))).into_response())
}

async fn stop(c: &Containers, key: &str, q: &Query) -> ApiResult {
    let t = q.get("t").and_then(|t| t.parse::<i64>().ok());
    if c.stop(key, t).await? {
        Ok(no_content())
    } else {
        Ok(StatusCode::NOT_MODIFIED.into_response())
    }
}

async fn restart(c: &Containers, key: &str, q: &Query) -> ApiResult {
    let t = q.get("t").and_then(|t| t.parse::<i64>().ok());
    c.restart(key, t).await?;
    Ok(no_content())
}

async fn kill(c: &Containers, key: &str, q: &Query) -> ApiResult {
    let signal = match q.get("signal") {
        None | Some("") => libc::SIGKILL,
        Some(s) => {
            signal_number(s).ok_or_else(|| ApiError::bad_request(format!("Invalid signal: {s}")))?
        }
    };
    c.kill(key, signal).await?;
    Ok(no_content())
}

async fn wait(c: &Arc<Containers>, key: &str, q: &Query) -> ApiResult {
    let condition = q
        .get("condition")
        .filter(|c| !c.is_empty())
        .unwrap_or("not-running")
        .to_string();
    if !matches!(condition.as_str(), "not-running" | "next-exit" | "removed") {
        return Err(ApiError::bad_request(format!(
            "invalid condition: {condition:?}"
        )));
    }
    let answer = |code: i32, err: &str| {
        let error = if err.is_empty() {
            Value::Null
        } else {
            json!({"Message": err})
        };
        json!({"StatusCode": code, "Error": error})
    };
    let last = match c.find(key) {
        Ok(r) => r,
        // Already removed (an auto-remove can win the race against this request).
        Err(e) => match c.removed_exit(key) {
            Some((code, err)) => return Ok(axum::Json(answer(code, &err)).into_response()),
            None => return Err(e.into()),
        },
    };
    // Headers now, the result when the condition holds: the docker CLI sends its start only
    // after this response's headers arrive.
    let watch = c.watch(&last.id, &condition);
    let c = c.clone();
    let body = async move {
        let v = match watch.await {
            Ok(Some(r)) => answer(r.state.exit_code, &r.state.error),
            Ok(None) => match c.removed_exit(&last.id) {
                Some((code, err)) => answer(code, &err),
                None => answer(last.state.exit_code, &last.state.error),
            },
            Err(e) => answer(-1, &e.message),
        };
        let mut line = serde_json::to_vec(&v).unwrap_or_default();
        line.push(b'\n');
        Ok::<_, std::io::Error>(Bytes::from(line))
    };
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(futures_util::stream::once(body)))
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

async fn resize(c: &Containers, key: &str, q: &Query) -> ApiResult {
    let r = c.find(key)?;
    let (h, w) = dims(q)?;
    c.resize(&r.id, h, w).await?;
    Ok(StatusCode::OK.into_response())
}

fn dims(q: &Query) -> Result<(u16, u16), ApiError> {
    let get = |k: &str| -> Result<u16, ApiError> {
        q.get(k)
            .unwrap_or("0")
            .parse::<u16>()
            .map_err(|_| ApiError::bad_request(format!("invalid {k}")))
    };
    Ok((get("h")?, get("w")?))
}

/// The 101 answer that hands the connection over to the raw stream.
fn upgrade_response(tty: bool) -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("Upgrade"),
    );
    h.insert(header::UPGRADE, header::HeaderValue::from_static("tcp"));
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(if tty {
            "application/vnd.docker.raw-stream"
        } else {
            "application/vnd.docker.multiplexed-stream"
        }),
    );
    resp
}

fn wants_upgrade(req: &Request) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("tcp"))
}

/// Copies between the client's upgraded connection and the monitor's stream.
/// `keep` filters the multiplexed output to the requested streams.
fn splice(
    mut req: Request,
    monitor: impl std::future::Future<Output = Result<tokio::net::UnixStream, ContainerError>>
        + Send
        + 'static,
    stdin: bool,
    keep: Option<(bool, bool)>,
    tty: bool,
) {
    tokio::spawn(async move {
        let upgraded = match hyper::upgrade::on(&mut req).await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!("attach upgrade failed: {e}");
                return;
            }
        };
        let (mut cr, mut cw) = tokio::io::split(TokioIo::new(upgraded));
        let monitor = match monitor.await {
            Ok(m) => m,
            Err(e) => {
                // Past the 101 the error can only travel in the stream, as dockerd sends it;
                // the exit code is in the exec's record for the client's inspect.
                let text = format!("{}\r\n", e.message);
                let mut frame = Vec::with_capacity(text.len() + 8);
                if !tty {
                    frame.extend_from_slice(&[2, 0, 0, 0]);
                    frame.extend_from_slice(&(text.len() as u32).to_be_bytes());
                }
                frame.extend_from_slice(text.as_bytes());
                let _ = cw.write_all(&frame).await;
                let _ = cw.shutdown().await;
                return;
            }
        };
        let (mut mr, mut mw) = monitor.into_split();
        let down = async {
            match keep {
                None => {
                    let _ = tokio::io::copy(&mut mr, &mut cw).await;
                }
                Some((out, err)) => {
                    let _ = copy_frames(&mut mr, &mut cw, out, err).await;
                }
            }
            let _ = cw.shutdown().await;
        };
        let up = async {
            if stdin {
                let _ = tokio::io::copy(&mut cr, &mut mw).await;
                let _ = mw.shutdown().await;
            } else {
                // Nothing to forward, but reading tells us when the client goes away.
                let mut sink = [0u8; 1024];
                while matches!(cr.read(&mut sink).await, Ok(n) if n > 0) {}
            }
        };
        // The session ends when the output ends (the process exited and was drained).
        tokio::select! {
            _ = down => {},
            _ = async { up.await; std::future::pending::<()>().await } => {},
        }
    });
}

async fn copy_frames(
    from: &mut (impl tokio::io::AsyncRead + Unpin),
    to: &mut (impl tokio::io::AsyncWrite + Unpin),
    stdout: bool,
    stderr: bool,
) -> std::io::Result<()> {
    let mut header = [0u8; 8];
    loop {
        if from.read_exact(&mut header).await.is_err() {
            return Ok(());
        }
        let len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
        let mut data = vec![0u8; len];
        from.read_exact(&mut data).await?;
        let keep = match header[0] {
            1 => stdout,
            2 => stderr,
            _ => true,
        };
        if keep {
            to.write_all(&header).await?;
            to.write_all(&data).await?;
        }
    }
}

async fn attach(c: &Containers, key: &str, q: &Query, req: Request) -> ApiResult {
    if !wants_upgrade(&req) {
        return Err(ApiError::bad_request(
            "attach needs a hijacked connection: send 'Connection: Upgrade' and 'Upgrade: tcp'",
        ));
    }
    let stdin = q.flag("stdin");
    let (out, err) = (q.flag("stdout"), q.flag("stderr"));
    let (r, monitor) = c.attach(key, stdin).await?;
    let tty = r.tty();
    let keep = if tty || (out && err) {
        None
    } else {
        Some((out, err))
    };
    splice(req, std::future::ready(Ok(monitor)), stdin, keep, tty);
    Ok(upgrade_response(tty))
}

async fn exec_create(c: &Containers, key: &str, body: Body) -> ApiResult {
    let v = read_json_body(body).await?;
    let id = c.exec_create(key, &v)?;
    Ok((StatusCode::CREATED, axum::Json(json!({"Id": id}))).into_response())
}

async fn exec_route(
    c: &Arc<Containers>,
    method: &Method,
    rest: &str,
    q: &Query,
    req: Request,
) -> ApiResult {
    let (id, action) = rest.split_once('/').unwrap_or((rest, ""));
    match (method, action) {
        (&Method::POST, "start") => {
            let upgrade = wants_upgrade(&req);
            let (parts, body) = req.into_parts();
            let v = read_json_body(body).await.unwrap_or(json!({}));
            let detach = v["Detach"].as_bool().unwrap_or(false);
            let tty = v["Tty"].as_bool();
            let size = crate::containers::console_size(&v["ConsoleSize"]);
            if !detach && upgrade {
                // Answer 101 first and start the process once the connection is handed over,
                // as dockerd does: a client that parses the headers with a buffered reader
                // (docker-py) would otherwise swallow the first output with them.
                let e = c.exec_startable(id)?;
                let tty = tty.unwrap_or(e.tty);
                let req = Request::from_parts(parts, Body::empty());
                let (c, id) = (c.clone(), id.to_string());
                splice(
                    req,
                    async move { c.exec_start(&id, Some(tty), size).await },
                    e.open_stdin,
                    None,
                    tty,
                );
                return Ok(upgrade_response(tty));
            }
            // Detached (or no hijack): nobody reads the output; drain it so the process never
            // blocks on it.
            let stream = c.exec_start(id, tty, size).await?;
            tokio::spawn(async move {
                let mut s = stream;
                let mut buf = vec![0u8; 16 * 1024];
                while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
            });
            Ok(StatusCode::OK.into_response())
        }
        (&Method::POST, "resize") => {
            let (h, w) = dims(q)?;
            c.exec_get(id)?;
            c.resize(id, h, w).await?;
            Ok(StatusCode::OK.into_response())
        }
        (&Method::GET, "json") => {
            let e = c.exec_current(id).await?;
            Ok(axum::Json(json!({
                "ID": e.id,
                "ContainerID": e.container,
                "Running": e.running,
                "ExitCode": e.exit_code,
                "Pid": e.pid,
                "OpenStdin": e.open_stdin,
                "ProcessConfig": {"entrypoint": e.args.first(), "arguments": e.args.get(1..), "tty": e.tty, "user": e.user},
            }))
            .into_response())
        }
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("page not found: {method} /exec/{rest} is not offered by hyperboxd"),
        )),
    }
}

/// One json-file entry.
struct LogEntry {
    stream: u8,
    time: String,
    text: String,
}

fn parse_log_line(line: &str) -> Option<LogEntry> {
    let v: Value = serde_json::from_str(line).ok()?;
    Some(LogEntry {
        stream: if v["stream"] == "stderr" { 2 } else { 1 },
        time: v["time"].as_str().unwrap_or("").to_string(),
        text: v["log"].as_str().unwrap_or("").to_string(),
    })
}

fn encode_entry(e: &LogEntry, tty: bool, timestamps: bool) -> Vec<u8> {
    let mut payload = Vec::with_capacity(e.text.len() + 32);
    if timestamps {
        payload.extend_from_slice(e.time.as_bytes());
        payload.push(b' ');
    }
    payload.extend_from_slice(e.text.as_bytes());
    if tty {
        return payload;
    }
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(&[e.stream, 0, 0, 0]);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&payload);
    out
}

async fn logs(c: &std::sync::Arc<Containers>, key: &str, q: &Query) -> ApiResult {
    let r = c.find(key)?;
    let (want_out, want_err) = (q.flag("stdout"), q.flag("stderr"));
    if !want_out && !want_err {
        return Err(ApiError::bad_request("You must choose at least one stream"));
    }
    let follow = q.flag("follow");
    let timestamps = q.flag("timestamps");
    let tail: Option<usize> = match q.get("tail") {
        None | Some("") | Some("all") => None,
        Some(t) => Some(
            t.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid tail: {t}")))?,
        ),
    };
    let path = c.log_path(&r.id);
    let tty = r.tty();
    let keep = move |e: &LogEntry| (e.stream == 1 && want_out) || (e.stream == 2 && want_err);
    // What is there now (rotated files oldest first), then follow the current file through
    // the descriptor LogTail holds (so a removal or rotation meanwhile loses no line).
    let (existing, log_tail) = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || LogTail::open(&path))
            .await
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    };
    let mut entries: Vec<LogEntry> = existing
        .lines()
        .filter_map(parse_log_line)
        .filter(|e| keep(e))
        .collect();
    if let Some(n) = tail {
        let skip = entries.len().saturating_sub(n);
        entries.drain(..skip);
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    let containers = c.clone();
    let id = r.id.clone();
    tokio::spawn(async move {
        for e in &entries {
            if tx
                .send(Ok(Bytes::from(encode_entry(e, tty, timestamps))))
                .await
                .is_err()
            {
                return;
            }
        }
        if !follow {
            return;
        }
        let mut log = Some(log_tail);
        loop {
            // Checked before reading: once it is not running, the read below sees its last line.
            let running = containers
                .find(&id)
                .map(|r| r.state.status == Status::Running)
                .unwrap_or(false);
            let Some(mut t) = log.take() else { return };
            let Ok((text, t)) = tokio::task::spawn_blocking(move || {
                let text = t.read_new();
                (text, t)
            })
            .await
            else {
                return;
            };
            log = Some(t);
            for line in text.lines() {
                if let Some(e) = parse_log_line(line) {
                    if keep(&e)
                        && tx
                            .send(Ok(Bytes::from(encode_entry(&e, tty, timestamps))))
                            .await
                            .is_err()
                    {
                        return;
                    }
                }
            }
            if !running {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let stream = tokio_stream_from(rx);
    let ct = if tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    };
    Ok(([(header::CONTENT_TYPE, ct)], Body::from_stream(stream)).into_response())
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

fn top(c: &Containers, key: &str) -> ApiResult {
    let r = c.find(key)?;
    if r.state.status != Status::Running {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("Container {} is not running", r.id),
        ));
    }
    let cg = hb_spawn::Cgroup::open(c.cgroup_parent(), &r.id)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let mut pids = cg
        .pids()
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    pids.sort_unstable();
    let rows: Vec<Value> = pids.iter().filter_map(|&p| proc_row(p)).collect();
    Ok(axum::Json(json!({
        "Titles": ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"],
        "Processes": rows,
    }))
    .into_response())
}

fn proc_row(pid: i32) -> Option<Value> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ppid = f.get(1)?.to_string();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let secs = ticks / hz;
    let time = format!(
        "{:02}:{:02}:{:02}",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    );
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let uid = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("0")
        .to_string();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let cmd = cmdline
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let uid_name = if uid == "0" { "root".to_string() } else { uid };
    Some(json!([
        uid_name,
        pid.to_string(),
        ppid,
        "0",
        "",
        "?",
        time,
        cmd
    ]))
}

async fn stats(c: &Containers, key: &str, q: &Query) -> ApiResult {
    let r = c.find(key)?;
    let stream = q.flag_or("stream", true);
    let parent = c.cgroup_parent().to_string();
    let sample = |id: String| {
        let parent = parent.clone();
        async move {
            tokio::task::spawn_blocking(move || stats_sample(&parent, &id))
                .await
                .ok()
                .flatten()
        }
    };
    let first = sample(r.id.clone()).await;
    if q.flag("one-shot") || (!stream && r.state.status != Status::Running) {
        let doc = stats_json(&r, first.as_ref(), None);
        return Ok(axum::Json(doc).into_response());
    }
    // CPU % needs two samples, as Docker's: the second one a moment later.
    tokio::time::sleep(Duration::from_millis(if stream { 1000 } else { 500 })).await;
    let second = sample(r.id.clone()).await;
    let doc = stats_json(&r, second.as_ref(), first.as_ref());
    if !stream {
        return Ok(axum::Json(doc).into_response());
    }
    // Streaming: one document per second until the client leaves or the container stops.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let rec = r.clone();
    tokio::spawn(async move {
        let mut prev = second;
        let mut line = serde_json::to_vec(&doc).unwrap_or_default();
        line.push(b'\n');
        if tx.send(Ok(Bytes::from(line))).await.is_err() {
            return;
        }
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let (id, parent) = (rec.id.clone(), parent.clone());
            let next = tokio::task::spawn_blocking(move || stats_sample(&parent, &id))
                .await
                .ok()
                .flatten();
            if next.is_none() {
                return;
            }
            let mut line = serde_json::to_vec(&stats_json(&rec, next.as_ref(), prev.as_ref()))
                .unwrap_or_default();
            line.push(b'\n');
            if tx.send(Ok(Bytes::from(line))).await.is_err() {
                return;
            }
            prev = next;
        }
    });
    Ok(Body::from_stream(tokio_stream_from(rx)).into_response())
}

/// One reading of a container's cgroup and of the host CPU time.
#[derive(Clone, Debug)]
pub struct StatsSample {
    /// When (RFC 3339).
    pub read: String,
    /// cgroup figures.
    pub cg: hb_spawn::CgroupStats,
    /// Host CPU time in ns (all CPUs), from /proc/stat.
    pub system_ns: u64,
}

fn stats_sample(parent: &str, id: &str) -> Option<StatsSample> {
    let cg = hb_spawn::Cgroup::open(parent, id).ok()?;
    let s = cg.stats().ok()?;
    Some(StatsSample {
        read: crate::containers::time_ns(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
        ),
        cg: s,
        system_ns: host_cpu_ns(),
    })
}

fn host_cpu_ns() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return 0;
    };
    let Some(line) = stat.lines().next() else {
        return 0;
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let ticks: u64 = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|x| x.parse::<u64>().ok())
        .sum();
    ticks * (1_000_000_000 / hz)
}

fn cpu_json(s: Option<&StatsSample>) -> Value {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    match s {
        Some(s) => json!({
            "cpu_usage": {"total_usage": s.cg.cpu_usage_ns, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
            "system_cpu_usage": s.system_ns,
            "online_cpus": cpus,
            "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
        }),
        None => {
            json!({"cpu_usage": {"total_usage": 0}, "system_cpu_usage": 0, "online_cpus": cpus, "throttling_data": {}})
        }
    }
}

fn stats_json(r: &ContainerRecord, now: Option<&StatsSample>, prev: Option<&StatsSample>) -> Value {
    let (usage, limit, pids) = now.map_or((0, 0, 0), |s| {
        (s.cg.memory_usage, s.cg.memory_limit, s.cg.pids_current)
    });
    json!({
        "id": r.id,
        "name": format!("/{}", r.name),
        "read": now.map_or_else(|| ZERO_TIME.to_string(), |s| s.read.clone()),
        "preread": prev.map_or_else(|| ZERO_TIME.to_string(), |s| s.read.clone()),
        "pids_stats": {"current": pids},
        "cpu_stats": cpu_json(now),
        "precpu_stats": cpu_json(prev),
        "memory_stats": {"usage": usage, "limit": limit, "stats": {}},
        "blkio_stats": {"io_service_bytes_recursive": []},
        "networks": {},
    })
}

async fn prune(c: &Containers) -> ApiResult {
    let mut deleted = Vec::new();
    let mut reclaimed: u64 = 0;
    for r in c.snapshot() {
        if matches!(
            r.state.status,
            Status::Exited | Status::Created | Status::Dead
        ) {
            let dir = c.log_path(&r.id).parent().map(|p| p.to_path_buf());
            let size = dir.map_or(0, |d| dir_size(&d));
            if c.remove(&r.id, false).await.is_ok() {
                deleted.push(r.id.clone());
                reclaimed += size;
            }
        }
    }
    Ok(
        axum::Json(json!({"ContainersDeleted": deleted, "SpaceReclaimed": reclaimed}))
            .into_response(),
    )
}

/// Bytes of regular files under `dir` (not following symlinks).
pub fn dir_size(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else if m.is_file() {
                total += m.len();
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip() {
        let t = std::time::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        let s = hb_monitor::logfile::rfc3339_nanos(t);
        assert_eq!(parse_rfc3339(&s), Some(1_795_000_000));
        assert_eq!(parse_rfc3339(ZERO_TIME), None);
    }

    #[test]
    fn filters_parse_both_shapes() {
        let f = parse_filters(r#"{"status":["exited"],"label":{"a=b":true}}"#).unwrap();
        assert_eq!(f["status"], vec!["exited"]);
        assert_eq!(f["label"], vec!["a=b"]);
        assert!(parse_filters("[1]").is_err());
    }

    #[test]
    fn log_entries_frame_like_docker() {
        let e = LogEntry {
            stream: 2,
            time: "T".into(),
            text: "hi\n".into(),
        };
        assert_eq!(
            encode_entry(&e, false, false),
            vec![2, 0, 0, 0, 0, 0, 0, 3, b'h', b'i', b'\n']
        );
        assert_eq!(encode_entry(&e, true, true), b"T hi\n".to_vec());
    }
}
