//! Spawner tests against the real kernel (root): a busybox rootfs, real overlay, namespaces,
//! cgroups.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;

use super::*;

/// Stdin, stdout and stderr all on /dev/null.
fn null_stdio() -> Stdio {
    let null = || OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
    Stdio::Fds {
        stdin: null(),
        stdout: null(),
        stderr: null(),
    }
}

fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let ok = unsafe { libc::geteuid() } == 0 && Path::new("/bin/busybox").exists();
    if !ok {
        eprintln!("skipping: needs root and /bin/busybox");
    }
    ok
}

struct Bed {
    dir: tempfile::TempDir,
    spawner: Spawner,
    /// This test's own cgroup parent (tests run in parallel; each removes its own at the end).
    parent: String,
}

impl Drop for Bed {
    fn drop(&mut self) {
        if let Ok(cg) = Cgroup::open(&self.parent, "x") {
            for (_, d) in cg.dirs() {
                if let Some(p) = d.parent() {
                    let _ = std::fs::remove_dir(p);
                }
            }
        }
    }
}

fn bed() -> Bed {
    let dir = tempfile::tempdir().unwrap();
    let lower = dir.path().join("layers/base");
    for d in ["bin", "etc", "tmp", "proc", "sys", "dev", "home/app"] {
        std::fs::create_dir_all(lower.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", lower.join("bin/busybox")).unwrap();
    for a in [
        "sh", "true", "cat", "id", "hostname", "ls", "mount", "echo", "sleep", "dd", "grep", "wc",
        "touch", "seq", "ps", "pwd", "readlink", "kill", "tty", "stty", "stat",
    ] {
        std::os::unix::fs::symlink("busybox", lower.join("bin").join(a)).unwrap();
    }
    std::fs::write(
        lower.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(lower.join("etc/group"), "root:x:0:\napp:x:1000:\n").unwrap();
    std::fs::write(lower.join("bin/noexec"), "x").unwrap();
    std::fs::set_permissions(
        lower.join("bin/noexec"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    Bed {
        dir,
        spawner: Spawner::new().unwrap(),
        parent: format!("hb-spawn-test-{}", id()),
    }
}

fn id() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "t{}x{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

impl Bed {
    fn spec(&self, args: &[&str]) -> ContainerSpec {
        let id = id();
        let c = self.dir.path().join("c").join(&id);
        for d in ["upper", "work", "merged"] {
            std::fs::create_dir_all(c.join(d)).unwrap();
        }
        ContainerSpec {
            id: id.clone(),
            rootfs: RootfsSpec {
                lower_dirs: vec![self.dir.path().join("layers/base")],
                upper_dir: c.join("upper"),
                work_dir: c.join("work"),
                merged_dir: c.join("merged"),
                volatile: false,
            },
            process: ProcessSpec {
                args: args.iter().map(|s| s.to_string()).collect(),
                env: vec!["PATH=/bin".into()],
                cwd: "/".into(),
                user: String::new(),
                tty: false,
            },
            hostname: "box".into(),
            mounts: vec![],
            network: NetworkMode::None,
            capabilities: DEFAULT_CAPABILITIES.iter().map(|s| s.to_string()).collect(),
            privileged: false,
            seccomp: true,
            no_new_privileges: true,
            resources: Resources::default(),
            cgroup_parent: self.parent.clone(),
            readonly_rootfs: false,
        }
    }

    /// Runs to completion: (exit code, stdout, stderr, cgroup before removal).
    fn run(&self, spec: &ContainerSpec) -> Result<(i32, String, String, bool), SpawnError> {
        let (out_r, out_w) = pipe().unwrap();
        let (err_r, err_w) = pipe().unwrap();
        let stdin = OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
        let s = self.spawner.spawn(
            spec,
            Stdio::Fds {
                stdin,
                stdout: out_w,
                stderr: err_w,
            },
        )?;
        let mut out = String::new();
        let mut err = String::new();
        std::fs::File::from(out_r).read_to_string(&mut out).unwrap();
        std::fs::File::from(err_r).read_to_string(&mut err).unwrap();
        let mut status = 0;
        // SAFETY: reaping our child.
        unsafe { libc::waitpid(s.pid, &mut status, 0) };
        let code = if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            128 + libc::WTERMSIG(status)
        };
        let oom = s.cgroup.oom_killed();
        s.cgroup.remove().unwrap();
        assert!(!s.cgroup.exists(), "cgroup left behind");
        let merged = spec.rootfs.merged_dir.to_string_lossy().into_owned();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mounts.contains(&merged), "a mount leaked to the host");
        Ok((code, out, err, oom))
    }
}

#[test]
fn runs_isolated_with_docker_defaults() {
    if !root() {
        return;
    }
    let b = bed();
    // A masked file this kernel has (not every kernel has /proc/kcore).
    let masked = MASKED
        .iter()
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file()))
        .expect("a maskable file");
    let script = "echo $$; hostname; ls /proc | grep -c '^[0-9]'; grep CapEff /proc/self/status; grep Seccomp: /proc/self/status; mount -t tmpfs x /tmp 2>/dev/null && echo MOUNTED; echo 1 > /proc/sys/kernel/domainname 2>/dev/null && echo WROTE; wc -c < MASKED; ls /sys/class/net; echo hi > /tmp/f; wc -c < /proc/interrupts; exit 5".replace("MASKED", masked);
    let spec = b.spec(&["sh", "-c", &script]);
    let (code, out, err, _) = b.run(&spec).unwrap();
    assert_eq!(code, 5, "{out} {err}");
    let l: Vec<&str> = out.lines().collect();
    assert_eq!(l[0], "1");
    assert_eq!(l[1], "box");
    assert!(l[2].trim().parse::<u32>().unwrap() <= 3, "{out}");
    assert!(l[3].ends_with("00000000a80425fb"), "{out}");
    assert!(l[4].ends_with('2'), "{out}");
    assert!(!out.contains("MOUNTED") && !out.contains("WROTE"), "{out}");
    assert_eq!(l[5].trim(), "0");
    assert_eq!(l[6], "lo");
    assert_eq!(l[7].trim(), "0", "/proc/interrupts not masked");
    // The write went to the upper dir; the lower dir is untouched.
    assert!(spec.rootfs.upper_dir.join("tmp/f").exists());
    assert!(!b.dir.path().join("layers/base/tmp/f").exists());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&spec.id), "a mount leaked to the host");
}

