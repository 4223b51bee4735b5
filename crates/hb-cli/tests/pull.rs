//! `hb pull` end to end: real registry, real daemon, real CLI.

mod common;

use common::*;
use std::time::Duration;

fn files(seed: u64, n: usize, size: usize) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .map(|i| {
            (
                format!("usr/lib/f{seed}-{i}.bin"),
                noise(seed * 1000 + i as u64, size),
            )
        })
        .collect()
}

fn tar_of(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let v: Vec<(&str, Vec<u8>)> = files.iter().map(|(p, d)| (p.as_str(), d.clone())).collect();
    layer_tar(&v)
}

fn image(layers: Vec<Vec<u8>>, compression: &'static str) -> TestImage {
    TestImage {
        layers,
        compression,
        architecture: "amd64",
    }
}

#[test]
fn pull_list_inspect_tag_rmi() {
    let reg = Registry::start();
    let pushed = push(
        &reg.addr,
        "hb/app:1",
        &image(
            vec![tar_of(&files(1, 20, 50_000)), tar_of(&files(2, 5, 10_000))],
            "gzip",
        ),
    );
    let d = Daemon::start("");
    let r = format!("{}/hb/app:1", reg.addr);
    let out = d.hb_ok(&["pull", &r]);
    assert!(out.contains("Downloaded newer image"), "{out}");
    assert!(out.contains(&pushed.manifest_digest), "{out}");
    let again = d.hb_ok(&["pull", &r]);
    assert!(again.contains("Image is up to date"), "{again}");
    assert!(again.contains("Already exists"), "{again}");

    let imgs = d.images_json();
    assert_eq!(imgs.as_array().unwrap().len(), 1);
    assert_eq!(imgs[0]["id"], pushed.config_digest.as_str());
    assert_eq!(imgs[0]["repo_tags"][0], r.as_str());
    assert!(imgs[0]["size"].as_u64().unwrap() > 1_000_000);

    let inspect: serde_json::Value =
        serde_json::from_str(&d.hb_ok(&["image", "inspect", &r])).unwrap();
    assert_eq!(inspect[0]["Id"], pushed.config_digest.as_str());
    assert_eq!(inspect[0]["RootFS"]["Layers"].as_array().unwrap().len(), 2);
    assert_eq!(inspect[0]["Config"]["Cmd"][0], "/bin/sh");
    assert_eq!(inspect[0]["Architecture"], "amd64");

    // By short id too.
    let short = &pushed.config_digest[7..19];
    d.hb_ok(&["image", "inspect", short]);

    d.hb_ok(&["tag", &r, "mine/app:v2"]);
    let tags = d.images_json()[0]["repo_tags"].clone();
    assert_eq!(tags.as_array().unwrap().len(), 2, "{tags}");
    let out = d.hb_ok(&["rmi", "mine/app:v2"]);
    assert!(out.contains("Untagged: mine/app:v2"), "{out}");
    assert_eq!(d.images_json().as_array().unwrap().len(), 1);
    let out = d.hb_ok(&["rmi", &r]);
    assert!(out.contains("Deleted: sha256:"), "{out}");
    assert_eq!(d.images_json().as_array().unwrap().len(), 0);
    let err = d.hb_err(&["rmi", &r]);
    assert!(
        err.contains("No such image") || err.contains("no such image"),
        "{err}"
    );
    // Everything is reclaimed: no blobs left.
    let df = d.df_json();
    assert_eq!(df["store"]["logical_bytes"], 0, "{df}");
}

#[test]
fn file_level_dedup_across_images_without_shared_layers() {
    let reg = Registry::start();
    let base = files(3, 40, 100_000); // 4 MB of incompressible files
    let extra = files(4, 4, 100_000);
    let mut squashed = base.clone();
    squashed.extend(extra.clone());
    push(&reg.addr, "hb/base", &image(vec![tar_of(&base)], "gzip"));
    // One layer, no layer in common with hb/base, 90% of its file bytes identical.
    push(
        &reg.addr,
        "hb/squash",
        &image(vec![tar_of(&squashed)], "gzip"),
    );
    let d = Daemon::start("");
    d.hb_ok(&["pull", &format!("{}/hb/base", reg.addr)]);
    // Compression runs after a pull; let it finish so pack sizes are final.
    d.hb_ok(&["system", "compress"]);
    let before = d.df_json()["store"]["pack_bytes"].as_u64().unwrap();
    d.hb_ok(&["pull", &format!("{}/hb/squash", reg.addr)]);
    d.hb_ok(&["system", "compress"]);
    let after = d.df_json();
    let grown = after["store"]["pack_bytes"].as_u64().unwrap() - before;
    // New content is 400 kB of noise; allow headers and chunk-boundary effects.
    assert!(
        grown < 700_000,
        "store grew by {grown} bytes for 400 kB of new file content: {after}"
    );
    assert!(
        after["store"]["dedup_ratio"].as_f64().unwrap() > 1.8,
        "{after}"
    );
    let imgs = after["images"].as_array().unwrap();
    assert!(
        imgs.iter()
            .all(|i| i["shared_bytes"].as_u64().unwrap() > 3_000_000),
        "{after}"
    );
}

