//! The HTTP API on the daemon's socket. Paths and JSON shapes follow the Docker Engine API
//! where Docker has the operation (`/images/create`, `/images/json`, `/images/{name}/json`,
//! `/images/load`, `/images/get`, `/system/df`, `/auth`, `/_ping`, `/version`, with an optional
//! `/v1.NN` prefix), so `hb` and, later, the docker CLI speak the same protocol. HyperBox's own
//! operations live under `/hyperbox/`. Every error is Docker's `{"message": …}` JSON.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::Bytes;
use futures_util::StreamExt;
use hb_image::{ImageError, ImageRef, Platform, PullEvent};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::Daemon;

/// Newest Docker API version the daemon answers to.
pub const API_VERSION: &str = "1.43";
/// Oldest one.
pub const MIN_API_VERSION: &str = "1.24";
/// Largest JSON request body accepted.
const MAX_JSON_BODY: usize = 1 << 20;

pub(crate) type Shared = Arc<Daemon>;

/// The API router over shared daemon state.
pub fn router(daemon: Shared) -> Router {
    Router::new()
        .fallback(dispatch)
        .with_state(daemon)
        .layer(axum::middleware::from_fn(read_small_body_first))
}

/// Bodies up to this size are read before the request is handled.
const SMALL_BODY: u64 = 1 << 20;

/// Reads a small request body (a JSON document with a Content-Length) completely before the
/// request is handled. A handler that answers without reading it (an unknown endpoint, a bad
/// version, a refused name) would otherwise make hyper close the connection with the body
/// still unread, which resets it: the docker CLI, still writing, then reports "broken pipe"
/// instead of the error JSON. Tarballs (`/images/load`) and chunked bodies stream as before.
async fn read_small_body_first(req: Request, next: axum::middleware::Next) -> Response {
    let small = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > 0 && n <= SMALL_BODY);
    if !small {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    match axum::body::to_bytes(body, SMALL_BODY as usize).await {
        Ok(bytes) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Err(e) => ApiError::bad_request(format!("reading the request body: {e}")).into_response(),
    }
}

/// An API error: an HTTP status and a message for the user.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    /// The exit code `hb run` / `docker run` should end with (125/126/127), when it is not 125.
    exit_code: Option<i32>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            exit_code: None,
        }
    }
    pub(crate) fn with_exit_code(
        status: StatusCode,
        message: impl Into<String>,
        code: i32,
    ) -> Self {
        ApiError {
            status,
            message: message.into(),
            exit_code: (code != 125).then_some(code),
        }
    }
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<ImageError> for ApiError {
    fn from(e: ImageError) -> Self {
        let status = match &e {
            ImageError::NotFound(_) | ImageError::RemoteNotFound { .. } => StatusCode::NOT_FOUND,
            ImageError::InvalidReference { .. } | ImageError::InvalidArchive(_) => {
                StatusCode::BAD_REQUEST
            }
            ImageError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ImageError::Catalog(m) if m.contains("referenced by several names") => {
                StatusCode::CONFLICT
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<hb_store::StoreError> for ApiError {
    fn from(e: hb_store::StoreError) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = match self.exit_code {
            // An extra field Docker clients ignore; `hb run` exits with it.
            Some(code) => json!({ "message": self.message, "hyperbox_exit_code": code }),
            None => json!({ "message": self.message }),
        };
        (self.status, axum::Json(body)).into_response()
    }
}

pub(crate) type ApiResult = Result<Response, ApiError>;

/// Runs blocking store work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("task failed: {e}"),
        )
    })?
}

/// Query parameters, repeated keys kept in order.
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    fn parse(raw: Option<&str>) -> Result<Query, ApiError> {
        let pairs: Vec<(String, String)> = match raw {
            Some(q) => serde_urlencoded_pairs(q)?,
            None => Vec::new(),
        };
        Ok(Query(pairs))
    }
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    fn all(&self, key: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }
    pub(crate) fn flag(&self, key: &str) -> bool {
        self.flag_or(key, false)
    }

    /// A boolean parameter read as dockerd reads one: absent or empty is `default`; `0`, `no`,
    /// `false`, `none` (any case) are false; anything else is true (docker-py sends `False`).
    pub(crate) fn flag_or(&self, key: &str, default: bool) -> bool {
        match self.get(key).map(|v| v.trim().to_ascii_lowercase()) {
            None => default,
            Some(v) if v.is_empty() => default,
            Some(v) => !matches!(v.as_str(), "0" | "no" | "false" | "none"),
        }
    }
}

fn serde_urlencoded_pairs(q: &str) -> Result<Vec<(String, String)>, ApiError> {
    axum::extract::Query::<Vec<(String, String)>>::try_from_uri(
        &format!("/?{q}")
            .parse()
            .map_err(|_| ApiError::bad_request("malformed query string"))?,
    )
    .map(|axum::extract::Query(v)| v)
    .map_err(|e| ApiError::bad_request(format!("malformed query string: {e}")))
}

/// Strips a `/v1.NN` prefix, refusing versions newer than ours or older than the minimum.
fn strip_version(path: &str) -> Result<&str, ApiError> {
    if let Some(rest) = path.strip_prefix("/v") {
        if let Some((ver, tail)) = rest.split_once('/') {
            if let Some((maj, min)) = ver.split_once('.') {
                if let (Ok(maj), Ok(min)) = (maj.parse::<u32>(), min.parse::<u32>()) {
                    let v = (maj, min);
                    if v > (1, 43) {
                        return Err(ApiError::bad_request(format!(
                            "client version {ver} is too new. Maximum supported API version is {API_VERSION}"
                        )));
                    }
                    if v < (1, 24) {
                        return Err(ApiError::bad_request(format!(
                            "client version {ver} is too old. Minimum supported API version is {MIN_API_VERSION}"
                        )));
                    }
                    return Ok(&path[path.len() - tail.len() - 1..]);
                }
            }
        }
    }
    Ok(path)
}

