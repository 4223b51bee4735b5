//! A busybox image for container tests: a static /bin/busybox with its applets, pushed once
//! per test binary to a real registry.

use std::path::Path;
use std::sync::OnceLock;

use super::{push, Daemon, Registry, TestImage};

/// Skips (with a reason) when the host cannot run containers.
pub fn can_run() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping: containers need root");
        return false;
    }
    if !Path::new("/bin/busybox").exists() {
        panic!(
            "/bin/busybox (static) is required: apt-get install busybox-static (.ci/run does it)"
        );
    }
    true
}

pub const APPLETS: &[&str] = &[
    "sh", "true", "false", "echo", "cat", "id", "sleep", "ls", "hostname", "ps", "mount", "env",
    "pwd", "touch", "wc", "head", "dd", "yes", "seq", "kill", "ip", "httpd", "tr", "grep", "sync",
    "readlink", "stat", "mkdir", "rm", "umount", "insmod", "nproc", "ping", "wget", "nc", "tail",
    "tty", "stty",
];

/// A busybox rootfs layer: /bin/busybox, applet symlinks, /etc/passwd and /etc/group with a
/// user `app` (1000), and the usual empty dirs.
pub fn busybox_layer() -> Vec<u8> {
    let busybox = std::fs::read("/bin/busybox").expect("read /bin/busybox");
    let mut b = tar::Builder::new(Vec::new());
    let dir = |b: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(mode);
        h.set_size(0);
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h.set_cksum();
        b.append_data(&mut h, path, std::io::empty()).expect("dir");
    };
    for d in [
        "bin", "etc", "tmp", "proc", "sys", "dev", "root", "home", "home/app", "mnt", "www",
    ] {
        dir(&mut b, d, if d == "tmp" { 0o1777 } else { 0o755 });
    }
    let file = |b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8], mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h.set_cksum();
        b.append_data(&mut h, path, data).expect("file");
    };
    file(&mut b, "bin/busybox", &busybox, 0o755);
    file(
        &mut b,
        "etc/passwd",
        b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n",
        0o644,
    );
    file(&mut b, "etc/group", b"root:x:0:\napp:x:1000:\n", 0o644);
    file(&mut b, "www/index.html", b"hello from hb\n", 0o644);
    file(&mut b, "bin/not-exec", b"#!/bin/sh\necho no\n", 0o644);
    for a in APPLETS {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        b.append_link(&mut h, format!("bin/{a}"), "busybox")
            .expect("symlink");
    }
    b.into_inner().expect("tar")
}

/// One registry with the busybox image for the whole test binary.
pub fn image() -> &'static (Registry, String) {
    static IMAGE: OnceLock<(Registry, String)> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let registry = Registry::start();
        push(
            &registry.addr,
            "test/bb:latest",
            &TestImage {
                layers: vec![busybox_layer()],
                compression: "gzip",
                architecture: "amd64",
            },
        );
        let name = format!("{}/test/bb", registry.addr);
        (registry, name)
    })
}

/// A daemon that trusts the busybox image's registry (plain HTTP), with `extra` config lines
/// after that `[daemon]` key; and the image's reference.
pub fn daemon_for_image(extra: &str) -> (Daemon, &'static str) {
    let (registry, img) = image();
    let d = Daemon::start(&format!(
        "[daemon]\ninsecure_registries = [\"{}\"]\n{extra}",
        registry.addr
    ));
    (d, img.as_str())
}
