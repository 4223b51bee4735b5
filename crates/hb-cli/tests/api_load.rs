//! The API under load and bad input, over real TCP to a real hyperboxd: 1000 concurrent
//! clients against `max_connections = 100`, malformed and oversized requests, a slowloris
//! client, a client that vanishes mid-attach, and a container that floods its log.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::busybox::{can_run, daemon_for_image};
use common::Daemon;

/// One HTTP/1.1 request with `Connection: close`; (status, body), or what went wrong.
fn http(addr: &str, method: &str, path: &str, body: &[u8]) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(120)))
        .map_err(|e| format!("timeout: {e}"))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: hb\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    // The server may answer (413, 400) before reading all of a large body.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status line in {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn pulled_daemon(extra: &str) -> (Daemon, String) {
    let (d, img) = daemon_for_image(extra);
    d.hb_ok(&["pull", img]);
    (d, img.to_string())
}

#[test]
fn a_thousand_clients_against_max_connections_100_lose_and_duplicate_nothing() {
    if !can_run() {
        return;
    }
    let (d, img) = pulled_daemon("[networking]\nmax_connections = 100\n");
    let pid = d.child.as_ref().map(|c| c.id()).expect("daemon pid");
    let before = rss_kib(pid);
    let addr = d.tcp_addr.clone();
    let start = Instant::now();
    let clients: Vec<_> = (0..1000)
        .map(|i| {
            let addr = addr.clone();
            let img = img.clone();
            std::thread::spawn(move || {
                // Half create a container, half list: both kinds of work contend.
                if i % 2 == 0 {
                    let body = format!(r#"{{"Image": "{img}", "Cmd": ["true"]}}"#);
                    let r = http(
                        &addr,
                        "POST",
                        &format!("/containers/create?name=load-{i}"),
                        body.as_bytes(),
                    );
                    (i, r)
                } else {
                    (i, http(&addr, "GET", "/containers/json?all=1", b""))
                }
            })
        })
        .collect();
    let mut created = Vec::new();
    for c in clients {
        let (i, r) = c.join().expect("client thread");
        let (status, body) =
            r.unwrap_or_else(|e| panic!("client {i} got no answer: {e}\n{}", d.log()));
        if i % 2 == 0 {
            assert_eq!(status, 201, "create {i}: {body}");
            let v: serde_json::Value = serde_json::from_str(&body).expect("create json");
            created.push(v["Id"].as_str().expect("Id").to_string());
        } else {
            assert_eq!(status, 200, "list {i}: {body}");
        }
    }
    eprintln!("1000 clients answered in {:?}", start.elapsed());
    let (status, body) = http(&addr, "GET", "/containers/json?all=1", b"").expect("list");
    assert_eq!(status, 200);
    let listed: Vec<serde_json::Value> = serde_json::from_str(&body).expect("list json");
    let mut names: Vec<String> = listed
        .iter()
        .map(|c| c["Names"][0].as_str().unwrap_or("").to_string())
        .collect();
    names.sort();
    names.dedup();
    assert_eq!(listed.len(), 500, "containers listed");
    assert_eq!(names.len(), 500, "names unique");
    created.sort();
    created.dedup();
    assert_eq!(created.len(), 500, "ids unique");
    let after = rss_kib(pid);
    eprintln!("daemon RSS {before} KiB before, {after} KiB after");
    assert!(
        after < before + 256 * 1024,
        "daemon RSS grew from {before} KiB to {after} KiB"
    );
    // The connection slots were all given back: a fresh request is served at once.
    assert_eq!(http(&addr, "GET", "/_ping", b"").map(|r| r.0), Ok(200));
    let (status, body) = http(&addr, "POST", "/containers/prune", b"").expect("prune");
    assert_eq!(status, 200, "{body}");
}

#[test]
fn malformed_wrong_typed_and_oversized_requests_get_docker_errors() {
    if !can_run() {
        return;
    }
    let (d, img) = pulled_daemon("");
    let addr = d.tcp_addr.clone();
    let cases: Vec<(&str, &str, Vec<u8>, u16)> = vec![
        ("POST", "/containers/create", b"{not json".to_vec(), 400),
        (
            "POST",
            "/containers/create",
            br#"{"Image": 5}"#.to_vec(),
            400,
        ),
        (
            "POST",
            "/containers/create",
            format!(r#"{{"Image": "{img}", "Env": "A=1"}}"#).into_bytes(),
            400,
        ),
        (
            "POST",
            "/containers/create",
            format!(r#"{{"Image": "{img}", "HostConfig": {{"Memory": "lots"}}}}"#).into_bytes(),
            400,
        ),
        ("POST", "/containers/create", vec![b' '; 3 << 20], 400),
        ("GET", "/containers/json?filters=%7Bbad", Vec::new(), 400),
        ("GET", "/containers/nope/json", Vec::new(), 404),
        ("POST", "/v1.99/containers/create", b"{}".to_vec(), 400),
        ("GET", "/volumes", Vec::new(), 404),
        ("GET", "/events?since=yesterday", Vec::new(), 400),
    ];
    for (method, path, body, want) in cases {
        let (status, text) = http(&addr, method, path, &body)
            .unwrap_or_else(|e| panic!("{method} {path}: no answer: {e}\n{}", d.log()));
        assert_eq!(status, want, "{method} {path}: {text}");
        let v: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}"));
        assert!(
            v["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{text}"
        );
    }
    // Nothing was created by the bad requests; the daemon still serves.
    let (status, body) = http(&addr, "GET", "/containers/json?all=1", b"").expect("list");
    assert_eq!((status, body.trim()), (200, "[]"));
}

#[test]
fn a_slowloris_client_is_dropped_and_others_are_served_meanwhile() {
    if !can_run() {
        return;
    }
    let (d, _) = pulled_daemon("[networking]\nconnection_timeout_secs = 2\nmax_connections = 4\n");
    let addr = d.tcp_addr.clone();
    // Three clients that never finish their headers hold three of the four slots.
    let mut slow: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut s = TcpStream::connect(&addr).expect("connect");
            s.write_all(b"GET /_ping HTTP/1.1\r\nHost: x\r\n")
                .expect("partial");
            s
        })
        .collect();
    // The fourth slot still serves.
    assert_eq!(http(&addr, "GET", "/_ping", b"").map(|r| r.0), Ok(200));
    // After the header timeout each slow client is cut off.
    let start = Instant::now();
    for s in &mut slow {
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        let text = String::from_utf8_lossy(&buf);
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 408"),
            "slow client got {text:?}"
        );
    }
    let waited = start.elapsed();
    assert!(
        waited < Duration::from_secs(9),
        "slow clients were held {waited:?}"
    );
    // And their slots are free again: four clients at once are all served.
    let four: Vec<_> = (0..4)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || http(&addr, "GET", "/_ping", b"").map(|r| r.0))
        })
        .collect();
    for t in four {
        assert_eq!(t.join().expect("thread"), Ok(200));
    }
}