async fn dispatch(State(d): State<Shared>, req: Request) -> Response {
    let began = std::time::Instant::now();
    let method = req.method().clone();
    let uri = req.uri().clone();
    let path = strip_version(uri.path()).unwrap_or("");
    let op = operation_name(&method, path);
    let metrics = d.metrics.clone();
    let result = if path.starts_with("/containers/") || path.starts_with("/exec/") {
        let path = path.to_string();
        match Query::parse(uri.query()) {
            Ok(q) => crate::container_api::route(d, &method, &path, &q, req)
                .await
                .unwrap_or_else(|| Err(ApiError::new(StatusCode::NOT_FOUND, "page not found"))),
            Err(e) => Err(e),
        }
    } else {
        route(d, method.clone(), uri.path(), uri.query(), req.into_body()).await
    };
    let mut resp = match result {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(%method, path = uri.path(), error = %e.message, "request failed");
            e.into_response()
        }
    };
    resp.headers_mut()
        .insert("Api-Version", header::HeaderValue::from_static(API_VERSION));
    resp.headers_mut()
        .insert("Server", header::HeaderValue::from_static("hyperboxd"));
    // The docker CLI reads the daemon's OS from here (from /_ping) before `run --device`.
    resp.headers_mut()
        .insert("OSType", header::HeaderValue::from_static("linux"));
    // Time to the response head: streams (logs -f, attach, events) are not held open here.
    metrics.record_operation(op, began.elapsed());
    resp
}

/// A short, bounded name for the metrics: `containers.create`, `images.list`, … (ids and
/// names in paths collapse, so label values stay few).
fn operation_name(method: &Method, path: &str) -> &'static str {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let is_get = method == Method::GET || method == Method::HEAD;
    match parts.as_slice() {
        ["_ping"] => "ping",
        ["version"] => "version",
        ["info"] => "info",
        ["events"] => "events",
        ["auth"] => "auth",
        ["system", "df"] => "system.df",
        ["images", "create"] => "images.pull",
        ["images", "json"] => "images.list",
        ["images", "load"] => "images.load",
        ["images", "get"] => "images.save",
        ["images", "prune"] => "images.prune",
        ["images", .., "json"] => "images.inspect",
        ["images", .., "tag"] => "images.tag",
        ["images", .., "get"] => "images.save",
        ["images", ..] if method == Method::DELETE => "images.remove",
        ["containers", "json"] => "containers.list",
        ["containers", "create"] => "containers.create",
        ["containers", "prune"] => "containers.prune",
        ["containers", _] if method == Method::DELETE => "containers.remove",
        ["containers", _, action] => match *action {
            "json" => "containers.inspect",
            "start" => "containers.start",
            "stop" => "containers.stop",
            "restart" => "containers.restart",
            "kill" => "containers.kill",
            "wait" => "containers.wait",
            "attach" => "containers.attach",
            "resize" => "containers.resize",
            "exec" => "exec.create",
            "logs" => "containers.logs",
            "top" => "containers.top",
            "stats" => "containers.stats",
            _ => "other",
        },
        ["exec", _, "start"] => "exec.start",
        ["exec", _, "json"] if is_get => "exec.inspect",
        ["exec", _, "resize"] => "exec.resize",
        ["hyperbox", ..] => "hyperbox",
        _ => "other",
    }
}

async fn route(
    d: Shared,
    method: Method,
    path: &str,
    query: Option<&str>,
    body: Body,
) -> ApiResult {
    let path = strip_version(path)?;
    let q = Query::parse(query)?;
    match (&method, path) {
        (&Method::GET | &Method::HEAD, "/_ping") => {
            Ok(([(header::CACHE_CONTROL, "no-cache")], "OK").into_response())
        }
        (&Method::GET, "/version") => Ok(axum::Json(version()).into_response()),
        (&Method::GET, "/info") => info(d).await,
        (&Method::POST, "/images/create") => pull(d, q).await,
        (&Method::GET, "/images/json") => list_images(d).await,
        (&Method::POST, "/images/load") => load(d, body).await,
        (&Method::GET, "/images/get") => save(d, q.all("names")).await,
        (&Method::POST, "/images/prune") => prune(d, true).await,
        (&Method::GET, "/system/df") => docker_df(d).await,
        (&Method::GET, "/events") => events(d, q),
        (&Method::POST, "/auth") => login(d, body).await,
        (&Method::GET, "/hyperbox/system/df") => hyperbox_df(d).await,
        (&Method::GET, "/hyperbox/metrics") => engine_metrics(d, q).await,
        (&Method::POST, "/hyperbox/system/prune") => prune(d, false).await,
        (&Method::POST, "/hyperbox/system/check") => check(d, q.flag("repair")).await,
        (&Method::POST, "/hyperbox/system/compress") => compress(d).await,
        (&Method::POST, "/hyperbox/logout") => logout(d, q).await,
        (&Method::GET, "/hyperbox/predict") => predict(d, q).await,
        (&Method::GET, "/hyperbox/predict/history") => predict_history(d).await,
        (&Method::POST, "/hyperbox/prewarm") => prewarm(d, q).await,
        (&Method::POST, "/hyperbox/evict") => evict(d, q).await,
        _ => {
            if let Some(rest) = path.strip_prefix("/images/") {
                if let Some(name) = rest.strip_suffix("/json") {
                    if method == Method::GET {
                        return inspect(d, name.to_string()).await;
                    }
                }
                if let Some(name) = rest.strip_suffix("/tag") {
                    if method == Method::POST {
                        return tag(d, name.to_string(), q).await;
                    }
                }
                if let Some(name) = rest.strip_suffix("/get") {
                    if method == Method::GET {
                        return save(d, vec![name.to_string()]).await;
                    }
                }
                if method == Method::DELETE {
                    return remove(d, rest.to_string(), q.flag("force")).await;
                }
            }
            Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("page not found: {method} {path} is not offered by hyperboxd"),
            ))
        }
    }
}

