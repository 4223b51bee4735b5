//! Spawner tests against the real kernel (root): a busybox rootfs, real overlay, namespaces,
//! cgroups.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;

use super::*;

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
}

const PARENT: &str = "hb-spawn-test";

fn bed() -> Bed {
    let dir = tempfile::tempdir().unwrap();
    let lower = dir.path().join("layers/base");
    for d in ["bin", "etc", "tmp", "proc", "sys", "dev", "home/app"] {
        std::fs::create_dir_all(lower.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", lower.join("bin/busybox")).unwrap();
    for a in [
        "sh", "true", "cat", "id", "hostname", "ls", "mount", "echo", "sleep", "dd", "grep", "wc",
        "touch", "seq", "ps", "pwd", "readlink", "kill",
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
            capabilities: [
                "CAP_CHOWN",
                "CAP_DAC_OVERRIDE",
                "CAP_FSETID",
                "CAP_FOWNER",
                "CAP_MKNOD",
                "CAP_NET_RAW",
                "CAP_SETGID",
                "CAP_SETUID",
                "CAP_SETFCAP",
                "CAP_SETPCAP",
                "CAP_NET_BIND_SERVICE",
                "CAP_SYS_CHROOT",
                "CAP_KILL",
                "CAP_AUDIT_WRITE",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            privileged: false,
            seccomp: true,
            no_new_privileges: true,
            resources: Resources::default(),
            cgroup_parent: PARENT.into(),
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
            Stdio {
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
    let script = "echo $$; hostname; ls /proc | grep -c '^[0-9]'; grep CapEff /proc/self/status; grep Seccomp: /proc/self/status; mount -t tmpfs x /tmp 2>/dev/null && echo MOUNTED; echo 1 > /proc/sys/kernel/domainname 2>/dev/null && echo WROTE; wc -c < MASKED; ls /sys/class/net; echo hi > /tmp/f; exit 5".replace("MASKED", masked);
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
            Stdio {
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
            "hostname; ls /proc | grep -c '^[0-9]'; pwd".into(),
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
            Stdio {
                stdin: null(),
                stdout: w.try_clone().unwrap(),
                stderr: w,
            },
        )
        .unwrap();
    let mut out = String::new();
    std::fs::File::from(r).read_to_string(&mut out).unwrap();
    let mut status = 0;
    // SAFETY: the exec'd process is reparented to us only if we are a subreaper; wait may fail.
    unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
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
            Stdio {
                stdin: null(),
                stdout: null(),
                stderr: null(),
            },
        )
        .unwrap_err();
    assert_eq!(e.exit_code(), 127);
    running.cgroup.kill_all(libc::SIGKILL).unwrap();
    // SAFETY: reaping our child.
    unsafe { libc::waitpid(running.pid, &mut status, 0) };
    running.cgroup.remove().unwrap();
}