#[test]
fn a_client_vanishing_mid_attach_leaves_the_container_and_its_log_intact() {
    if !can_run() {
        return;
    }
    let (d, img) = pulled_daemon("");
    let id = d
        .hb_ok(&[
            "run",
            "-d",
            "--name",
            "chatty",
            &img,
            "sh",
            "-c",
            "i=0; while [ $i -lt 50 ]; do echo tick$i; i=$((i+1)); sleep 0.05; done",
        ])
        .trim()
        .to_string();
    let mut s = TcpStream::connect(&d.tcp_addr).expect("connect");
    s.write_all(
        format!("POST /containers/{id}/attach?stream=1&stdout=1&stderr=1 HTTP/1.1\r\nHost: x\r\nUpgrade: tcp\r\nConnection: Upgrade\r\n\r\n").as_bytes(),
    )
    .expect("attach");
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).expect("101");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 101"));
    drop(s);
    let code = d.hb_ok(&["wait", "chatty"]);
    assert_eq!(code.trim(), "0");
    let logs = d.hb_ok(&["logs", "chatty"]);
    assert_eq!(logs.lines().count(), 50, "{logs}");
    assert!(logs.ends_with("tick49\n"));
}

#[test]
fn a_container_flooding_its_log_is_capped_by_rotation() {
    if !can_run() {
        return;
    }
    let (d, img) = pulled_daemon("");
    // ~200 MB of 1 KiB lines.
    let line = "x".repeat(1023);
    let cmd = format!("yes {line} | head -c 209715200; echo last-line");
    let id = d
        .hb_ok(&["run", "-d", "--name", "flood", &img, "sh", "-c", &cmd])
        .trim()
        .to_string();
    let code = d.hb_ok(&["wait", "flood"]);
    assert_eq!(code.trim(), "0");
    let dir = d.data_dir().join("containers").join(&id);
    let total: u64 = std::fs::read_dir(&dir)
        .expect("container dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("-json.log"))
        .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .sum();
    // 10 MB x 3 files (plus one line of slack per file).
    assert!(
        total <= 3 * (10 << 20) + 3 * 4096,
        "logs take {total} bytes"
    );
    assert!(total > 20 << 20, "logs were not kept: {total} bytes");
    let tail = d.hb_ok(&["logs", "--tail", "1", "flood"]);
    assert_eq!(tail, "last-line\n");
}