fn version() -> Value {
    json!({
        "Platform": {"Name": "HyperBox"},
        "Components": [{"Name": "Engine", "Version": env!("CARGO_PKG_VERSION"), "Details": {"ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION}}],
        "Version": env!("CARGO_PKG_VERSION"),
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "Os": "linux",
        "Arch": Platform::host().architecture,
        "KernelVersion": kernel_version(),
        "GoVersion": "n/a (Rust)",
        "GitCommit": "",
    })
}

fn kernel_version() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

async fn info(d: Shared) -> ApiResult {
    let catalog = d.catalog.clone();
    let images = blocking(move || Ok(catalog.list()?.len())).await?;
    let records = d.containers.snapshot();
    let running = records
        .iter()
        .filter(|r| r.state.status == crate::containers::record::Status::Running)
        .count();
    Ok(axum::Json(json!({
        "ID": "hyperbox",
        "Containers": records.len(), "ContainersRunning": running, "ContainersPaused": 0,
        "ContainersStopped": records.len() - running,
        "Images": images,
        "Driver": "hyperbox-chunkstore",
        "DockerRootDir": d.config.daemon.data_dir,
        "OperatingSystem": "linux",
        "OSType": "linux",
        "Architecture": std::env::consts::ARCH,
        "KernelVersion": kernel_version(),
        "NCPU": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "ServerVersion": env!("CARGO_PKG_VERSION"),
        "Name": "hyperboxd",
    }))
    .into_response())
}

/// A streaming JSON-lines response body fed from a channel.
fn json_stream(rx: mpsc::Receiver<Value>) -> Response {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let v = rx.recv().await?;
        let mut line = serde_json::to_vec(&v).unwrap_or_default();
        line.push(b'\n');
        Some((Ok::<_, std::io::Error>(Bytes::from(line)), rx))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
        })
}

/// `GET /events`: past events from `since`, then live ones until `until` (or forever), each a
/// JSON line, narrowed by `filters` (type, event, container, image).
fn events(d: Shared, q: Query) -> ApiResult {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.as_nanos() as i128)
        .unwrap_or(0);
    let time = |key: &str| -> Result<Option<i128>, ApiError> {
        match q.get(key).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => crate::events::parse_time(v, now)
                .map(Some)
                .ok_or_else(|| ApiError::bad_request(format!("invalid {key} time: {v:?}"))),
        }
    };
    let since = time("since")?;
    let until = time("until")?;
    let filters: HashMap<String, Vec<String>> = match q.get("filters").filter(|f| !f.is_empty()) {
        Some(f) => crate::container_api::parse_filters(f)?,
        None => HashMap::new(),
    };
    let wanted = move |e: &Value| -> bool {
        let any = |key: &str, values: &[&Value]| {
            filters.get(key).is_none_or(|want| {
                want.iter().any(|w| {
                    values.iter().any(|v| {
                        v.as_str().is_some_and(|s| {
                            s == w
                                || s.trim_start_matches('/') == w
                                || (w.len() >= 3 && s.starts_with(w.as_str()))
                        })
                    })
                })
            })
        };
        let actor = &e["Actor"];
        let is_container = e["Type"] == "container";
        any("type", &[&e["Type"]])
            && any("event", &[&e["Action"]])
            && (!filters.contains_key("container")
                || is_container && any("container", &[&actor["ID"], &actor["Attributes"]["name"]]))
            && any(
                "image",
                &[
                    &actor["Attributes"]["image"],
                    &actor["Attributes"]["name"],
                    &actor["ID"],
                ],
            )
    };
    // Without `since`, only what happens from now on.
    let (past, mut live) = d.events.replay_and_follow(since.unwrap_or(now + 1));
    let (tx, rx) = mpsc::channel::<Value>(256);
    tokio::spawn(async move {
        let mut last = i128::MIN;
        for e in past {
            if until.is_some_and(|u| e.time_nano > u) {
                return;
            }
            last = e.time_nano;
            if wanted(&e.json) && tx.send(e.json).await.is_err() {
                return;
            }
        }
        loop {
            let deadline = until.map(|u| {
                let left = (u - now).max(0) as u64;
                tokio::time::Instant::now() + std::time::Duration::from_nanos(left)
            });
            let next = match deadline {
                Some(t) => match tokio::time::timeout_at(t, live.recv()).await {
                    Ok(r) => r,
                    Err(_) => return,
                },
                None => tokio::select! {
                    r = live.recv() => r,
                    _ = tx.closed() => return,
                },
            };
            match next {
                Ok(e) if e.time_nano <= last => {}
                Ok(e) => {
                    if until.is_some_and(|u| e.time_nano > u) {
                        return;
                    }
                    if wanted(&e.json) && tx.send(e.json).await.is_err() {
                        return;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    Ok(json_stream(rx))
}

fn progress_line(e: &PullEvent) -> Vec<Value> {
    match e {
        PullEvent::Resolved { layers, .. } => layers
            .iter()
            .map(|(id, _)| json!({"status": "Pulling fs layer", "id": id}))
            .collect(),
        PullEvent::LayerExists { id } => vec![json!({"status": "Already exists", "id": id})],
        PullEvent::LayerProgress { id, current, total } => vec![json!({
            "status": "Downloading", "id": id,
            "progressDetail": {"current": current, "total": total},
        })],
        PullEvent::LayerDone { id } => vec![json!({"status": "Pull complete", "id": id})],
        PullEvent::Retrying { what, attempt } => {
            vec![json!({"status": format!("Retrying {what} (attempt {attempt})")})]
        }
    }
}

async fn pull(d: Shared, q: Query) -> ApiResult {
    let from = q
        .get("fromImage")
        .ok_or_else(|| ApiError::bad_request("fromImage is required"))?;
    let text = match q.get("tag").filter(|t| !t.is_empty()) {
        Some(t) if t.starts_with("sha256:") => format!("{from}@{t}"),
        Some(t) => format!("{from}:{t}"),
        None => from.to_string(),
    };
    let reference = ImageRef::parse(&text)?;
    let platform = match q.get("platform").filter(|p| !p.is_empty()) {
        Some(p) => Some(Platform::parse(p)?),
        None => None,
    };
    let (tx, rx) = mpsc::channel::<Value>(256);
    tokio::spawn(async move {
        // Prewarm work yields while a user's pull runs.
        let _user = d.prewarmer.activity().begin();
        let label = reference
            .tag()
            .or(reference.digest())
            .unwrap_or("latest")
            .to_string();
        let _ = tx
            .send(
                json!({"status": format!("Pulling from {}", reference.repository()), "id": label}),
            )
            .await;
        let before = {
            let catalog = d.catalog.clone();
            let name = reference.canonical();
            tokio::task::spawn_blocking(move || catalog.resolve(&name).ok().flatten().map(|r| r.id))
                .await
                .ok()
                .flatten()
        };
        let sender = tx.clone();
        let report = move |e: PullEvent| {
            for line in progress_line(&e) {
                // A slow reader must not stall the pull: drop progress lines it cannot take.
                let _ = sender.try_send(line);
            }
        };
        let started = std::time::Instant::now();
        let result = d.puller.pull(&reference, platform.as_ref(), &report).await;
        d.metrics.record_pull(started.elapsed(), result.is_ok());
        match result {
            Ok(rec) => {
                tracing::info!(image = %reference, id = %rec.id, ms = started.elapsed().as_millis() as u64, "pulled");
                let name = hb_image::reference::familiar_name(&reference.canonical());
                d.prewarmer.image_pulled(&reference.canonical());
                d.events
                    .publish("image", "pull", &name, &[("name", name.clone())]);
                let _ = tx
                    .send(json!({"status": format!("Digest: {}", rec.manifest_digest)}))
                    .await;
                let status = if before.as_deref() == Some(rec.id.as_str()) {
                    format!("Status: Image is up to date for {reference}")
                } else {
                    format!("Status: Downloaded newer image for {reference}")
                };
                // Docker's last line carries no id (the CLI would print it as a prefix);
                // `hb pull -q` reads the image id from an extra field clients ignore.
                let _ = tx
                    .send(json!({"status": status, "hyperbox_image_id": rec.id}))
                    .await;
            }
            Err(e) => {
                tracing::warn!(image = %reference, error = %e, "pull failed");
                let m = e.to_string();
                let _ = tx
                    .send(json!({"errorDetail": {"message": m}, "error": m}))
                    .await;
            }
        }
    });
    Ok(json_stream(rx))
}

fn image_summary(
    rec: &hb_image::ImageRecord,
    names: &[String],
    usage: Option<&hb_store::GroupUsage>,
) -> Value {
    let tags: Vec<String> = names
        .iter()
        .filter(|n| !n.contains('@'))
        .map(|n| hb_image::reference::familiar_name(n))
        .collect();
    let digests: Vec<String> = rec
        .repo_digests
        .iter()
        .map(|n| hb_image::reference::familiar_name(n))
        .collect();
    json!({
        "Id": rec.id,
        "ParentId": "",
        "RepoTags": tags,
        "RepoDigests": digests,
        "Created": created_unix(rec.created.as_deref()),
        "Size": rec.size(),
        "VirtualSize": rec.size(),
        "SharedSize": usage.map(|u| u.shared_bytes as i64).unwrap_or(-1),
        "StoredSize": usage.map(|u| u.stored_bytes as i64).unwrap_or(-1),
        "UniqueStoredSize": usage.map(|u| u.unique_bytes as i64).unwrap_or(-1),
        "Labels": {},
        "Containers": -1,
    })
}

/// RFC 3339 `created` to unix seconds (0 when absent or unreadable).
fn created_unix(created: Option<&str>) -> i64 {
    let Some(s) = created else { return 0 };
    // YYYY-MM-DDTHH:MM:SS… ; days from civil date (Howard Hinnant's algorithm).
    let p = |a: usize, b: usize| s.get(a..b).and_then(|x| x.parse::<i64>().ok());
    let (Some(y), Some(m), Some(dd), Some(hh), Some(mm), Some(ss)) =
        (p(0, 4), p(5, 7), p(8, 10), p(11, 13), p(14, 16), p(17, 19))
    else {
        return 0;
    };
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + dd - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    days * 86400 + hh * 3600 + mm * 60 + ss
}

/// Images with their names and store usage (shared vs unique bytes).
fn images_with_usage(
    d: &Daemon,
) -> Result<Vec<(hb_image::ImageRecord, Vec<String>, hb_store::GroupUsage)>, ApiError> {
    let list = d.catalog.list()?;
    let groups: Vec<(String, Vec<String>)> = list
        .iter()
        .map(|(r, _)| (r.id.clone(), r.blobs()))
        .collect();
    let usage = d.catalog.store().usage(&groups)?;
    Ok(list
        .into_iter()
        .zip(usage)
        .map(|((r, n), u)| (r, n, u))
        .collect())
}

async fn list_images(d: Shared) -> ApiResult {
    let rows = blocking(move || images_with_usage(&d)).await?;
    let out: Vec<Value> = rows
        .iter()
        .map(|(r, n, u)| image_summary(r, n, Some(u)))
        .collect();
    Ok(axum::Json(out).into_response())
}

async fn inspect(d: Shared, name: String) -> ApiResult {
    let v = blocking(move || {
        let rec = d
            .catalog
            .lookup(&name)?
            .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("No such image: {name}")))?;
        let config: Value = serde_json::from_slice(&d.catalog.store().read_blob(&rec.id)?)
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("stored config of {}: {e}", rec.id)))?;
        let names = d.catalog.names_of(&rec.id)?;
        let mut v = image_summary(&rec, &names, None);
        let obj = v.as_object_mut().ok_or_else(|| ApiError::bad_request("internal"))?;
        obj.insert("Created".into(), json!(rec.created.clone().unwrap_or_default()));
        obj.insert("Os".into(), json!(rec.os));
        obj.insert("Architecture".into(), json!(rec.architecture));
        obj.insert("Config".into(), config.get("config").cloned().unwrap_or(Value::Null));
        obj.insert("Author".into(), config.get("author").cloned().unwrap_or(json!("")));
        obj.insert("RootFS".into(), json!({"Type": "layers", "Layers": rec.layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()}));
        // A Go time.Time in the docker CLI: the zero time, never "".
        obj.insert(
            "Metadata".into(),
            json!({"LastTagTime": "0001-01-01T00:00:00Z"}),
        );
        obj.insert("GraphDriver".into(), json!({"Name": "hyperbox-chunkstore", "Data": {}}));
        obj.insert("HyperBox".into(), json!({
            "ManifestDigest": rec.manifest_digest,
            "ManifestMediaType": rec.manifest_media_type,
            "Layers": rec.layers,
        }));
        Ok(v)
    })
    .await?;
    Ok(axum::Json(v).into_response())
}

async fn tag(d: Shared, name: String, q: Query) -> ApiResult {
    let repo = q
        .get("repo")
        .ok_or_else(|| ApiError::bad_request("repo is required"))?;
    let target = match q.get("tag").filter(|t| !t.is_empty()) {
        Some(t) => format!("{repo}:{t}"),
        None => repo.to_string(),
    };
    let target = ImageRef::parse(&target)?;
    if target.digest().is_some() {
        return Err(ApiError::bad_request(
            "refusing to create a tag with a digest reference",
        ));
    }
    let events = d.events.clone();
    let id = blocking(move || {
        d.catalog.tag(&name, &target.canonical())?;
        let id = d.catalog.resolve(&target.canonical())?.map(|r| r.id);
        Ok((id, target))
    })
    .await?;
    if let (Some(id), target) = id {
        let name = hb_image::reference::familiar_name(&target.canonical());
        events.publish("image", "tag", &id, &[("name", name)]);
    }
    Ok(StatusCode::CREATED.into_response())
}

async fn remove(d: Shared, name: String, force: bool) -> ApiResult {
    let v = blocking(move || {
        let removal = d.catalog.remove(&name, force)?;
        for n in &removal.untagged {
            let n = hb_image::reference::familiar_name(n);
            d.events
                .publish("image", "untag", &n, &[("name", n.clone())]);
        }
        if let Some(id) = &removal.deleted {
            d.events.publish("image", "delete", id, &[]);
        }
        d.prewarmer
            .image_removed(&removal.untagged, removal.deleted.as_deref());
        let mut out: Vec<Value> = removal
            .untagged
            .iter()
            .map(|n| json!({"Untagged": hb_image::reference::familiar_name(n)}))
            .collect();
        if let Some(id) = removal.deleted {
            // Free the image's blobs and chunks now, as `docker rmi` frees its layers, and
            // its unpacked layers (the hot tier) that no image and no container still uses.
            d.catalog.prune_blobs()?;
            evict_unused_layers(&d)?;
            out.push(json!({ "Deleted": id }));
        }
        Ok(out)
    })
    .await?;
    Ok(axum::Json(v).into_response())
}

/// Removes unpacked layers whose image is gone (a layer a container pins stays).
fn evict_unused_layers(d: &Daemon) -> Result<(), ApiError> {
    let live = d.catalog.live_blobs()?;
    let layers = d.containers.layers();
    let usage = layers
        .usage()
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    for (diff_id, _) in usage.layers {
        if !live.contains(&diff_id) {
            match layers.remove(&diff_id) {
                Ok(()) | Err(hb_rootfs::RootfsError::Busy { .. }) => {}
                Err(e) => tracing::warn!(layer = %diff_id, "evicting an unused layer: {e}"),
            }
        }
    }
    Ok(())
}

async fn prune(d: Shared, docker_shape: bool) -> ApiResult {
    let v = blocking(move || {
        let before = d.catalog.store().stats()?;
        let (blobs, report) = d.catalog.prune_blobs()?;
        evict_unused_layers(&d)?;
        let after = d.catalog.store().stats()?;
        let reclaimed = before.pack_bytes.saturating_sub(after.pack_bytes);
        Ok(if docker_shape {
            json!({"ImagesDeleted": [], "SpaceReclaimed": reclaimed})
        } else {
            json!({"blobs_deleted": blobs, "gc": report, "space_reclaimed": reclaimed})
        })
    })
    .await?;
    Ok(axum::Json(v).into_response())
}

/// `POST /hyperbox/system/compress`: compresses now what pulls stored raw (the background
/// thread does this on its own; this waits for it and finishes its work), so disk figures
/// taken afterwards are final.
async fn compress(d: Shared) -> ApiResult {
    let v = blocking(move || {
        let store = d.catalog.store();
        let mut report = store.compress_deferred()?;
        // A gc (prune) claimed the store meanwhile: it is done once we get here again.
        while report.yielded_to_gc {
            report = store.compress_deferred()?;
        }
        Ok(json!(report))
    })
    .await?;
    Ok(axum::Json(v).into_response())
}

/// `GET /hyperbox/predict[?min_confidence=X&limit=N]`: the next predicted images (confidence,
/// reason, horizon, whether warm) and the predictor's counters.
async fn predict(d: Shared, q: Query) -> ApiResult {
    let min_confidence = match q.get("min_confidence").filter(|v| !v.is_empty()) {
        Some(v) => v
            .parse::<f64>()
            .ok()
            .filter(|x| (0.0..=100.0).contains(x))
            .ok_or_else(|| ApiError::bad_request(format!("min_confidence {v:?} is not 0..=100")))?,
        None => 0.0,
    };
    let limit = match q.get("limit").filter(|v| !v.is_empty()) {
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| ApiError::bad_request(format!("limit {v:?} is not a count")))?,
        None => 20,
    };
    let view = blocking(move || Ok(d.prewarmer.predictions(min_confidence, limit))).await?;
    Ok(axum::Json(view).into_response())
}