#[test]
fn failures_map_to_docker_exit_codes() {
    if !root() {
        return;
    }
    let b = bed();
    let e = b.run(&b.spec(&["nope"])).unwrap_err();
    assert_eq!(e.exit_code(), 127, "{e}");
    assert!(e.to_string().contains("executable file not found"), "{e}");
    let e = b.run(&b.spec(&["/bin/nope"])).unwrap_err();
    assert_eq!(e.exit_code(), 127, "{e}");
    let e = b.run(&b.spec(&["/bin/noexec"])).unwrap_err();
    assert_eq!(e.exit_code(), 126, "{e}");
    let mut s = b.spec(&["true"]);
    s.process.user = "ghost".into();
    assert!(b
        .run(&s)
        .unwrap_err()
        .to_string()
        .contains("unable to find user ghost"));
    let mut s = b.spec(&["true"]);
    s.mounts.push(MountSpec::Bind {
        source: "/no/such/dir".into(),
        destination: "/x".into(),
        readonly: false,
    });
    assert!(b
        .run(&s)
        .unwrap_err()
        .to_string()
        .contains("does not exist"));
    let mut s = b.spec(&["true"]);
    s.resources.memory_bytes = Some(1024);
    assert!(b
        .run(&s)
        .unwrap_err()
        .to_string()
        .contains("Minimum memory"));
    let mut s = b.spec(&["true"]);
    s.resources.nano_cpus = Some(10_000 * 1_000_000_000);
    let e = b.run(&s).unwrap_err();
    assert!(e.to_string().contains("range of CPUs"), "{e}");
    assert!(!Cgroup::open(&b.parent, &s.id).unwrap().exists());
}

#[test]
fn user_cwd_mounts_and_readonly() {
    if !root() {
        return;
    }
    let b = bed();
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("h"), "from-host").unwrap();
    let mut s = b.spec(&["sh", "-c", "id -u; id -g; pwd; cat /data/h; echo; touch /ro/x 2>/dev/null && echo RW; touch /t/x && echo TMPFS; grep CapEff /proc/self/status"]);
    s.process.user = "app".into();
    s.process.cwd = "/work/dir".into();
    s.mounts.push(MountSpec::Bind {
        source: host.path().into(),
        destination: "/data".into(),
        readonly: false,
    });
    s.mounts.push(MountSpec::Bind {
        source: host.path().into(),
        destination: "/ro".into(),
        readonly: true,
    });
    s.mounts.push(MountSpec::Tmpfs {
        destination: "/t".into(),
        options: "mode=1777".into(),
    });
    let (code, out, err, _) = b.run(&s).unwrap();
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "1000\n1000\n/work/dir\nfrom-host\nTMPFS\nCapEff:\t0000000000000000\n"
    );
    // Numeric user and group, not in the image's files.
    let mut s = b.spec(&["sh", "-c", "id -u; id -g"]);
    s.process.user = "1000:1000".into();
    assert_eq!(b.run(&s).unwrap().1, "1000\n1000\n");
    s.process.user = "4242:77".into();
    assert_eq!(b.run(&s).unwrap().1, "4242\n77\n");
    // A symlink planted in the image cannot redirect a mount to the host.
    let mut s = b.spec(&["true"]);
    std::os::unix::fs::symlink("/etc", s.rootfs.upper_dir.join("evil")).unwrap();
    s.mounts.push(MountSpec::Tmpfs {
        destination: "/evil/x".into(),
        options: String::new(),
    });
    assert!(b.run(&s).is_err());
    let mut s = b.spec(&["sh", "-c", "touch /x 2>/dev/null && echo RW; echo done"]);
    s.readonly_rootfs = true;
    assert_eq!(b.run(&s).unwrap().1, "done\n");
}