/// Compressible file content, distinct per seed.
fn text_files(seed: u64, n: usize, size: usize) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let mut data = Vec::with_capacity(size + 64);
            let mut k = seed * 1000 + i as u64;
            while data.len() < size {
                k = k
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                data.extend_from_slice(
                    format!("line {} of file {i}: value={}\n", data.len(), k >> 52).as_bytes(),
                );
            }
            data.truncate(size);
            (format!("usr/share/doc/t{seed}-{i}.txt"), data)
        })
        .collect()
}

#[test]
fn pulls_store_raw_and_compress_in_the_background() {
    let reg = Registry::start();
    let content = text_files(9, 30, 200_000); // 6 MB of text
    push(&reg.addr, "hb/text", &image(vec![tar_of(&content)], "gzip"));
    let d = Daemon::start("");
    d.hb_ok(&["pull", &format!("{}/hb/text", reg.addr)]);
    // Nobody asks: the daemon's background thread compresses on its own.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let df = loop {
        let df = d.df_json();
        if df["store"]["deferred_bytes"].as_u64() == Some(0) {
            break df;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still waiting for compression after 60 s: {df}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        df["store"]["compression_ratio"].as_f64().unwrap() > 2.0,
        "{df}"
    );
    // Every chunk and blob reads back and hashes right after the move.
    let check: serde_json::Value = serde_json::from_str(&d.hb_ok(&["system", "check"])).unwrap();
    assert_eq!(
        check["store"]["problems"].as_array().map(Vec::len),
        Some(0),
        "{check}"
    );
    assert!(
        check["store"]["chunks_checked"].as_u64().unwrap() > 0,
        "{check}"
    );
    let out = d.hb_ok(&["system", "compress"]);
    assert!(out.contains("Compressed chunks: 0"), "{out}");
    let inspect = d.hb_ok(&["image", "inspect", &format!("{}/hb/text", reg.addr)]);
    assert!(inspect.contains("RootFS"), "{inspect}");
}

#[test]
fn formats_zstd_uncompressed_and_platform_index() {
    let reg = Registry::start();
    let d = Daemon::start("");
    push(
        &reg.addr,
        "hb/z",
        &image(vec![tar_of(&files(5, 3, 5000))], "zstd"),
    );
    push(
        &reg.addr,
        "hb/raw",
        &image(vec![tar_of(&files(6, 3, 5000))], "none"),
    );
    d.hb_ok(&["pull", &format!("{}/hb/z", reg.addr)]);
    d.hb_ok(&["pull", &format!("{}/hb/raw", reg.addr)]);

    let amd = push(
        &reg.addr,
        "hb/multi:amd",
        &image(vec![tar_of(&files(7, 2, 1000))], "gzip"),
    );
    let arm = push(
        &reg.addr,
        "hb/multi:arm",
        &TestImage {
            layers: vec![tar_of(&files(8, 2, 1000))],
            compression: "gzip",
            architecture: "arm64",
        },
    );
    let idx = push_index(
        &reg.addr,
        "hb/multi:latest",
        &[
            (amd.manifest_digest.clone(), amd.manifest.len(), "amd64"),
            (arm.manifest_digest.clone(), arm.manifest.len(), "arm64"),
        ],
    );
    let r = format!("{}/hb/multi", reg.addr);
    d.hb_ok(&["pull", &r]);
    let inspect: serde_json::Value =
        serde_json::from_str(&d.hb_ok(&["image", "inspect", &r])).unwrap();
    let host_is_amd = std::env::consts::ARCH == "x86_64";
    let want = if host_is_amd {
        &amd.config_digest
    } else {
        &arm.config_digest
    };
    assert_eq!(inspect[0]["Id"], want.as_str());
    assert!(
        inspect[0]["RepoDigests"][0]
            .as_str()
            .unwrap()
            .ends_with(&idx),
        "{inspect}"
    );
    d.hb_ok(&["pull", "--platform", "linux/arm64", &r]);
    let inspect: serde_json::Value =
        serde_json::from_str(&d.hb_ok(&["image", "inspect", &r])).unwrap();
    assert_eq!(inspect[0]["Id"], arm.config_digest.as_str());
    let err = d.hb_err(&["pull", "--platform", "linux/s390x", &r]);
    assert!(
        err.contains("no manifest for platform linux/s390x"),
        "{err}"
    );
    // By digest.
    d.hb_ok(&[
        "pull",
        &format!("{}/hb/multi@{}", reg.addr, amd.manifest_digest),
    ]);
}

