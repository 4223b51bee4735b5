//! The HTTP side: `/metrics`, `/health` and `/ready`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::exposition::CONTENT_TYPE;
use super::{Metrics, Readiness};

/// What the handlers share.
#[derive(Clone)]
struct Shared {
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
}

/// The metrics endpoint's routes:
///
/// * `GET /metrics`: Prometheus text format 0.0.4, all-time view;
///   `GET /metrics?interval=5m` (`<n>s|m|h|d`, e.g. `30m`, `2h`, `24h`): the
///   same names over that window; 400 with a message for anything else.
/// * `GET /health`: 200 `{"status":"ok"}` while the process serves.
/// * `GET /ready`: 200 `{"status":"ready"}` once `readiness` is set, else 503
///   `{"status":"not ready","reason":…}`.
pub fn router(metrics: Arc<Metrics>, readiness: Arc<Readiness>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .with_state(Shared { metrics, readiness })
}

async fn metrics_text(State(shared): State<Shared>, RawQuery(query): RawQuery) -> Response {
    let interval = match parse_query(query.as_deref()) {
        Ok(interval) => interval,
        Err(message) => return bad_request(message),
    };
    // Only the all-time view shows the store totals.
    if interval.is_none() {
        shared.metrics.refresh_store_stats().await;
    }
    match shared.metrics.render(interval) {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(e) => bad_request(e.to_string()),
    }
}

async fn health() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

async fn ready(State(shared): State<Shared>) -> Response {
    match shared.readiness.check() {
        Ok(()) => Json(json!({ "status": "ready" })).into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not ready", "reason": reason })),
        )
            .into_response(),
    }
}

fn bad_request(message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{message}\n"),
    )
        .into_response()
}

/// The interval of a `/metrics` query string, if any. Unknown parameters are
/// refused rather than ignored, so a misspelt `interval` does not silently
/// answer with the all-time view.
pub(crate) fn parse_query(query: Option<&str>) -> Result<Option<Duration>, String> {
    let mut interval = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("interval", value)) => {
                if interval.is_some() {
                    return Err("interval given more than once".into());
                }
                interval = Some(parse_interval(value)?);
            }
            _ => {
                let name = pair.split_once('=').map_or(pair, |(name, _)| name);
                return Err(format!(
                    "unknown query parameter {name:?}: /metrics takes only interval (e.g. ?interval=5m)"
                ));
            }
        }
    }
    Ok(interval)
}

/// `<positive integer><unit>`, unit `s`, `m`, `h` or `d`: `30s`, `5m`, `2h`, `1d`.
pub(crate) fn parse_interval(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "bad interval {text:?}: expected a positive whole number and a unit s, m, h or d, e.g. 5m, 1h, 24h"
        )
    };
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    let count: u64 = digits.parse().map_err(|_| bad())?;
    let unit_secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 60 * 60,
        "d" => 24 * 60 * 60,
        _ => return Err(bad()),
    };
    if count == 0 {
        return Err(bad());
    }
    count
        .checked_mul(unit_secs)
        .map(Duration::from_secs)
        .ok_or_else(bad)
}