/// `GET /hyperbox/predict/history`: the predictor's start history (what
/// `<data_dir>/predict/history.jsonl` holds), as a JSON Lines trace `hb predict replay` and
/// `hb tune` read: one start per line, oldest first, with the image's layers.
async fn predict_history(d: Shared) -> ApiResult {
    let events = blocking(move || Ok(d.prewarmer.history())).await?;
    let mut body = Vec::new();
    hb_predict::write_trace(&mut body, &events).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding the start history: {e}"),
        )
    })?;
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}

/// The `image` query parameter of the prewarm and evict operations.
fn image_param(q: &Query) -> Result<String, ApiError> {
    q.get("image")
        .filter(|i| !i.is_empty())
        .map(str::to_string)
        .ok_or_else(|| ApiError::bad_request("image is required"))
}

/// `POST /hyperbox/prewarm?image=REF`: pulls the image if missing and unpacks it into the hot
/// tier; answers when done.
async fn prewarm(d: Shared, q: Query) -> ApiResult {
    let image = image_param(&q)?;
    ImageRef::parse(&image)?;
    // A warm by hand is a user's request: background prewarms wait for it.
    let _user = d.prewarmer.activity().begin();
    match d.prewarmer.warm_now(&image).await {
        Ok(report) => Ok(axum::Json(report).into_response()),
        Err(e) => {
            // A registry's own answer (404, 401) keeps its status.
            let status = match e.downcast_ref::<ImageError>() {
                Some(ImageError::NotFound(_) | ImageError::RemoteNotFound { .. }) => {
                    StatusCode::NOT_FOUND
                }
                Some(ImageError::Unauthorized { .. }) => StatusCode::UNAUTHORIZED,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            Err(ApiError::new(status, format!("prewarming {image}: {e:#}")))
        }
    }
}

/// `POST /hyperbox/evict?image=REF`: drops the image's unpacked layers from the hot tier (what
/// another warm image or a container uses stays); the image stays in the store.
async fn evict(d: Shared, q: Query) -> ApiResult {
    let image = image_param(&q)?;
    let name = image.clone();
    let removed = blocking(move || {
        d.prewarmer
            .evict_now(&name)
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")))
    })
    .await?;
    match removed {
        Some(n) => Ok(axum::Json(json!({"image": image, "layers_removed": n})).into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("No such image: {image}"),
        )),
    }
}