#[test]
fn limits_oom_and_pids() {
    if !root() {
        return;
    }
    let b = bed();
    let mut s = b.spec(&["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"]);
    s.resources.memory_bytes = Some(16 << 20);
    let (code, _, _, oom) = b.run(&s).unwrap();
    assert_eq!(code, 137);
    assert!(oom, "not reported as OOM-killed");
    // Twelve background sleeps: all start without a limit (the control), not with 6.
    let script = "for i in 1 2 3 4 5 6 7 8 9 10 11 12; do sleep 1 & done; n=0; for p in /proc/[0-9]*; do n=$((n+1)); done; echo $n";
    let (code, out, _, _) = b.run(&b.spec(&["sh", "-c", script])).unwrap();
    assert_eq!((code, out.trim()), (0, "13"));
    let mut s = b.spec(&["sh", "-c", script]);
    s.resources.pids_limit = Some(6);
    let (code, out, err, _) = b.run(&s).unwrap();
    assert!(
        code != 0 && err.contains("fork"),
        "limit not enforced: {code} {out} {err}"
    );
}

#[test]
fn exec_joins_a_running_container() {
    if !root() {
        return;
    }
    let b = bed();
    let spec = b.spec(&["sleep", "30"]);
    let null = || OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
    let (o_r, o_w) = pipe().unwrap();
    let running = b
        .spawner
        .spawn(
            &spec,
            Stdio::Fds {
                stdin: null(),
                stdout: o_w.try_clone().unwrap(),
                stderr: o_w,
            },
        )
        .unwrap();
    drop(o_r);
    let (r, w) = pipe().unwrap();
    let p = ProcessSpec {
        args: vec![
            "sh".into(),
            "-c".into(),
            "hostname; ls /proc | grep -c '^[0-9]'; pwd; exit 7".into(),
        ],
        env: vec![],
        cwd: "/tmp".into(),
        user: String::new(),
        tty: false,
    };
    let pid = b
        .spawner
        .exec(
            &running,
            &spec,
            &p,
            Stdio::Fds {
                stdin: null(),
                stdout: w.try_clone().unwrap(),
                stderr: w,
            },
        )
        .unwrap()
        .pid;
    let mut out = String::new();
    std::fs::File::from(r).read_to_string(&mut out).unwrap();
    let mut status = 0;
    // SAFETY: the exec'd process is our child (CLONE_PARENT): reap it for its exit code.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 7);
    assert_eq!(out.lines().next(), Some("box"), "{out}");
    let n: u32 = out.lines().nth(1).unwrap().trim().parse().unwrap();
    assert!(
        (2..=4).contains(&n),
        "sees its container's processes only: {out}"
    );
    assert_eq!(out.lines().nth(2), Some("/tmp"));
    let e = b
        .spawner
        .exec(
            &running,
            &spec,
            &ProcessSpec {
                args: vec!["nope".into()],
                ..p
            },
            null_stdio(),
        )
        .unwrap_err();
    assert_eq!(e.exit_code(), 127);
    running.cgroup.kill_all(libc::SIGKILL).unwrap();
    // SAFETY: reaping our child.
    unsafe { libc::waitpid(running.pid, &mut status, 0) };
    running.cgroup.remove().unwrap();
}

