//! The daemon's event stream (`GET /events`, `docker events`): container and image lifecycle
//! events in Docker's JSON shape, kept in a bounded in-memory log for `since`/`until` replays
//! and broadcast live to followers.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};
use tokio::sync::broadcast;

/// How many past events `since` can reach (Docker keeps 256).
const KEPT: usize = 1024;

/// One event, as `/events` sends it.
#[derive(Clone, Debug)]
pub struct EngineEvent {
    /// Nanoseconds since the epoch.
    pub time_nano: i128,
    /// Docker's JSON for it.
    pub json: Value,
}

/// The log and the live feed.
pub struct EventLog {
    past: Mutex<VecDeque<EngineEvent>>,
    live: broadcast::Sender<EngineEvent>,
}

impl Default for EventLog {
    fn default() -> Self {
        Self::new()
    }
}

impl EventLog {
    /// An empty log.
    pub fn new() -> EventLog {
        EventLog {
            past: Mutex::new(VecDeque::with_capacity(KEPT)),
            live: broadcast::channel(KEPT).0,
        }
    }

    /// Records an event: `kind` is "container" or "image", `action` Docker's verb ("create",
    /// "start", "die", "destroy", "pull", "tag", …), `id` the actor, `attributes` its
    /// attributes (name, image, exitCode, …).
    pub fn publish(&self, kind: &str, action: &str, id: &str, attributes: &[(&str, String)]) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(0);
        let attrs: Map<String, Value> = attributes
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.clone())))
            .collect();
        let mut json = json!({
            "Type": kind,
            "Action": action,
            "Actor": {"ID": id, "Attributes": attrs},
            "scope": "local",
            "time": now / 1_000_000_000,
            "timeNano": now,
        });
        // The pre-1.22 fields old clients (and the 20.10 CLI's formatter) still read.
        if kind == "container" || kind == "image" {
            json["status"] = json!(action);
            json["id"] = json!(id);
            if let Some((_, image)) = attributes.iter().find(|(k, _)| *k == "image") {
                json["from"] = json!(image);
            }
        }
        let event = EngineEvent {
            time_nano: now,
            json,
        };
        {
            let mut past = self.past.lock().unwrap_or_else(|p| p.into_inner());
            if past.len() == KEPT {
                past.pop_front();
            }
            past.push_back(event.clone());
        }
        let _ = self.live.send(event);
    }

    /// Past events from `since_nano` on, and a receiver for the ones after them (subscribed
    /// before the copy, so none falls in between; a caller drops live events not newer than
    /// the last past one).
    pub fn replay_and_follow(
        &self,
        since_nano: i128,
    ) -> (Vec<EngineEvent>, broadcast::Receiver<EngineEvent>) {
        let rx = self.live.subscribe();
        let past = self.past.lock().unwrap_or_else(|p| p.into_inner());
        let old = past
            .iter()
            .filter(|e| e.time_nano >= since_nano)
            .cloned()
            .collect();
        (old, rx)
    }
}

/// Docker's `since`/`until` values: unix seconds with an optional fraction
/// ("1700000000.123456789"), an RFC 3339 time, or a duration before `now` ("10m", "1h30m").
pub fn parse_time(text: &str, now_nano: i128) -> Option<i128> {
    let t = text.trim();
    if t.is_empty() {
        return None;
    }
    if let Some((secs, frac)) = t.split_once('.') {
        let s: i128 = secs.parse().ok()?;
        let digits: String = frac.chars().take(9).collect();
        let n: i128 = format!("{digits:0<9}").parse().ok()?;
        return Some(s * 1_000_000_000 + n);
    }
    if let Ok(s) = t.parse::<i128>() {
        return Some(s * 1_000_000_000);
    }
    if let Some(d) = parse_go_duration(t) {
        return Some(now_nano - d);
    }
    rfc3339_nanos(t)
}

/// "1h30m", "10m", "45s", "1.5h" to nanoseconds.
fn parse_go_duration(t: &str) -> Option<i128> {
    let mut total = 0f64;
    let mut num = String::new();
    let mut seen = false;
    let mut chars = t.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let mut unit = c.to_string();
        if c == 'm' && chars.peek() == Some(&'s') {
            unit.push('s');
            chars.next();
        }
        let v: f64 = num.parse().ok()?;
        num.clear();
        let scale = match unit.as_str() {
            "h" => 3600e9,
            "m" => 60e9,
            "s" => 1e9,
            "ms" => 1e6,
            _ => return None,
        };
        total += v * scale;
        seen = true;
    }
    (seen && num.is_empty()).then_some(total as i128)
}

/// "2026-11-27T04:05:06(.fff)Z" (or with a ±hh:mm offset) to nanoseconds.
fn rfc3339_nanos(t: &str) -> Option<i128> {
    let p = |a: usize, b: usize| t.get(a..b)?.parse::<i64>().ok();
    let (y, mo, d, h, mi, s) = (
        p(0, 4)?,
        p(5, 7)?,
        p(8, 10)?,
        p(11, 13)?,
        p(14, 16)?,
        p(17, 19)?,
    );
    let rest = &t[19..];
    let (frac, zone) = match rest.strip_prefix('.') {
        Some(r) => {
            let end = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
            (&r[..end], &r[end..])
        }
        None => ("", rest),
    };
    let nanos: i128 = if frac.is_empty() {
        0
    } else {
        format!("{:0<9}", &frac[..frac.len().min(9)]).parse().ok()?
    };
    let offset = match zone {
        "Z" | "" => 0,
        z if z.len() == 6 => {
            let sign = if z.starts_with('-') { -1 } else { 1 };
            sign * (z[1..3].parse::<i64>().ok()? * 3600 + z[4..6].parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = mo;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + s - offset;
    Some(secs as i128 * 1_000_000_000 + nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_docker_forms() {
        let now = 2_000_000_000i128 * 1_000_000_000;
        assert_eq!(
            parse_time("1700000000", now),
            Some(1_700_000_000_000_000_000)
        );
        assert_eq!(
            parse_time("1700000000.5", now),
            Some(1_700_000_000_500_000_000)
        );
        assert_eq!(parse_time("10m", now), Some(now - 600_000_000_000));
        assert_eq!(parse_time("1h30m", now), Some(now - 5_400_000_000_000));
        assert_eq!(
            parse_time("2023-11-14T22:13:20Z", now),
            Some(1_700_000_000_000_000_000)
        );
        assert_eq!(
            parse_time("2023-11-14T23:13:20+01:00", now),
            Some(1_700_000_000_000_000_000)
        );
        assert_eq!(parse_time("yesterday", now), None);
        assert_eq!(parse_time("", now), None);
    }

    #[test]
    fn log_is_bounded_and_replays_from_since() {
        let log = EventLog::new();
        for i in 0..(KEPT + 10) {
            log.publish("container", "start", &format!("c{i}"), &[]);
        }
        let (all, _) = log.replay_and_follow(0);
        assert_eq!(all.len(), KEPT);
        assert_eq!(all[0].json["Actor"]["ID"], "c10");
        let cut = all[KEPT - 2].time_nano;
        let (tail, _) = log.replay_and_follow(cut);
        assert!(tail.len() >= 2 && tail.len() <= KEPT);
        assert!(tail.iter().all(|e| e.time_nano >= cut));
    }
}