async fn check(d: Shared, repair: bool) -> ApiResult {
    let v = blocking(move || {
        let report = d.catalog.store().check(repair)?;
        // Images whose blobs a repair removed are broken: say which.
        let mut broken = Vec::new();
        for (rec, names) in d.catalog.list()? {
            for b in rec.blobs() {
                if !d.catalog.store().has_blob(&b)? {
                    broken.push(json!({"id": rec.id, "names": names, "missing_blob": b}));
                    break;
                }
            }
        }
        Ok(json!({"store": report, "broken_images": broken}))
    })
    .await?;
    Ok(axum::Json(v).into_response())
}

/// `GET /hyperbox/system/df`: the cold tier (the chunk store: logical, stored, shared bytes per
/// image) and the hot tier (unpacked layers, counted against `[cache] size_mb`): per image
/// whether it is hot (every layer unpacked), partly hot or cold, and the totals, each layer
/// once however many images share it.
async fn hyperbox_df(d: Shared) -> ApiResult {
    let v = blocking(move || {
        let stats = d.catalog.store().stats()?;
        let rows = images_with_usage(&d)?;
        let layers = d.containers.layers();
        let disk = layers.usage().map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("measuring the hot tier: {e}"),
            )
        })?;
        let unpacked: HashMap<&str, u64> = disk
            .layers
            .iter()
            .map(|(diff_id, bytes)| (diff_id.as_str(), *bytes))
            .collect();
        // Each layer once: its uncompressed tar size, what the budget counts.
        let mut layer_sizes: HashMap<&str, u64> = HashMap::new();
        for (r, _, _) in &rows {
            for l in &r.layers {
                layer_sizes.insert(l.diff_id.as_str(), l.size);
            }
        }
        let mut hot_bytes = 0u64;
        let mut cold_bytes = 0u64;
        let (mut hot_layers, mut cold_layers) = (0u64, 0u64);
        for (diff_id, size) in &layer_sizes {
            if unpacked.contains_key(diff_id) {
                hot_bytes += size;
                hot_layers += 1;
            } else {
                cold_bytes += size;
                cold_layers += 1;
            }
        }
        // Unpacked layers no image names any more (a container still pins them): their bytes
        // on disk, as no tar size is known.
        let orphans: Vec<u64> = unpacked
            .iter()
            .filter(|(diff_id, _)| !layer_sizes.contains_key(*diff_id))
            .map(|(_, bytes)| *bytes)
            .collect();
        hot_bytes += orphans.iter().sum::<u64>();
        hot_layers += orphans.len() as u64;
        let (mut images_hot, mut images_cold, mut images_partial) = (0u64, 0u64, 0u64);
        let images: Vec<Value> = rows
            .iter()
            .map(|(r, n, u)| {
                let mut seen = std::collections::HashSet::new();
                let (mut total, mut warm, mut warm_bytes) = (0u64, 0u64, 0u64);
                for l in r.layers.iter().filter(|l| seen.insert(l.diff_id.as_str())) {
                    total += 1;
                    if unpacked.contains_key(l.diff_id.as_str()) {
                        warm += 1;
                        warm_bytes += l.size;
                    }
                }
                let tier = if total > 0 && warm == total {
                    images_hot += 1;
                    "hot"
                } else if warm > 0 {
                    images_partial += 1;
                    "partial"
                } else {
                    images_cold += 1;
                    "cold"
                };
                json!({
                    "id": r.id,
                    "names": n.iter().map(|x| hb_image::reference::familiar_name(x)).collect::<Vec<_>>(),
                    "logical_bytes": u.logical_bytes,
                    "stored_bytes": u.stored_bytes,
                    "shared_bytes": u.shared_bytes,
                    "unique_bytes": u.unique_bytes,
                    "tier": tier,
                    "layers": total,
                    "layers_unpacked": warm,
                    "hot_bytes": warm_bytes,
                })
            })
            .collect();
        let (budget_mb, policy_mb) = d.prewarmer.hot_tier_mb();
        Ok(json!({
            "store": stats,
            "hot": {
                "used_bytes": hot_bytes,
                "budget_bytes": (budget_mb * 1024.0 * 1024.0) as u64,
                "policy_used_bytes": (policy_mb * 1024.0 * 1024.0) as u64,
                "disk_bytes": disk.total_bytes,
                "layers": hot_layers,
                "images": images_hot,
                "images_partial": images_partial,
            },
            "cold": {
                "logical_bytes": cold_bytes,
                "layers": cold_layers,
                "images": images_cold,
            },
            "images": images,
        }))
    })
    .await?;
    Ok(axum::Json(v).into_response())
}