/// Not a test of its own: the entry point of the probe that `syscalls_blocked_inside` runs
/// *inside* containers (this test binary, bound in with the host's /usr for its libraries).
/// Without `HB_SPAWN_PROBE` it does nothing.
#[test]
fn probe_entry() {
    if std::env::var_os("HB_SPAWN_PROBE").is_none() {
        return;
    }
    let errno = |rc: libc::c_long| {
        if rc < 0 {
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
        } else {
            0
        }
    };
    let host_pid: i32 = std::env::var("HB_HOST_PID").unwrap().parse().unwrap();
    // SAFETY: probing system calls with harmless arguments (null module image, no keyring
    // creation, a namespace for this short-lived process only, signal 0).
    let results = unsafe {
        [
            (
                "init_module",
                errno(libc::syscall(
                    libc::SYS_init_module,
                    std::ptr::null::<u8>(),
                    0usize,
                    c"".as_ptr(),
                )),
            ),
            (
                "keyctl",
                errno(libc::syscall(libc::SYS_keyctl, 0, -3i32, 0)),
            ),
            ("unshare", errno(libc::unshare(libc::CLONE_NEWNS) as _)),
            (
                "mount",
                errno(libc::mount(
                    c"tmpfs".as_ptr(),
                    c"/tmp".as_ptr(),
                    c"tmpfs".as_ptr(),
                    0,
                    std::ptr::null(),
                ) as _),
            ),
            ("kill_host", errno(libc::kill(host_pid, 0) as _)),
            ("kill_init", errno(libc::kill(1, 0) as _)),
        ]
    };
    for (name, e) in results {
        println!("PROBE {name} {e}");
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    for l in status.lines().filter(|l| l.starts_with("Cap")) {
        println!("PROBE {}", l.replace(":\t", " "));
    }
}

#[test]
fn syscalls_blocked_inside_and_privileged_gets_all() {
    if !root() {
        return;
    }
    let b = bed();
    let lower = b.dir.path().join("layers/base");
    std::os::unix::fs::symlink("usr/lib", lower.join("lib")).unwrap();
    std::os::unix::fs::symlink("usr/lib64", lower.join("lib64")).unwrap();
    let probe = |privileged: bool| -> std::collections::HashMap<String, String> {
        let mut s = b.spec(&[
            "/probe",
            "--exact",
            "tests::probe_entry",
            "--nocapture",
            "--test-threads=1",
        ]);
        s.privileged = privileged;
        s.process.env.push("HB_SPAWN_PROBE=1".into());
        s.process
            .env
            .push(format!("HB_HOST_PID={}", std::process::id()));
        s.mounts.push(MountSpec::Bind {
            source: "/usr".into(),
            destination: "/usr".into(),
            readonly: true,
        });
        s.mounts.push(MountSpec::Bind {
            source: std::env::current_exe().unwrap(),
            destination: "/probe".into(),
            readonly: true,
        });
        let (code, out, err, _) = b.run(&s).unwrap();
        assert_eq!(code, 0, "{out} {err}");
        out.lines()
            // libtest's "test … " prefix may share the first line.
            .filter_map(|l| l.split_once("PROBE ").map(|(_, rest)| rest))
            .filter_map(|l| l.split_once(' '))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let eperm = libc::EPERM.to_string();
    let esrch = libc::ESRCH.to_string();
    let d = probe(false);
    assert_eq!(d.get("init_module"), Some(&eperm), "{d:?}");
    assert_eq!(d.get("keyctl"), Some(&eperm), "{d:?}");
    assert_eq!(d.get("unshare"), Some(&eperm), "{d:?}");
    assert_eq!(d.get("mount"), Some(&eperm), "{d:?}");
    assert_eq!(d.get("kill_host"), Some(&esrch), "{d:?}");
    assert_eq!(d.get("kill_init").map(String::as_str), Some("0"), "{d:?}");
    assert_eq!(
        d.get("CapEff").map(String::as_str),
        Some("00000000a80425fb")
    );
    assert_eq!(
        d.get("CapBnd").map(String::as_str),
        Some("00000000a80425fb")
    );
    assert_eq!(
        d.get("CapInh").map(String::as_str),
        Some("0000000000000000")
    );
    // The control: privileged, the same calls get past seccomp and capabilities.
    let p = probe(true);
    assert_ne!(p.get("init_module"), Some(&eperm), "{p:?}");
    assert_ne!(p.get("keyctl"), Some(&eperm), "{p:?}");
    assert_eq!(p.get("unshare").map(String::as_str), Some("0"), "{p:?}");
    assert_eq!(p.get("mount").map(String::as_str), Some("0"), "{p:?}");
    assert_eq!(
        p.get("kill_host"),
        Some(&esrch),
        "pid namespace even when privileged"
    );
    // Every capability we hold ourselves (root here may lack some).
    let own = std::fs::read_to_string("/proc/self/status").unwrap();
    let full = own
        .lines()
        .find_map(|l| l.strip_prefix("CapPrm:\t"))
        .unwrap()
        .to_string();
    let bits = u64::from_str_radix(&full, 16).unwrap();
    assert!(bits & (1 << 21) != 0 && bits & (1 << 16) != 0, "{full}");
    assert_eq!(p.get("CapEff"), Some(&full), "{p:?}");
}

#[test]
fn limits_show_in_the_cgroup_and_cleanup_leaves_nothing() {
    if !root() {
        return;
    }
    let b = bed();
    let mut spec = b.spec(&["sleep", "30"]);
    spec.resources = Resources {
        memory_bytes: Some(32 << 20),
        nano_cpus: Some(500_000_000),
        pids_limit: Some(50),
        devices: Vec::new(),
    };
    let s = b.spawner.spawn(&spec, null_stdio()).unwrap();
    let read = |c: &str, f: &str| {
        std::fs::read_to_string(s.cgroup.dir(c).unwrap().join(f))
            .unwrap()
            .trim()
            .to_string()
    };
    let v2 = matches!(cgroup::layout().unwrap(), cgroup::Layout::V2(_));
    if v2 {
        assert_eq!(read("memory", "memory.max"), (32u64 << 20).to_string());
        assert_eq!(read("cpu", "cpu.max"), "50000 100000");
    } else {
        assert_eq!(
            read("memory", "memory.limit_in_bytes"),
            (32u64 << 20).to_string()
        );
        assert_eq!(read("cpu", "cpu.cfs_quota_us"), "50000");
        assert_eq!(read("cpu", "cpu.cfs_period_us"), "100000");
    }
    assert_eq!(read("pids", "pids.max"), "50");
    let stats = s.cgroup.stats().unwrap();
    assert_eq!(stats.memory_limit, 32 << 20);
    assert_eq!(stats.pids_current, 1);
    assert_eq!(s.cgroup.pids().unwrap(), vec![s.pid]);
    // The process is in every hierarchy's directory before it runs (it was placed before exec).
    let own = std::fs::read_to_string(format!("/proc/{}/cgroup", s.pid)).unwrap();
    let mine = format!("/{}/{}", b.parent, spec.id);
    assert!(
        own.lines()
            .any(|l| l.contains(":memory:") && l.ends_with(&mine)),
        "{own}"
    );
    // Cgroup::open re-attaches to the same directories.
    assert_eq!(Cgroup::open(&b.parent, &spec.id).unwrap(), s.cgroup);
    s.cgroup.kill_all(libc::SIGKILL).unwrap();
    let mut status = 0;
    // SAFETY: reaping our child.
    unsafe { libc::waitpid(s.pid, &mut status, 0) };
    assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL);
    s.cgroup.remove().unwrap();
    s.cgroup.remove().unwrap(); // idempotent
    for (_, d) in &s.cgroup.dirs {
        assert!(!d.exists(), "{} left behind", d.display());
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(spec.rootfs.merged_dir.to_str().unwrap()));
    // Impossible limits are refused before any process exists.
    let mut bad = b.spec(&["true"]);
    bad.resources.memory_bytes = Some(5 << 20);
    assert_eq!(b.run(&bad).unwrap_err().exit_code(), 125);
    assert!(!Cgroup::open(&b.parent, &bad.id).unwrap().exists());
}

#[test]
fn stale_cgroups_are_removed() {
    if !root() {
        return;
    }
    // Its own parent: removing stale cgroups kills what is in them, and other tests run in
    // parallel.
    let parent = format!("hb-spawn-stale-{}", std::process::id());
    let keep = id();
    let stale = id();
    let k = Cgroup::create(&parent, &keep, &Resources::default(), false).unwrap();
    let s = Cgroup::create(&parent, &stale, &Resources::default(), false).unwrap();
    let removed = remove_stale_cgroups(&parent, std::slice::from_ref(&keep)).unwrap();
    assert_eq!(removed, vec![stale.clone()]);
    assert!(!s.exists() && k.exists());
    k.remove().unwrap();
    for (_, d) in &k.dirs {
        let _ = std::fs::remove_dir(d.parent().unwrap());
    }
}

#[test]
fn many_layers_exceed_one_page_of_mount_options() {
    if !root() {
        return;
    }
    let b = bed();
    let mut spec = b.spec(&["sh", "-c", "ls /m | wc -l; cat /order"]);
    let n = 90;
    let mut lowers = Vec::new();
    for i in 0..n {
        // Layers in different parents with long names, as no store lays them out.
        let l = b
            .dir
            .path()
            .join(format!("store-{i:03}"))
            .join(format!("{i:064x}"));
        std::fs::create_dir_all(l.join("m")).unwrap();
        std::fs::write(l.join("m").join(i.to_string()), "").unwrap();
        lowers.push(l);
    }
    std::fs::write(lowers[0].join("order"), "top\n").unwrap();
    std::fs::write(lowers[n - 1].join("order"), "bottom\n").unwrap();
    lowers.push(b.dir.path().join("layers/base"));
    let total: usize = lowers.iter().map(|l| l.as_os_str().len() + 1).sum();
    assert!(total > 4096, "the test must exceed a page ({total})");
    spec.rootfs.lower_dirs = lowers;
    let (code, out, err, _) = b.run(&spec).unwrap();
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, format!("{n}\ntop\n"));
}