#[test]
fn malformed_references_are_refused_and_the_daemon_lives() {
    let d = Daemon::start("");
    for bad in ["UPPER/case", "a b", "x@sha256:123", "", "alpine:", "-x"] {
        let err = d.hb_err(&["pull", "--", bad]);
        assert!(err.contains("invalid reference format"), "{bad}: {err}");
    }
    d.hb_ok(&["images"]);
}

#[test]
fn registry_errors_are_clear_and_retried_when_transient() {
    let reg = Registry::start();
    push(
        &reg.addr,
        "hb/f",
        &image(vec![tar_of(&files(9, 10, 100_000))], "gzip"),
    );
    let proxy = FaultProxy::start(&reg.addr, vec![]);
    let d = Daemon::start("[networking]\nconnection_timeout_secs = 2\n");
    let r = format!("{}/hb/f", proxy.addr);

    // 500 twice, then fine: retried, succeeds.
    proxy.set_rules(vec![Rule {
        path_contains: "/manifests/",
        fault: Fault::Status(500, "UNKNOWN"),
        times: 2,
    }]);
    d.hb_ok(&["pull", &r]);
    d.hb_ok(&["rmi", &r]);

    // 429 once on a blob, a truncated blob once: retried, succeeds.
    proxy.set_rules(vec![
        Rule {
            path_contains: "/blobs/",
            fault: Fault::Status(429, "TOOMANYREQUESTS"),
            times: 1,
        },
        Rule {
            path_contains: "/blobs/",
            fault: Fault::Truncate(1000),
            times: 1,
        },
    ]);
    d.hb_ok(&["pull", &r]);
    d.hb_ok(&["rmi", &r]);

    // 500 forever: bounded retries, a clear error.
    proxy.set_rules(vec![Rule {
        path_contains: "/manifests/",
        fault: Fault::Status(500, "UNKNOWN"),
        times: 100,
    }]);
    let err = d.hb_err(&["pull", &r]);
    assert!(err.contains("attempts"), "{err}");

    // 401: says to log in.
    proxy.set_rules(vec![Rule {
        path_contains: "/manifests/",
        fault: Fault::Status(401, "UNAUTHORIZED"),
        times: 100,
    }]);
    let err = d.hb_err(&["pull", &r]);
    assert!(err.contains("hb login"), "{err}");

    // 404 from the registry itself.
    proxy.set_rules(vec![]);
    let err = d.hb_err(&["pull", &format!("{}/hb/nope", proxy.addr)]);
    assert!(err.contains("not found"), "{err}");

    // A manifest over 4 MiB.
    proxy.set_rules(vec![Rule {
        path_contains: "/manifests/",
        fault: Fault::HugeBody(5 << 20),
        times: 100,
    }]);
    let err = d.hb_err(&["pull", &r]);
    assert!(err.contains("limit"), "{err}");

    // A corrupted blob: digest mismatch, nothing stored, store consistent.
    proxy.set_rules(vec![Rule {
        path_contains: "/blobs/",
        fault: Fault::Corrupt,
        times: 100,
    }]);
    let err = d.hb_err(&["pull", &r]);
    assert!(err.contains("digest mismatch"), "{err}");
    assert_eq!(d.images_json().as_array().unwrap().len(), 0);

    // Too slow: times out, bounded.
    proxy.set_rules(vec![Rule {
        path_contains: "/manifests/",
        fault: Fault::Delay(Duration::from_secs(4)),
        times: 100,
    }]);
    let start = std::time::Instant::now();
    let err = d.hb_err(&["pull", &r]);
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "took {:?}",
        start.elapsed()
    );
    assert!(err.contains("registry"), "{err}");

    let check = d.hb_ok(&["system", "check"]);
    assert!(check.contains("\"problems\": []"), "{check}");
    // And it still works once the registry behaves.
    proxy.set_rules(vec![]);
    d.hb_ok(&["pull", &r]);
}