async fn docker_df(d: Shared) -> ApiResult {
    let mut in_use: HashMap<String, i64> = HashMap::new();
    for r in d.containers.snapshot() {
        *in_use.entry(r.image_id.clone()).or_default() += 1;
    }
    let v = blocking(move || {
        let stats = d.catalog.store().stats()?;
        let rows = images_with_usage(&d)?;
        let images: Vec<Value> = rows
            .iter()
            .map(|(r, n, u)| {
                let mut v = image_summary(r, n, Some(u));
                // The docker CLI sums Size - SharedSize of images in use and subtracts that from
                // LayersSize (bytes on disk): sizes here are stored (compressed, deduplicated)
                // bytes, so the figures add up.
                v["Size"] = json!(u.stored_bytes);
                v["Containers"] = json!(in_use.get(&r.id).copied().unwrap_or(0));
                v
            })
            .collect();
        // Pack files can hold less than the images' stored bytes (recipes live in the
        // index): never report less on disk than the images in use account for.
        let exclusive: u64 = rows
            .iter()
            .map(|(_, _, u)| u.stored_bytes - u.shared_bytes.min(u.stored_bytes))
            .sum();
        let layers = stats.pack_bytes.max(exclusive);
        Ok(json!({"LayersSize": layers, "Images": images, "Containers": [], "Volumes": [], "BuildCache": []}))
    })
    .await?;
    Ok(axum::Json(v).into_response())
}

