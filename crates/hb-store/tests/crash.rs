//! Crash test: a child process writes, deletes and garbage-collects blobs
//! until it is killed with SIGKILL at an arbitrary moment; the parent then
//! reopens the store and requires every acknowledged blob to read back
//! exactly and `check` to find nothing wrong. Odd rounds defer compression,
//! with a background thread compressing meanwhile, so kills also land in the
//! middle of a deferred compression's copy or switch-over.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{noise, open, sha, text};
use hb_store::StoreOptions;

const DIR_ENV: &str = "HB_STORE_CRASH_DIR";
const SEED_ENV: &str = "HB_STORE_CRASH_SEED";

fn crash_options(defer_compression: bool) -> StoreOptions {
    StoreOptions {
        parallel_ops: 2,
        batch_size: 3,
        defer_compression,
        ..StoreOptions::default()
    }
}

/// The child's body; only does anything when run by `kill9_at_any_moment`.
#[test]
#[ignore = "child process of kill9_at_any_moment"]
fn crash_child() {
    let Ok(dir) = std::env::var(DIR_ENV) else {
        return;
    };
    let seed: u64 = std::env::var(SEED_ENV).unwrap().parse().unwrap();
    let defer = (seed / 1000) % 2 == 1;
    let store = open(std::path::Path::new(&dir), crash_options(defer));
    if defer {
        let store = store.clone();
        std::thread::spawn(move || loop {
            store.compress_deferred().unwrap();
            std::thread::sleep(std::time::Duration::from_millis(3));
        });
    }
    let shared = noise(400_000, 7);
    let mut acked: Vec<String> = Vec::new();
    for i in seed.. {
        let mut w = store.writer();
        let own = if i % 2 == 0 {
            noise(50_000 + (i as usize * 7919) % 900_000, i)
        } else {
            text(50_000 + (i as usize * 7919) % 900_000, i)
        };
        let mut stream = Vec::new();
        for (name, content) in [("own", &own), ("shared", &shared)] {
            let header = format!("hdr {name} {i}").into_bytes();
            w.write_inline(&header).unwrap();
            w.write_content(content).unwrap();
            w.end_content().unwrap();
            stream.extend_from_slice(&header);
            stream.extend_from_slice(content);
        }
        let info = w.finish(Some(&sha(&stream))).unwrap();
        println!("ACK {}", info.digest);
        acked.push(info.digest);
        if i % 4 == 3 {
            let victim = acked.remove(0);
            println!("DELETING {victim}");
            store.delete_blob(&victim).unwrap();
            store.gc().unwrap();
        }
    }
}

#[test]
fn kill9_at_any_moment() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acked: Vec<String> = Vec::new();
    let mut deleting: Vec<String> = Vec::new();
    for round in 0..5u64 {
        let mut child = Command::new(&exe)
            .args([
                "crash_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(DIR_ENV, dir.path())
            .env(SEED_ENV, (round * 1000).to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let wanted_acks = 2 + round as usize * 2;
        let mut got = 0;
        while got < wanted_acks {
            let line = match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(l) => l,
                Err(_) => {
                    let _ = child.kill();
                    let mut err = String::new();
                    child
                        .stderr
                        .take()
                        .unwrap()
                        .read_to_string(&mut err)
                        .unwrap();
                    panic!("child made no progress; stderr:\n{err}");
                }
            };
            if let Some(d) = line.strip_prefix("ACK ") {
                acked.push(d.to_string());
                got += 1;
            } else if let Some(d) = line.strip_prefix("DELETING ") {
                deleting.push(d.to_string());
            }
        }
        // Land the kill at a different point of the write cycle each round.
        std::thread::sleep(Duration::from_millis(round * 13 % 40));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        // Lines printed before the kill still count.
        for line in rx.try_iter() {
            if let Some(d) = line.strip_prefix("ACK ") {
                acked.push(d.to_string());
            } else if let Some(d) = line.strip_prefix("DELETING ") {
                deleting.push(d.to_string());
            }
        }

        let store = open(dir.path(), crash_options(false));
        for digest in acked.iter().filter(|d| !deleting.contains(d)) {
            let data = store
                .read_blob(digest)
                .unwrap_or_else(|e| panic!("round {round}: acknowledged {digest}: {e}"));
            assert_eq!(&sha(&data), digest, "round {round}");
        }
        let report = store.check(false).unwrap();
        assert!(report.is_clean(), "round {round}: {:?}", report.problems);
    }
    assert!(acked.len() >= 20);
    // Whatever the kills left raw is compressed by the next pass.
    let store = open(dir.path(), crash_options(true));
    store.compress_deferred().unwrap();
    assert_eq!(store.stats().unwrap().deferred_bytes, 0);
    for digest in acked.iter().filter(|d| !deleting.contains(d)) {
        assert_eq!(&sha(&store.read_blob(digest).unwrap()), digest);
    }
    assert!(store.check(false).unwrap().is_clean());
}