/// A fresh pty: (master, slave).
fn pty() -> (OwnedFd, OwnedFd) {
    // SAFETY: posix_openpt/grantpt/unlockpt/ptsname_r on a fd we own, into our buffer.
    unsafe {
        let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(m >= 0);
        assert_eq!(libc::grantpt(m), 0);
        assert_eq!(libc::unlockpt(m), 0);
        let mut name = [0 as libc::c_char; 64];
        assert_eq!(libc::ptsname_r(m, name.as_mut_ptr(), name.len()), 0);
        let s = libc::open(
            name.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        assert!(s >= 0);
        (OwnedFd::from_raw_fd(m), OwnedFd::from_raw_fd(s))
    }
}

#[test]
fn tty_becomes_the_controlling_terminal() {
    if !root() {
        return;
    }
    let b = bed();
    // Field 7 of /proc/self/stat is the controlling terminal (0: none).
    let script =
        "read a b c d e f tty rest < /proc/self/stat; [ -t 0 ] && echo ISATTY; echo tty=$tty; stty size";
    for tty in [true, false] {
        let mut spec = b.spec(&["sh", "-c", script]);
        spec.process.tty = tty;
        // Without a TTY, a pty's slave handed over as plain descriptors is stdio but not the
        // controlling terminal.
        let (stdio, host_master) = if tty {
            (Stdio::Terminal(WindowSize { rows: 0, cols: 0 }), None)
        } else {
            let (master, slave) = pty();
            let stdio = Stdio::Fds {
                stdin: slave.try_clone().unwrap(),
                stdout: slave.try_clone().unwrap(),
                stderr: slave,
            };
            (stdio, Some(master))
        };
        let mut s = b.spawner.spawn(&spec, stdio).unwrap();
        assert_eq!(s.terminal.is_some(), tty);
        let master = s.terminal.take().or(host_master).unwrap();
        let mut status = 0;
        // SAFETY: reaping our child.
        unsafe { libc::waitpid(s.pid, &mut status, 0) };
        s.cgroup.remove().unwrap();
        let mut buf = [0u8; 4096];
        // SAFETY: reading the pty master into our buffer (the output is already buffered).
        let n = unsafe { libc::read(master.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        let out = String::from_utf8_lossy(&buf[..n.max(0) as usize]).into_owned();
        assert!(out.contains("ISATTY"), "{out}");
        let nr = out
            .lines()
            .find_map(|l| l.trim().strip_prefix("tty="))
            .unwrap_or_default()
            .to_string();
        assert_eq!(nr != "0", tty, "tty={tty}: {out}");
        if tty {
            // A size of 0 x 0 means the usual 24 x 80.
            assert!(out.contains("24 80"), "{out}");
        }
    }
    // A terminal goes with a TTY process and only with it.
    let mut spec = b.spec(&["true"]);
    spec.process.tty = true;
    let e = b.spawner.spawn(&spec, null_stdio()).unwrap_err();
    assert!(e.to_string().contains("needs a terminal"), "{e}");
    spec.process.tty = false;
    let e = b
        .spawner
        .spawn(&spec, Stdio::Terminal(WindowSize { rows: 0, cols: 0 }))
        .unwrap_err();
    assert!(e.to_string().contains("without a TTY"), "{e}");
    assert!(!Cgroup::open(&b.parent, &spec.id).unwrap().exists());
}

/// Everything a master gives until the slave side is closed everywhere (EIO); fails the test
/// if that takes more than 10 s.
fn read_master(master: &OwnedFd) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the terminal never closed: {}",
            String::from_utf8_lossy(&out)
        );
        let mut p = libc::pollfd {
            fd: master.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: polling one fd we own.
        if unsafe { libc::poll(&mut p, 1, 100) } <= 0 {
            continue;
        }
        // SAFETY: reading into our buffer.
        let n = unsafe { libc::read(master.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        out.extend_from_slice(&buf[..n as usize]);
    }
    String::from_utf8_lossy(&out).replace("\r\n", "\n")
}

#[test]
fn terminal_is_allocated_in_the_containers_devpts() {
    if !root() {
        return;
    }
    let b = bed();
    // ttyname(0) resolves inside the container; /dev/console is that pty (bind-mounted); the
    // window size is the one asked for; the controlling terminal is set (stat field 7).
    let script = "tty; tty < /dev/console; \
        c=$(stat -L -c %t:%T /dev/console) && [ \"$c\" = \"$(stat -L -c %t:%T /dev/pts/0)\" ] \
        && echo console-is-pts-0; \
        stty size; read a b c d e f t rest < /proc/self/stat; [ $t != 0 ] && echo has-ctty; exit 3";
    let mut spec = b.spec(&["sh", "-c", script]);
    spec.process.tty = true;
    let size = WindowSize {
        rows: 30,
        cols: 100,
    };
    let mut s = b.spawner.spawn(&spec, Stdio::Terminal(size)).unwrap();
    let master = s.terminal.take().expect("the master comes back");
    // The master the caller got reads the container's output, and EIO ends it at exit.
    let out = read_master(&master);
    let mut status = 0;
    // SAFETY: reaping our child.
    assert_eq!(unsafe { libc::waitpid(s.pid, &mut status, 0) }, s.pid);
    s.cgroup.remove().unwrap();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 3,
        "{status:#x} {out}"
    );
    assert_eq!(
        out,
        "/dev/pts/0\n/dev/console\nconsole-is-pts-0\n30 100\nhas-ctty\n"
    );

    // A failure after the terminal was made is still worded and classed as without one.
    let mut bad = b.spec(&["nope"]);
    bad.process.tty = true;
    let e = b.spawner.spawn(&bad, Stdio::Terminal(size)).unwrap_err();
    assert_eq!(e.exit_code(), 127, "{e}");

    // exec (as a non-root user): into a container without a terminal, the exec's is that
    // devpts's first pty, and /dev/console stays absent (it is the container's console, made
    // only with the container's own terminal).
    let spec = b.spec(&["sleep", "30"]);
    let running = b.spawner.spawn(&spec, null_stdio()).unwrap();
    let p = ProcessSpec {
        args: vec![
            "sh".into(),
            "-c".into(),
            "tty; ls /dev/console 2>/dev/null || echo no-console; stty size; stat -c %u:%g $(tty); \
             read a b c d e f t rest < /proc/self/stat; [ $t != 0 ] && echo has-ctty"
                .into(),
        ],
        env: vec!["PATH=/bin".into()],
        cwd: "/".into(),
        user: "app".into(),
        tty: true,
    };
    let size = WindowSize {
        rows: 40,
        cols: 120,
    };
    let e = b
        .spawner
        .exec(&running, &spec, &p, Stdio::Terminal(size))
        .unwrap();
    let (pid, master) = (e.pid, e.terminal.expect("the master comes back"));
    let out = read_master(&master);
    // SAFETY: the exec'd process is our child (CLONE_PARENT).
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    // Owned by the process's user (as runc does for a terminal), group tty (devpts' gid=5).
    assert_eq!(out, "/dev/pts/0\nno-console\n40 120\n1000:5\nhas-ctty\n");
    running.cgroup.kill_all(libc::SIGKILL).unwrap();
    // SAFETY: reaping our child.
    unsafe { libc::waitpid(running.pid, &mut status, 0) };
    running.cgroup.remove().unwrap();
}

#[test]
fn console_socket_carries_one_pty_master() {
    let send = |fd: RawFd| {
        let (ours, theirs) = console::socket_pair().unwrap();
        // SAFETY: sending a descriptor we hold over a socket we own.
        unsafe { child::send_fd(theirs.as_raw_fd(), fd) }.unwrap();
        drop(theirs);
        console::receive_master(&ours)
    };
    let ptn = |fd: RawFd| {
        let mut n: libc::c_uint = 0;
        // SAFETY: TIOCGPTN writes one unsigned int.
        assert_eq!(unsafe { libc::ioctl(fd, libc::TIOCGPTN, &mut n) }, 0);
        n
    };
    let (master, _slave) = pty();
    let got = send(master.as_raw_fd()).unwrap();
    assert_ne!(got.as_raw_fd(), master.as_raw_fd());
    assert_eq!(ptn(got.as_raw_fd()), ptn(master.as_raw_fd()));
    // SAFETY: F_GETFD on a descriptor we own.
    let flags = unsafe { libc::fcntl(got.as_raw_fd(), libc::F_GETFD) };
    assert!(
        flags & libc::FD_CLOEXEC != 0,
        "received without close-on-exec"
    );
    let (r, _w) = pipe().unwrap();
    let e = send(r.as_raw_fd()).unwrap_err().to_string();
    assert!(e.contains("not a pty master"), "{e}");
    let (ours, theirs) = console::socket_pair().unwrap();
    drop(theirs);
    let e = console::receive_master(&ours).unwrap_err().to_string();
    assert!(e.contains("without sending"), "{e}");
}

#[test]
fn env_defaults_like_docker() {
    if !root() {
        return;
    }
    let b = bed();
    let mut s = b.spec(&[
        "/bin/sh",
        "-c",
        "echo $FOO; echo $PATH; echo $HOME; echo $HOSTNAME",
    ]);
    s.process.env = vec!["FOO=bar baz".into()];
    s.process.user = "app".into();
    let (code, out, err, _) = b.run(&s).unwrap();
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        format!("bar baz\n{}\n/home/app\nbox\n", user::DEFAULT_PATH)
    );
    // An image's own PATH and HOME win.
    s.process.env = vec!["PATH=/bin".into(), "HOME=/x".into()];
    let (_, out, _, _) = b.run(&s).unwrap();
    assert_eq!(out, "\n/bin\n/x\nbox\n");
}

#[test]
fn clone3_puts_the_child_in_a_v2_cgroup() {
    if !root() {
        return;
    }
    // Any v2 hierarchy works for CLONE_INTO_CGROUP: the pure one, or the hybrid's unified.
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let Some(v2) = mountinfo.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        right
            .starts_with("cgroup2 ")
            .then(|| left.split_whitespace().nth(4).map(PathBuf::from))?
    }) else {
        eprintln!("skipping: no cgroup2 mount");
        return;
    };
    let name = format!("hb-spawn-test-{}", id());
    let dir = v2.join(&name);
    std::fs::create_dir(&dir).unwrap();
    struct Rmdir(PathBuf);
    impl Drop for Rmdir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let _guard = Rmdir(dir.clone());
    let fd = open_dir_path(&dir).unwrap();
    let pid = clone_child(0, Some(fd.as_raw_fd())).unwrap();
    if pid == 0 {
        // SAFETY: in the child: only async-signal-safe calls.
        unsafe {
            libc::pause();
            libc::_exit(0)
        }
    }
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    // SAFETY: killing and reaping our own child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
    assert!(
        own.lines().any(|l| l == format!("0::/{name}")),
        "born elsewhere: {own}"
    );
}