pub(crate) async fn read_json_body(body: Body) -> Result<Value, ApiError> {
    let bytes = axum::body::to_bytes(body, MAX_JSON_BODY)
        .await
        .map_err(|e| ApiError::bad_request(format!("request body: {e}")))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))
}

async fn login(d: Shared, body: Body) -> ApiResult {
    let v = read_json_body(body).await?;
    let field = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let (username, password) = (field("username"), field("password"));
    let server = field("serveraddress");
    let server = if server.is_empty() {
        "docker.io".to_string()
    } else {
        server
    };
    let server = server
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .trim_end_matches("/v1")
        .to_string();
    if username.is_empty() || password.is_empty() {
        return Err(ApiError::bad_request("username and password are required"));
    }
    d.puller
        .login(
            &server,
            hb_image::credentials::Credential { username, password },
        )
        .await?;
    Ok(axum::Json(json!({"Status": "Login Succeeded", "IdentityToken": ""})).into_response())
}

async fn logout(d: Shared, q: Query) -> ApiResult {
    let server = q
        .get("server")
        .ok_or_else(|| ApiError::bad_request("server is required"))?
        .to_string();
    blocking(move || Ok(d.puller.logout(&server)?)).await?;
    Ok(axum::Json(json!({"Status": "Removed login credentials"})).into_response())
}