#[test]
fn concurrent_pulls_sharing_a_layer_fetch_it_once() {
    let reg = Registry::start();
    let base = tar_of(&files(10, 30, 100_000));
    let a = push(
        &reg.addr,
        "hb/a",
        &image(vec![base.clone(), tar_of(&files(11, 1, 1000))], "gzip"),
    );
    push(
        &reg.addr,
        "hb/b",
        &image(vec![base, tar_of(&files(12, 1, 1000))], "gzip"),
    );
    // Count GETs of the shared blob.
    let shared = a.layer_digests[0].clone();
    let proxy = FaultProxy::start(&reg.addr, vec![]);
    let d = Daemon::start("");
    let ra = format!("{}/hb/a", proxy.addr);
    let rb = format!("{}/hb/b", proxy.addr);
    proxy.set_rules(vec![Rule {
        path_contains: Box::leak(shared.into_boxed_str()),
        fault: Fault::Count,
        times: 1000,
    }]);
    let (da, db) = (&d, &d);
    std::thread::scope(|s| {
        let h1 = s.spawn(move || da.hb_ok(&["pull", &ra]));
        let h2 = s.spawn(move || db.hb_ok(&["pull", &rb]));
        h1.join().unwrap();
        h2.join().unwrap();
    });
    assert_eq!(
        proxy.hits.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "shared layer fetched more than once"
    );
    assert_eq!(d.images_json().as_array().unwrap().len(), 2);
}

#[test]
fn kill_9_mid_pull_loses_nothing_acknowledged() {
    let reg = Registry::start();
    push(
        &reg.addr,
        "hb/small",
        &image(vec![tar_of(&files(13, 5, 10_000))], "gzip"),
    );
    let big: Vec<Vec<u8>> = (0..4)
        .map(|i| tar_of(&files(20 + i, 20, 400_000)))
        .collect();
    push(&reg.addr, "hb/big", &image(big, "gzip"));
    let proxy = FaultProxy::start(&reg.addr, vec![]);
    let mut d = Daemon::start("");
    d.hb_ok(&["pull", &format!("{}/hb/small", reg.addr)]);
    let sock = d.socket.clone();
    let r = format!("{}/hb/big", proxy.addr);
    let mut child = std::process::Command::new(bin("hb"))
        .args(["-H", &format!("unix://{}", sock.display()), "pull", &r])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill as soon as some layer data is being stored.
    let data = d.data_dir();
    let start = std::time::Instant::now();
    loop {
        let packed: u64 = all_files(&data.join("store"))
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "pack"))
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        if packed > 2_000_000 || start.elapsed() > Duration::from_secs(20) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    d.kill9();
    let _ = child.kill();
    let _ = child.wait();
    d.spawn();
    let check = d.hb_ok(&["system", "check"]);
    assert!(check.contains("\"problems\": []"), "{check}");
    // The acknowledged image is intact, the interrupted one finishes on the next pull.
    let imgs = d.images_json();
    assert!(
        imgs.as_array().unwrap().iter().any(|i| i["repo_tags"][0]
            .as_str()
            .unwrap()
            .ends_with("hb/small:latest")),
        "{imgs}"
    );
    d.hb_ok(&["pull", &r]);
    assert_eq!(d.images_json().as_array().unwrap().len(), 2);
    let check = d.hb_ok(&["system", "check"]);
    assert!(check.contains("\"problems\": []"), "{check}");
}

#[test]
fn hostile_layer_tars_are_stored_never_written_outside() {
    let reg = Registry::start();
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, kind: tar::EntryType, link: Option<&str>, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        // Write names raw: the tar crate refuses `..` through the safe setters.
        let bytes = name.as_bytes();
        h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
        if let Some(l) = link {
            h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
        }
        h.set_cksum();
        b.append(&h, data).unwrap();
    };
    add("../../escape.txt", tar::EntryType::Regular, None, b"pwned");
    add("/abs/escape.txt", tar::EntryType::Regular, None, b"pwned");
    add("link", tar::EntryType::Symlink, Some("/etc/passwd"), b"");
    add("up", tar::EntryType::Symlink, Some("../../../../"), b"");
    add("hard", tar::EntryType::Link, Some("/etc/shadow"), b"");
    add("dev/sda", tar::EntryType::Block, None, b"");
    add("up/escape2.txt", tar::EntryType::Regular, None, b"pwned");
    let evil = b.into_inner().unwrap();
    // A tar bomb: 1 GiB of zeros compresses to about 1 MiB and must cost almost nothing.
    let mut bomb = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(256 << 20);
    h.set_cksum();
    bomb.append_data(&mut h, "zeros", std::io::repeat(0).take_compat(256 << 20))
        .unwrap();
    let bomb = bomb.into_inner().unwrap();
    push(&reg.addr, "hb/evil", &image(vec![evil, bomb], "gzip"));
    let d = Daemon::start("");
    let before: Vec<_> = all_files(d.dir.path().parent().unwrap())
        .into_iter()
        .filter(|p| p.ends_with("escape.txt"))
        .collect();
    d.hb_ok(&["pull", &format!("{}/hb/evil", reg.addr)]);
    let after: Vec<_> = all_files(d.dir.path().parent().unwrap())
        .into_iter()
        .filter(|p| p.ends_with("escape.txt") || p.ends_with("escape2.txt"))
        .collect();
    assert_eq!(
        before.len(),
        after.len(),
        "something was written outside: {after:?}"
    );
    assert!(!std::path::Path::new("/abs/escape.txt").exists());
    let df = d.df_json();
    assert!(
        df["store"]["pack_bytes"].as_u64().unwrap() < 8 << 20,
        "a zero bomb should dedup: {df}"
    );
}

