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