async fn load(d: Shared, body: Body) -> ApiResult {
    // Archives name their parts in any order: spool to a file, then index it.
    let path = d.tmp_dir().join(format!(
        "load-{}-{}.tar",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|t| t.as_nanos())
            .unwrap_or(0)
    ));
    let mut file = tokio::fs::File::create(&path).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("creating {}: {e}", path.display()),
        )
    })?;
    let mut stream = body.into_data_stream();
    while let Some(piece) = stream.next().await {
        let piece = match piece {
            Ok(p) => p,
            Err(e) => {
                let _ = tokio::fs::remove_file(&path).await;
                return Err(ApiError::bad_request(format!("reading the upload: {e}")));
            }
        };
        if let Err(e) = file.write_all(&piece).await {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("spooling the upload: {e}"),
            ));
        }
    }
    // A tokio File finishes its last write on a blocking thread: without this flush the reader
    // below could open the spool before the tail landed (a truncated archive).
    if let Err(e) = file.flush().await {
        let _ = tokio::fs::remove_file(&path).await;
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("spooling the upload: {e}"),
        ));
    }
    drop(file);
    let p2 = path.clone();
    let d2 = d.clone();
    let result = blocking(move || Ok(hb_image::archive::load(&d.catalog, &p2)?)).await;
    let _ = tokio::fs::remove_file(&path).await;
    let loaded = result?;
    let mut lines = Vec::new();
    for img in &loaded {
        d2.events.publish("image", "load", &img.id, &[]);
    }
    for img in loaded {
        if img.names.is_empty() {
            lines.push(json!({"stream": format!("Loaded image ID: {}\n", img.id)}));
        }
        for n in img.names {
            lines.push(json!({"stream": format!("Loaded image: {}\n", hb_image::reference::familiar_name(&n))}));
        }
    }
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// A `Write` that feeds a streaming response body.
struct ChannelWriter {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    buf: Vec<u8>,
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= 256 * 1024 {
            self.flush()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            let b = Bytes::from(std::mem::take(&mut self.buf));
            self.tx.blocking_send(Ok(b)).map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away")
            })?;
        }
        Ok(())
    }
}

async fn save(d: Shared, names: Vec<String>) -> ApiResult {
    if names.is_empty() {
        return Err(ApiError::bad_request("no image names given"));
    }
    // Resolve first, so an unknown name is a clean 404 rather than a broken stream.
    let d2 = d.clone();
    let images = blocking(move || {
        let all = d2.catalog.list()?;
        let by_id: HashMap<String, Vec<String>> =
            all.into_iter().map(|(r, n)| (r.id.clone(), n)).collect();
        let mut out: Vec<(hb_image::ImageRecord, Vec<String>)> = Vec::new();
        for n in &names {
            let rec = d2.catalog.lookup(n)?.ok_or_else(|| {
                ApiError::new(StatusCode::NOT_FOUND, format!("No such image: {n}"))
            })?;
            let mut tags = match ImageRef::parse(n) {
                Ok(r)
                    if by_id
                        .get(&rec.id)
                        .is_some_and(|v| v.contains(&r.canonical())) =>
                {
                    vec![r.canonical()]
                }
                _ => by_id.get(&rec.id).cloned().unwrap_or_default(),
            };
            tags.retain(|t| !t.contains('@'));
            match out.iter_mut().find(|(r, _)| r.id == rec.id) {
                Some((_, v)) => v.extend(tags),
                None => out.push((rec, tags)),
            }
        }
        Ok(out)
    })
    .await?;
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    tokio::task::spawn_blocking(move || {
        let mut w = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::new(),
        };
        if let Err(e) = hb_image::archive::save(&d.catalog, &images, &mut w) {
            tracing::warn!(error = %e, "save failed");
            let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
    });
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-tar")
        .body(Body::from_stream(stream))
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// `GET /hyperbox/metrics[?interval=]`: the metrics port's exposition on the API socket, for
/// `hb stats --engine` (the metrics port may be disabled or elsewhere).
async fn engine_metrics(d: Shared, q: Query) -> ApiResult {
    let interval = match q.get("interval").filter(|i| !i.is_empty()) {
        Some(i) => Some(crate::metrics::http::parse_interval(i).map_err(ApiError::bad_request)?),
        None => None,
    };
    if interval.is_none() {
        d.metrics.refresh_store_stats().await;
    }
    let text = d
        .metrics
        .render(interval)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_prefixes() {
        assert_eq!(strip_version("/v1.41/images/json").unwrap(), "/images/json");
        assert_eq!(strip_version("/images/json").unwrap(), "/images/json");
        assert!(strip_version("/v1.99/images/json").is_err());
        assert!(strip_version("/v1.12/images/json").is_err());
        assert_eq!(strip_version("/v1.43/_ping").unwrap(), "/_ping");
    }

    #[test]
    fn created_parses_rfc3339() {
        assert_eq!(created_unix(Some("1970-01-01T00:00:00Z")), 0);
        assert_eq!(created_unix(Some("2024-03-01T12:00:00.5Z")), 1709294400);
        assert_eq!(created_unix(Some("garbage")), 0);
        assert_eq!(created_unix(None), 0);
    }
}