#[test]
fn devices_resolve_from_nodes_and_directories() {
    let null = crate::resolve_devices("/dev/null", "/dev/n", "").unwrap();
    assert_eq!(null.len(), 1);
    assert_eq!(
        (
            null[0].kind,
            null[0].major,
            null[0].minor,
            null[0].permissions.as_str()
        ),
        ('c', 1, 3, "rwm")
    );
    assert_eq!(null[0].path_in_container, "/dev/n");
    // A directory gives every node below it, at the same relative paths.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    for (name, minor) in [("a", 3), ("sub/b", 5)] {
        let p = std::ffi::CString::new(dir.path().join(name).to_str().unwrap()).unwrap();
        // SAFETY: mknod on a path we own.
        assert_eq!(
            unsafe { libc::mknod(p.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, minor)) },
            0
        );
    }
    std::fs::write(dir.path().join("not-a-device"), b"x").unwrap();
    let found = crate::resolve_devices(dir.path().to_str().unwrap(), "/dev/d", "r").unwrap();
    let paths: Vec<&str> = found.iter().map(|d| d.path_in_container.as_str()).collect();
    assert_eq!(paths, ["/dev/d/a", "/dev/d/sub/b"]);
    assert!(found
        .iter()
        .all(|d| d.permissions == "r" && d.file_mode == 0o600));
    let e = crate::resolve_devices("/dev/definitely-missing", "", "")
        .unwrap_err()
        .to_string();
    assert!(e.contains("error gathering device information"), "{e}");
    let e = crate::resolve_devices("/dev/null", "", "rx")
        .unwrap_err()
        .to_string();
    assert!(e.contains("invalid device permissions"), "{e}");
}