trait TakeCompat: std::io::Read + Sized {
    fn take_compat(self, n: u64) -> std::io::Take<Self> {
        std::io::Read::take(self, n)
    }
}
impl<R: std::io::Read> TakeCompat for R {}

#[test]
fn login_with_basic_and_bearer_auth() {
    let reg = Registry::start();
    push(
        &reg.addr,
        "hb/private",
        &image(vec![tar_of(&files(30, 2, 1000))], "gzip"),
    );
    for scheme in [
        ProxyAuth::Basic("alice", "s3cret"),
        ProxyAuth::Bearer("alice", "s3cret"),
    ] {
        let proxy = FaultProxy::start(&reg.addr, vec![]);
        proxy.set_auth(Some(scheme.clone()));
        let d = Daemon::start("");
        let r = format!("{}/hb/private", proxy.addr);
        let err = d.hb_err(&["pull", &r]);
        assert!(err.contains("hb login"), "{scheme:?}: {err}");
        let err = d.hb_err(&["login", &proxy.addr, "-u", "alice", "-p", "wrong"]);
        assert!(err.contains("authentication"), "{scheme:?}: {err}");
        let out = d.hb_ok(&["login", &proxy.addr, "-u", "alice", "-p", "s3cret"]);
        assert!(out.contains("Login Succeeded"), "{out}");
        let auth_file = d.data_dir().join("auth.json");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&auth_file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        d.hb_ok(&["pull", &r]);
        d.hb_ok(&["logout", &proxy.addr]);
        d.hb_ok(&["rmi", &r]);
        let err = d.hb_err(&["pull", &r]);
        assert!(err.contains("hb login"), "{scheme:?} after logout: {err}");
    }
}

#[test]
fn rmi_during_a_pull_never_deletes_the_pulls_blobs() {
    let reg = Registry::start();
    // Layer 1 arrives at once, layer 2 slowly: a prune in between must not delete layer 1.
    let a = push(
        &reg.addr,
        "hb/slow",
        &image(
            vec![
                tar_of(&files(40, 4, 50_000)),
                tar_of(&files(41, 8, 100_000)),
            ],
            "gzip",
        ),
    );
    push(
        &reg.addr,
        "hb/other",
        &image(vec![tar_of(&files(42, 2, 10_000))], "gzip"),
    );
    let proxy = FaultProxy::start(&reg.addr, vec![]);
    let slow_layer: &'static str = Box::leak(a.layer_digests[1].clone().into_boxed_str());
    proxy.set_rules(vec![Rule {
        path_contains: slow_layer,
        fault: Fault::Throttle(Duration::from_millis(40)),
        times: 100,
    }]);
    let d = Daemon::start("");
    d.hb_ok(&["pull", &format!("{}/hb/other", reg.addr)]);
    let slow = format!("{}/hb/slow", proxy.addr);
    std::thread::scope(|s| {
        let puller = s.spawn(|| d.hb_ok(&["pull", &slow]));
        // Wait until layer 1 is stored (its blob is in the store but no image names it yet).
        let start = std::time::Instant::now();
        while d.df_json()["store"]["blobs"].as_u64().unwrap_or(0) < 4
            && start.elapsed() < Duration::from_secs(20)
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        d.hb_ok(&["rmi", &format!("{}/hb/other", reg.addr)]);
        puller.join().unwrap();
    });
    let saved = d.dir.path().join("slow.tar");
    d.hb_ok(&["save", "-o", saved.to_str().unwrap(), &slow]);
    let check = d.hb_ok(&["system", "check"]);
    assert!(
        check.contains("\"problems\": []") && check.contains("\"broken_images\": []"),
        "{check}"
    );
}
