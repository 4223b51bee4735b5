//! The daemon's config handling and the CLI's behaviour when no daemon runs.

mod common;

use common::*;

#[test]
fn invalid_configs_are_refused_with_file_line_key_and_range() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[cache]\nsize_mb = 99999\n", "cache.size_mb"),
        ("[cache]\nsize_mb = 1024\nsize_mb = 2048\n", "duplicate"),
        ("[cache]\nbogus = 1\n", "bogus"),
        ("[deduplication]\nhash_algorithm = \"md5\"\n", "md5"),
        ("[cache\n", "hyperbox.toml"),
    ];
    for (text, needle) in cases {
        let p = dir.path().join("hyperbox.toml");
        std::fs::write(&p, text).unwrap();
        let out = std::process::Command::new(bin("hyperboxd"))
            .args(["--config", p.to_str().unwrap(), "--validate-config"])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{text} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{text}: {err}");
        assert!(err.contains("hyperbox.toml"), "{text}: {err}");
    }
    let p = dir.path().join("ok.toml");
    std::fs::write(
        &p,
        "[cache]\nsize_mb = 2048\n[deduplication]\nhash_algorithm = \"blake3\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(bin("hyperboxd"))
        .args(["--config", p.to_str().unwrap(), "--print-config"])
        .env("HYPERBOX_CACHE_COMPRESSION_LEVEL", "9")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("size_mb = 2048"), "{text}");
    assert!(text.contains("compression_level = 9"), "{text}");
    assert!(text.contains("blake3"), "{text}");
    let out = std::process::Command::new(bin("hyperboxd"))
        .args(["--validate-config"])
        .env("HYPERBOX_CACHE_SIZE_MB", "5")
        .env("HYPERBOX_CONFIG", p.to_str().unwrap())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("HYPERBOX_CACHE_SIZE_MB"));
}

#[test]
fn hb_says_how_to_start_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(bin("hb"))
        .args([
            "-H",
            &format!("unix://{}/none.sock", dir.path().display()),
            "images",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot connect to the HyperBox daemon") && err.contains("hyperboxd"),
        "{err}"
    );
}

#[test]
fn socket_is_0660_and_a_second_daemon_refuses_to_steal_it() {
    use std::os::unix::fs::PermissionsExt;
    let d = Daemon::start("");
    let mode = std::fs::metadata(&d.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    let out = std::process::Command::new(bin("hyperboxd"))
        .args(["--config", d.config_path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already listening"));
    d.hb_ok(&["images"]);
    // Unknown endpoints answer Docker's error JSON.
    let v = d.hb_ok(&["version"]);
    assert!(v.contains("API version"), "{v}");
}

#[test]
fn disk_full_mid_pull_fails_cleanly() {
    // Needs a small filesystem: a tmpfs, which only root can mount.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: disk_full_mid_pull_fails_cleanly needs root to mount a tmpfs");
        return;
    }
    let reg = Registry::start();
    let big = layer_tar(&[("big", noise(5, 24 << 20))]);
    let small = layer_tar(&[("small", noise(6, 100_000))]);
    let t = |l: Vec<u8>| TestImage {
        layers: vec![l],
        compression: "gzip",
        architecture: "amd64",
    };
    push(&reg.addr, "hb/big", &t(big));
    push(&reg.addr, "hb/small", &t(small));
    let mnt = tempfile::tempdir().unwrap();
    let st = std::process::Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=12m",
            "tmpfs",
            mnt.path().to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(st.success(), "mount tmpfs");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _u = Unmount(mnt.path().to_path_buf());
    let mut d = Daemon::start("");
    d.kill9();
    d.data_dir = mnt.path().join("data");
    d.spawn();
    let err = d.hb_err(&["pull", &format!("{}/hb/big", reg.addr)]);
    assert!(err.to_lowercase().contains("space"), "{err}");
    let check = d.hb_ok(&["system", "check"]);
    assert!(check.contains("\"problems\": []"), "{check}");
    d.hb_ok(&["system", "prune"]);
    d.hb_ok(&["pull", &format!("{}/hb/small", reg.addr)]);
    assert_eq!(d.images_json().as_array().unwrap().len(), 1);
}

/// systemd's side of `deploy/systemd`: sockets passed with LISTEN_FDS (by
/// `systemd-socket-activate`, systemd's own tool), READY/RELOADING/STOPPING on NOTIFY_SOCKET,
/// SIGHUP reloads, SIGTERM stops cleanly.
#[test]
fn socket_activation_and_sd_notify_follow_systemd() {
    use std::io::{Read, Write};
    use std::os::unix::net::{UnixDatagram, UnixStream};
    use std::time::{Duration, Instant};
    let tool = std::path::Path::new("/usr/bin/systemd-socket-activate");
    if !tool.exists() {
        eprintln!("skipping: systemd-socket-activate missing (apt-get install systemd)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    let port = free_port();
    let config = dir.path().join("hyperbox.toml");
    let tag = std::process::id();
    std::fs::write(
        &config,
        format!(
            "[daemon]\ndata_dir = \"{}\"\nsocket = \"{}\"\nlisten_addr = \"127.0.0.1:{port}\"\ncgroup_parent = \"hbsa-{tag}\"\n[networking]\nbridge_name = \"hbsa{}\"\nbridge_subnet = \"10.251.{}.0/24\"\n[monitoring]\nmetrics_addr = \"127.0.0.1:{}\"\n",
            dir.path().join("data").display(),
            sock.display(),
            tag % 10000,
            tag % 250,
            free_port()
        ),
    )
    .unwrap();
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut child = std::process::Command::new(tool)
        .arg(format!("--listen={}", sock.display()))
        .arg(format!("--listen=127.0.0.1:{port}"))
        .arg(format!("--setenv=NOTIFY_SOCKET={}", notify_path.display()))
        .arg("--setenv=HYPERBOX_LOG=info")
        .arg(bin("hyperboxd"))
        .arg("--config")
        .arg(&config)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let next = || {
        let mut buf = [0u8; 512];
        let n = notify
            .recv(&mut buf)
            .expect("a notification from hyperboxd");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    // The tool starts the daemon on the first connection; that connection is then served
    // by the daemon from the passed socket.
    let start = Instant::now();
    let mut api = loop {
        if let Ok(s) = UnixStream::connect(&sock) {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "socket never listened"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(next().trim(), "READY=1");
    api.write_all(b"GET /_ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    api.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // The TCP socket came from the tool too.
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.write_all(b"GET /_ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let pid = child.id() as i32;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    assert!(next().starts_with("RELOADING=1"));
    assert_eq!(next().trim(), "READY=1");
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(next().trim(), "STOPPING=1");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    // The monitor (and its containers) outlive the daemon by design; stop it here.
    if let Ok(p) = std::fs::read_to_string(dir.path().join("monitor.pid")) {
        if let Ok(p) = p.trim().parse::<i32>() {
            // SAFETY: the pid comes from the monitor's own pid file.
            unsafe { libc::kill(p, libc::SIGTERM) };
        }
    }
}