#[test]
fn volatile_overlay_mounts_again_after_a_run() {
    if !root() {
        return;
    }
    let b = bed();
    let probe = "grep -o -E 'fsync=volatile|,volatile' /proc/self/mountinfo | head -1";
    let mut spec = b.spec(&["sh", "-c", probe]);
    let (code, out, err, _) = b.run(&spec).unwrap();
    assert_eq!((code, out.as_str()), (0, ""), "{err}");
    spec.rootfs.volatile = true;
    for round in 0..2 {
        // The second mount over the same work dir needs the first one's marker gone.
        let (code, out, err, _) = b.run(&spec).unwrap();
        assert_eq!(code, 0, "round {round}: {err}");
        assert!(out.contains("volatile"), "round {round}: {out:?}");
    }
    assert!(spec.rootfs.work_dir.join("work/incompat/volatile").exists());
}

#[test]
fn volatile_applies_to_a_layered_overlay_too() {
    if !root() {
        return;
    }
    let b = bed();
    let mut spec = b.spec(&["sh", "-c", "grep -c volatile /proc/self/mountinfo"]);
    let mut lowers = Vec::new();
    for i in 0..60 {
        let l = b.dir.path().join(format!("s{i}")).join(format!("{i:064x}"));
        std::fs::create_dir_all(&l).unwrap();
        lowers.push(l);
    }
    lowers.push(b.dir.path().join("layers/base"));
    spec.rootfs.lower_dirs = lowers;
    spec.rootfs.volatile = true;
    for round in 0..2 {
        let (code, out, err, _) = b.run(&spec).unwrap();
        assert_eq!((code, out.as_str()), (0, "1\n"), "round {round}: {err}");
    }
}

#[test]
fn a_bind_mount_point_the_image_has_is_not_copied_up() {
    if !root() {
        return;
    }
    let b = bed();
    let lower = b.dir.path().join("layers/base");
    std::fs::write(lower.join("etc/hostname"), "").unwrap();
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("hostname"), "box\n").unwrap();
    std::fs::write(host.path().join("hosts"), "127.0.0.1 localhost\n").unwrap();
    let mut spec = b.spec(&["sh", "-c", "cat /etc/hostname /etc/hosts"]);
    for f in ["hostname", "hosts"] {
        spec.mounts.push(MountSpec::Bind {
            source: host.path().join(f),
            destination: format!("/etc/{f}"),
            readonly: false,
        });
    }
    let (code, out, err, _) = b.run(&spec).unwrap();
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "box\n127.0.0.1 localhost\n");
    let upper = &spec.rootfs.upper_dir;
    assert!(!upper.join("etc/hostname").exists(), "copied up");
    // A mount point the image lacks is still made, in the upper dir.
    assert!(upper.join("etc/hosts").exists());
}

#[test]
fn only_containers_that_could_change_their_network_namespace_say_so() {
    if !root() {
        return;
    }
    let b = bed();
    let base = b.spec(&["true"]);
    assert!(!base.may_reconfigure_network(), "Docker's defaults");

    let with = |f: &dyn Fn(&mut ContainerSpec)| {
        let mut s = base.clone();
        f(&mut s);
        s.may_reconfigure_network()
    };
    assert!(with(&|s| s.privileged = true));
    assert!(with(&|s| s.capabilities.push("CAP_NET_ADMIN".into())));
    assert!(with(&|s| s.capabilities.push("sys_admin".into())));
    assert!(!with(&|s| s.capabilities.push("CAP_SYS_TIME".into())));

    let file = b.dir.path().join("hostname");
    std::fs::write(&file, "box\n").unwrap();
    let bind = |source: &Path| MountSpec::Bind {
        source: source.to_path_buf(),
        destination: "/x".into(),
        readonly: true,
    };
    assert!(!with(&|s| s.mounts.push(bind(&file))), "a plain file");
    assert!(with(&|s| s.mounts.push(bind(b.dir.path()))), "a directory");
    assert!(
        with(&|s| s
            .mounts
            .push(bind(Path::new("/proc/sys/net/ipv4/ip_forward")))),
        "procfs"
    );
    assert!(
        with(&|s| s.mounts.push(bind(&b.dir.path().join("missing")))),
        "unknown"
    );
    let link = b.dir.path().join("link");
    std::os::unix::fs::symlink("/proc/sys/net/ipv4/ip_forward", &link).unwrap();
    assert!(with(&|s| s.mounts.push(bind(&link))), "a symlink to procfs");
}
