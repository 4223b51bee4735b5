//! Containers end to end: a real registry, a real hyperboxd (and its monitor), real namespaces,
//! cgroups and overlay mounts, driven by the real `hb`. Needs root (CI runs as root) and a static
//! busybox (/bin/busybox; `.ci/run` installs busybox-static).

mod common;

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::busybox::{can_run, image};
use common::{bin, Daemon};

fn out(o: &std::process::Output) -> (String, String, i32) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
        o.status.code().unwrap_or(-1),
    )
}

fn hb_stdin(d: &Daemon, args: &[&str], input: &[u8]) -> std::process::Output {
    let mut child = Command::new(bin("hb"))
        .arg("-H")
        .arg(format!("unix://{}", d.socket.display()))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run hb");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write stdin");
    child.wait_with_output().expect("hb output")
}

fn inspect(d: &Daemon, name: &str) -> serde_json::Value {
    let v: serde_json::Value =
        serde_json::from_str(&d.hb_ok(&["inspect", name])).expect("inspect json");
    v[0].clone()
}

/// Whether no process on the host is `sleep MARKER` (the containers of a test that all ran
/// that command are gone).
fn no_sleep_process(marker: &str) -> bool {
    Command::new("pgrep")
        .args(["-f", &format!("^sleep {marker}$")])
        .output()
        .expect("pgrep")
        .stdout
        .is_empty()
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn run_streams_output_and_exit_code_then_removes() {
    if !can_run() {
        return;
    }
    let (_, img) = image();
    let d = Daemon::start("");
    let o = d.hb(&[
        "run",
        "--rm",
        "--network",
        "none",
        img,
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    let (stdout, stderr, code) = out(&o);
    assert_eq!(code, 3, "stdout {stdout:?} stderr {stderr:?}\n{}", d.log());
    assert_eq!(stdout, "out\n");
    assert!(stderr.ends_with("err\n"), "{stderr:?}");
    // --rm: nothing left, in the listing or on disk.
    let left = d.hb_ok(&["ps", "-a"]);
    assert!(left.lines().count() == 1, "{left}\n{}", d.log());
    let containers = d.data_dir().join("containers");
    wait_until("container dir removed", || {
        common::container_dirs(&containers).is_empty()
    });
    // It wrote nothing, so its dirs wait for the next container.
    let recycled = containers.join(".recycled");
    assert_eq!(common::container_dirs(&recycled).len(), 1);
    // The mount points of /etc/hostname, /etc/hosts and /etc/resolv.conf come from the shared
    // bottom layer: a container that writes nothing leaves its upper dir empty.
    let id = d.hb_ok(&["create", "--network", "none", img, "true"]);
    let id = id.trim();
    assert_eq!(out(&d.hb(&["start", "-a", id])).2, 0);
    let upper = containers.join(id).join("upper");
    let written: Vec<_> = std::fs::read_dir(&upper)
        .expect("upper dir")
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .expect("listing the upper dir");
    assert!(written.is_empty(), "upper dir holds {written:?}");
    let upper_ino = upper.metadata().expect("upper dir").ino();
    d.hb_ok(&["rm", id]);
    // Untouched, its dirs wait for the next container, which gets them.
    assert_eq!(common::container_dirs(&recycled), [id]);
    let next = d.hb_ok(&["create", "--network", "none", img, "true"]);
    let next = next.trim();
    let reused = containers.join(next);
    assert_eq!(
        reused.join("upper").metadata().expect("upper").ino(),
        upper_ino
    );
    assert!(
        !reused.join(format!("{id}-json.log")).exists(),
        "the old log"
    );
    assert!(common::container_dirs(&recycled).is_empty());
    assert_eq!(out(&d.hb(&["start", "-a", next])).2, 0, "{}", d.log());
    d.hb_ok(&["rm", next]);
    assert_eq!(common::container_dirs(&recycled), [next]);
    // A container that writes takes them too, and its dirs are deleted after it.
    let o = d.hb(&[
        "run",
        "--rm",
        "--network",
        "none",
        img,
        "sh",
        "-c",
        "echo x > /written",
    ]);
    assert_eq!(out(&o).2, 0, "{}", d.log());
    wait_until("the writer's dirs removed", || {
        common::container_dirs(&containers).is_empty()
    });
    assert!(common::container_dirs(&recycled).is_empty());
    // A second run is served from the unpacked layer (no pull): the image stays.
    let o = d.hb(&["run", "--rm", "--network", "none", img, "true"]);
    assert_eq!(out(&o).2, 0);
    // A --rm container's name is free the moment `run` returns (its files may still be going).
    for i in 0..5 {
        let o = d.hb(&[
            "run",
            "--rm",
            "--name",
            "reused",
            "--network",
            "none",
            img,
            "true",
        ]);
        let (_, stderr, code) = out(&o);
        assert_eq!(code, 0, "run {i} with a reused name: {stderr}\n{}", d.log());
    }
    // `run -i` ends when the container does, though nobody closes hb's stdin.
    let mut child = Command::new(common::bin("hb"))
        .arg("-H")
        .arg(format!("unix://{}", d.socket.display()))
        .args(["run", "--rm", "-i", "--network", "none", img, "true"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("run hb");
    let _open_stdin = child.stdin.take();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for hb") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "hb run -i still running 20 s after its container ended\n{}",
                d.log()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    wait_until("every --rm container's dir removed", || {
        common::container_dirs(&containers).is_empty()
    });
}

#[test]
fn exit_codes_follow_docker_conventions() {
    if !can_run() {
        return;
    }
    let (_, img) = image();
    let d = Daemon::start("");
    let (_, stderr, code) = out(&d.hb(&["run", "--rm", "--network", "none", img, "no-such-cmd"]));
    assert_eq!(code, 127, "{stderr}");
    assert!(stderr.contains("no-such-cmd"), "{stderr}");
    let (_, stderr, code) = out(&d.hb(&["run", "--rm", "--network", "none", img, "/bin/not-exec"]));
    assert_eq!(code, 126, "{stderr}");
    let (_, stderr, code) = out(&d.hb(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-u",
        "nobody-here",
        img,
        "true",
    ]));
    assert_eq!(code, 125, "{stderr}");
    assert!(stderr.contains("nobody-here"), "{stderr}");
    let (_, stderr, code) =
        out(&d.hb(&["run", "--rm", "-v", "/definitely/missing:/x", img, "true"]));
    assert_eq!(code, 125);
    assert!(stderr.contains("does not exist"), "{stderr}");
    let (_, stderr, code) = out(&d.hb(&["run", "--rm", "-m", "1m", img, "true"]));
    assert_eq!(code, 125);
    assert!(stderr.contains("Minimum memory"), "{stderr}");
    let (_, stderr, _) = out(&d.hb(&["run", "--rm", "127.0.0.1:1/nothing/here", "true"]));
    assert!(!stderr.is_empty());
    // Failed starts left nothing behind.
    assert_eq!(d.hb_ok(&["ps", "-a", "-q"]).trim(), "");
}

#[test]
fn isolation_defaults() {
    if !can_run() {
        return;
    }
    let (_, img) = image();
    let d = Daemon::start("");
    let script = "echo pid=$$; hostname; ls /proc | grep -c '^[0-9]'; \
                  grep CapEff /proc/self/status; grep NoNewPrivs /proc/self/status; \
                  grep Seccomp: /proc/self/status; \
                  mount -t tmpfs none /mnt 2>/dev/null && echo MOUNTED; \
                  echo 1 2>/dev/null > /proc/sys/kernel/domainname && echo WROTE; \
                  for p in /proc/kcore /proc/keys /proc/timer_list /proc/sched_debug; do \
                  [ -e $p ] && { wc -c < $p; break; }; done; \
                  readlink /proc/1/ns/pid; true";
    let (stdout, stderr, code) =
        out(&d.hb(&["run", "--rm", "--network", "none", img, "sh", "-c", script]));
    assert_eq!(code, 0, "{stderr}");
    // A host process cannot be signalled, a module cannot be loaded, and the daemon's and the
    // monitor's sockets are out of reach.
    let escape = format!(
        "kill -0 {host_pid} 2>/dev/null && echo SIGNALLED; \
         echo junk > /tmp/m.ko; busybox insmod /tmp/m.ko 2>&1; \
         for s in {api} {run}/monitor.sock; do [ -e $s ] && echo SEES $s; done; true",
        host_pid = std::process::id(),
        api = d.socket.display(),
        run = d
            .socket
            .parent()
            .map_or(String::new(), |p| p.display().to_string()),
    );
    let (escaped, stderr, code) =
        out(&d.hb(&["run", "--rm", "--network", "none", img, "sh", "-c", &escape]));
    assert_eq!(code, 0, "{stderr}");
    assert!(!escaped.contains("SIGNALLED"), "{escaped}");
    assert!(!escaped.contains("SEES"), "{escaped}");
    let run_dir = d.socket.parent().expect("socket dir");
    assert!(d.socket.exists() && run_dir.join("monitor.sock").exists());
    assert!(
        escaped.contains("Operation not permitted"),
        "insmod: {escaped}"
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "pid=1", "{stdout}");
    assert_eq!(lines[1].len(), 12, "hostname is the short id: {stdout}");
    let procs: u32 = lines[2].trim().parse().expect("count");
    assert!(procs <= 3, "host processes visible: {stdout}");
    assert!(
        lines[3].ends_with("00000000a80425fb"),
        "Docker's default caps: {stdout}"
    );
    assert!(lines[4].ends_with('1'), "no_new_privs: {stdout}");
    assert!(lines[5].ends_with('2'), "seccomp filter mode: {stdout}");
    assert!(!stdout.contains("MOUNTED"), "mount worked: {stdout}");
    assert!(!stdout.contains("WROTE"), "/proc/sys is writable: {stdout}");
    assert_eq!(lines[6].trim(), "0", "masked file readable: {stdout}");
    let host_pidns = std::fs::read_link("/proc/self/ns/pid").expect("own pid ns");
    assert_ne!(lines[7], host_pidns.to_string_lossy(), "same pid namespace");
    // `--network none`: each container a namespace of its own with only lo, none the host's,
    // held by the monitor alone (no namespace file on disk).
    let netns = |name: &str| {
        d.hb_ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "none",
            img,
            "sleep",
            "30",
        ]);
        d.hb_ok(&[
            "exec",
            name,
            "sh",
            "-c",
            "readlink /proc/self/ns/net; ls /sys/class/net",
        ])
    };
    let (a, b) = (netns("ns-a"), netns("ns-b"));
    let host_netns = std::fs::read_link("/proc/self/ns/net").expect("own net ns");
    let first = |s: &str| s.lines().next().unwrap_or("").to_string();
    assert_ne!(first(&a), first(&b), "two containers share a namespace");
    assert_ne!(
        first(&a),
        host_netns.to_string_lossy(),
        "the host's namespace"
    );
    assert_eq!(a.lines().skip(1).collect::<Vec<_>>(), ["lo"], "{a}");
    let ns_dir = run_dir.join("net").join("ns");
    let files: Vec<_> = std::fs::read_dir(&ns_dir)
        .expect("the monitor's namespace dir")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        files.is_empty(),
        "namespace files {files:?} in {}",
        ns_dir.display()
    );
    d.hb_ok(&["rm", "-f", "ns-a", "ns-b"]);
    // Privileged: every capability, no seccomp.
    let (stdout, _, _) = out(&d.hb(&[
        "run",
        "--rm",
        "--privileged",
        "--network",
        "none",
        img,
        "sh",
        "-c",
        "grep -E 'CapEff|Seccomp:' /proc/self/status",
    ]));
    assert!(stdout.contains("Seccomp:\t0"), "{stdout}");
    assert!(!stdout.contains("00000000a80425fb"), "{stdout}");
}

#[test]
fn env_workdir_user_hostname_and_mounts() {
    if !can_run() {
        return;
    }
    let (_, img) = image();
    let d = Daemon::start("");
    let host_dir = tempfile::tempdir().expect("tmp");
    std::fs::write(host_dir.path().join("from-host"), "hi").expect("write");
    let env_file = host_dir.path().join("env");
    std::fs::write(&env_file, "FROM_FILE=yes\n# comment\n").expect("write");
    let bind = format!("{}:/data", host_dir.path().display());
    let bind_ro = format!("{}:/ro:ro", host_dir.path().display());
    let (stdout, stderr, code) = out(&d.hb(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-e",
        "A=1",
        "--env-file",
        env_file.to_str().expect("utf8"),
        "-w",
        "/tmp/work",
        "-u",
        "1000:1000",
        "-h",
        "box",
        "-v",
        &bind,
        "-v",
        &bind_ro,
        "--tmpfs",
        "/scratch",
        img,
        "sh",
        "-c",
        "echo $A $FROM_FILE; pwd; id -u; id -g; hostname; cat /data/from-host; echo; \
         touch /ro/x 2>/dev/null && echo RO-WRITABLE; mount | grep -c ' /scratch '",
    ]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, "1 yes\n/tmp/work\n1000\n1000\nbox\nhi\n1\n");
    // Read-only rootfs.
    let (stdout, _, _) = out(&d.hb(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--read-only",
        img,
        "sh",
        "-c",
        "touch /x 2>/dev/null && echo WRITABLE; echo done",
    ]));
    assert_eq!(stdout, "done\n");
}

#[test]
fn stdin_is_forwarded_with_i() {
    if !can_run() {
        return;
    }
    let (_, img) = image();
    let d = Daemon::start("");
    let o = hb_stdin(
        &d,
        &["run", "--rm", "-i", "--network", "none", img, "cat"],
        b"hello\nworld\n",
    );
    let (stdout, stderr, code) = out(&o);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, "hello\nworld\n");
}

/// Output a terminal showed, with `\r\n` line ends back to `\n`.
fn terminal_text(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).replace("\r\n", "\n")
}

/// Shell that prints `size ROWS COLS` once the terminal has the size `hb` was run with (it
/// sends the size right after the start, so this waits for it a little).
fn size_probe() -> String {
    let want = format!("{} {}", common::TERMINAL_ROWS, common::TERMINAL_COLS);
    format!(
        "for i in $(seq 100); do [ \"$(stty size)\" = '{want}' ] && break; sleep 0.05; done; \
         echo size $(stty size)"
    )
}

#[test]
fn tty_is_allocated_inside_the_container_for_run_and_exec() {
    if !can_run() {
        return;
    }
    let (_, img) = image();
    let d = Daemon::start("");
    // Pulled first: `run` would show its pull progress on the terminal too.
    d.hb_ok(&["pull", img]);
    let size = format!("size {} {}\n", common::TERMINAL_ROWS, common::TERMINAL_COLS);
    let in_terminal = |args: &[&str]| {
        let o = d.hb_in_terminal(args);
        let text = terminal_text(&o);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {text}\n{}", d.log());
        text
    };
    // The pty comes from the container's own devpts, so its name resolves inside.
    let text = in_terminal(&["run", "-t", "--rm", "--network", "none", img, "tty"]);
    assert_eq!(text.trim(), "/dev/pts/0", "{text:?}");
    // stdin is the terminal too, /dev/console is the same pty (bind-mounted, as runc does),
    // and the client's window size arrives.
    let probe = format!(
        "[ -t 0 ] && echo stdin-is-a-tty; [ -c /dev/console ] && tty < /dev/console; \
         c=$(stat -L -c %t:%T /dev/console) && [ \"$c\" = \"$(stat -L -c %t:%T /dev/pts/0)\" ] \
         && echo console-is-pts-0; {}",
        size_probe()
    );
    let text = in_terminal(&[
        "run",
        "-t",
        "--rm",
        "--network",
        "none",
        img,
        "sh",
        "-c",
        &probe,
    ]);
    assert_eq!(
        text,
        format!("stdin-is-a-tty\n/dev/console\nconsole-is-pts-0\n{size}")
    );
    // The client's size is there from the first instruction (Docker's ConsoleSize at
    // create), not only once a resize arrives.
    let first = format!("{} {}", common::TERMINAL_ROWS, common::TERMINAL_COLS);
    let text = in_terminal(&[
        "run",
        "-t",
        "--rm",
        "--network",
        "none",
        img,
        "stty",
        "size",
    ]);
    assert_eq!(text.trim(), first, "{text:?}");
    // Without -t: pipes, no terminal and no /dev/console at all.
    let (stdout, _, code) = out(&d.hb(&[
        "run",
        "--rm",
        "--network",
        "none",
        img,
        "sh",
        "-c",
        "tty; ls /dev/console 2>/dev/null || echo no-console",
    ]));
    assert_eq!((stdout.as_str(), code), ("not a tty\nno-console\n", 0));

    // exec -t opens the container's /dev/pts/ptmx as well: in a container started without
    // -t its pty is the first one.
    d.hb_ok(&[
        "run",
        "-d",
        "--name",
        "plain",
        "--network",
        "none",
        img,
        "sleep",
        "100",
    ]);
    let text = in_terminal(&["exec", "-t", "plain", "tty"]);
    assert_eq!(text.trim(), "/dev/pts/0", "{text:?}");
    // An exec's ConsoleSize (at its start) likewise.
    let text = in_terminal(&["exec", "-t", "plain", "stty", "size"]);
    assert_eq!(text.trim(), first, "{text:?}");
    let probe = format!(
        "[ -t 0 ] && echo stdin-is-a-tty; ls /dev/console 2>/dev/null || echo no-console; {}",
        size_probe()
    );
    let text = in_terminal(&["exec", "-t", "plain", "sh", "-c", &probe]);
    assert_eq!(text, format!("stdin-is-a-tty\nno-console\n{size}"));
    // In a container with its own terminal, an exec's is the next one.
    d.hb_ok(&[
        "run",
        "-d",
        "-t",
        "--name",
        "term",
        "--network",
        "none",
        img,
        "sleep",
        "100",
    ]);
    let text = in_terminal(&["exec", "-t", "term", "tty"]);
    assert_eq!(text.trim(), "/dev/pts/1", "{text:?}");
    let (stdout, _, code) = out(&d.hb(&["exec", "term", "tty"]));
    assert_eq!((stdout.as_str(), code), ("not a tty\n", 1));
    d.hb_ok(&["rm", "-f", "plain", "term"]);
}

#[test]
fn detached_lifecycle_exec_logs_top_stats_stop() {
    if !can_run() {
        return;
    }
    let (_, img) = image();
    let d = Daemon::start("");
    let id = d
        .hb_ok(&[
            "run",
            "-d",
            "--name",
            "web",
            "--network",
            "none",
            img,
            "sh",
            "-c",
            "echo started; exec sleep 100",
        ])
        .trim()
        .to_string();
    assert_eq!(id.len(), 64);
    wait_until("logs show output", || {
        d.hb_ok(&["logs", "web"]).contains("started")
    });
    let ps = d.hb_ok(&["ps"]);
    assert!(ps.contains("web") && ps.contains("Up"), "{ps}");
    assert_eq!(d.hb_ok(&["exec", "web", "echo", "hi"]), "hi\n");
    let (_, _, code) = out(&d.hb(&["exec", "web", "sh", "-c", "exit 7"]));
    assert_eq!(code, 7);
    let (_, _, code) = out(&d.hb(&["exec", "web", "nope"]));
    assert_eq!(code, 127);
    let top = d.hb_ok(&["top", "web"]);
    assert!(top.contains("sleep 100"), "{top}");
    let stats = d.hb_ok(&["stats", "--no-stream", "web"]);
    assert!(stats.contains("web") && stats.contains("iB / "), "{stats}");
    let v = inspect(&d, "web");
    assert_eq!(v["State"]["Status"], "running");
    assert!(v["State"]["Pid"].as_i64().unwrap_or(0) > 0);
    // A second container may not take the name.
    let err = d.hb_err(&["run", "-d", "--name", "web", img, "true"]);
    assert!(err.contains("already in use"), "{err}");
    // rm without -f refuses a running container.
    let err = d.hb_err(&["rm", "web"]);
    assert!(err.contains("Stop the container"), "{err}");
    // sleep as pid 1 ignores SIGTERM: stop -t 1 kills it.
    let started = Instant::now();
    d.hb_ok(&["stop", "-t", "1", "web"]);
    assert!(started.elapsed() < Duration::from_secs(8));
    let v = inspect(&d, "web");
    assert_eq!(v["State"]["Status"], "exited");
    assert_eq!(v["State"]["ExitCode"], 137);
    assert_eq!(d.hb_ok(&["wait", "web"]).trim(), "137");
    // Start again, then kill with a signal.
    d.hb_ok(&["start", "web"]);
    assert_eq!(inspect(&d, "web")["State"]["Status"], "running");
    d.hb_ok(&["kill", "-s", "KILL", "web"]);
    wait_until("killed", || {
        inspect(&d, "web")["State"]["Status"] == "exited"
    });
    d.hb_ok(&["rm", "web"]);
    assert_eq!(d.hb_ok(&["ps", "-a", "-q"]).trim(), "");
    let err = d.hb_err(&["inspect", "web"]);
    assert!(err.contains("No such object"), "{err}");
}

#[test]
fn logs_tail_and_prune() {
    if !can_run() {
        return;
    }
    let (_, img) = image();
    let d = Daemon::start("");
    d.hb_ok(&[
        "run",
        "-d",
        "--name",
        "lines",
        "--network",
        "none",
        img,
        "sh",
        "-c",
        "for i in 1 2 3; do echo line$i; done; echo oops >&2",
    ]);
    assert_eq!(d.hb_ok(&["wait", "lines"]).trim(), "0");
    let o = d.hb(&["logs", "lines"]);
    let (stdout, stderr, _) = out(&o);
    assert_eq!(stdout, "line1\nline2\nline3\n");
    assert_eq!(stderr, "oops\n");
    let (stdout, _, _) = out(&d.hb(&["logs", "--tail", "2", "lines"]));
    assert_eq!(stdout, "line3\n");
    let (stdout, _, _) = out(&d.hb(&["logs", "-t", "lines"]));
    assert!(stdout.lines().all(|l| l.contains("Z line")), "{stdout}");
    let pruned = d.hb_ok(&["container", "prune", "-f"]);
    assert!(pruned.contains("Deleted Containers"), "{pruned}");
    assert_eq!(d.hb_ok(&["ps", "-a", "-q"]).trim(), "");
}

/// docker-py's `containers.run` (not detached) asks for `logs?follow=1` right after the start,
/// then waits, removes the container, and only then reads the log stream: every line must still
/// arrive, although the log file is gone by then.
#[test]
fn a_following_log_reader_gets_every_line_when_the_container_is_removed_first() {
    use std::io::Read;
    use std::os::unix::net::UnixStream;
    if !can_run() {
        return;
    }
    let (_, img) = image();
    let d = Daemon::start("");
    for round in 0..5 {
        let name = format!("gone{round}");
        d.hb_ok(&[
            "create",
            "--name",
            &name,
            "--network",
            "none",
            img,
            "sh",
            "-c",
            "sleep 0.2; echo first; echo second",
        ]);
        d.hb_ok(&["start", &name]);
        let mut logs = UnixStream::connect(&d.socket).expect("connect");
        write!(
            logs,
            "GET /containers/{name}/logs?follow=1&stdout=1 HTTP/1.1\r\nHost: hb\r\nConnection: close\r\n\r\n"
        )
        .expect("send");
        assert_eq!(d.hb_ok(&["wait", &name]).trim(), "0");
        d.hb_ok(&["rm", &name]);
        let mut answer = Vec::new();
        logs.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        logs.read_to_end(&mut answer).expect("read the log stream");
        let text = String::from_utf8_lossy(&answer);
        assert!(
            text.contains("first") && text.contains("second"),
            "round {round}: lines lost: {text:?}"
        );
    }
}

#[test]
fn limits_oom_and_pids() {
    if !can_run() {
        return;
    }
    let (_, img) = image();
    let d = Daemon::start("");
    // A 64 MiB buffer in a 16 MiB container: the OOM killer ends it.
    let (_, stderr, code) = out(&d.hb(&[
        "run",
        "--name",
        "hog",
        "--network",
        "none",
        "-m",
        "16m",
        img,
        "dd",
        "if=/dev/zero",
        "of=/dev/null",
        "bs=64M",
        "count=1",
    ]));
    assert_eq!(code, 137, "{stderr}");
    let v = inspect(&d, "hog");
    assert_eq!(v["State"]["OOMKilled"], true, "{v}");
    assert_eq!(v["HostConfig"]["Memory"], 16 << 20);
    // Twelve background sleeps: all start without a limit (the control), not with 8.
    let script = "for i in 1 2 3 4 5 6 7 8 9 10 11 12; do sleep 2 & done; n=0; \
                  for p in /proc/[0-9]*; do n=$((n+1)); done; echo $n";
    let (stdout, _, code) =
        out(&d.hb(&["run", "--rm", "--network", "none", img, "sh", "-c", script]));
    assert_eq!((code, stdout.trim()), (0, "13"));
    let (stdout, stderr, code) = out(&d.hb(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--pids-limit",
        "8",
        img,
        "sh",
        "-c",
        script,
    ]));
    assert!(
        code != 0 && stderr.contains("fork"),
        "pids limit not enforced: {code} {stdout} {stderr}"
    );
    // The container reads its own limits at /sys/fs/cgroup (as the JVM and Node do), on v1
    // or v2, can change none of them, and sees no other cgroup.
    let script = "cat /sys/fs/cgroup/memory.max 2>/dev/null || \
                  cat /sys/fs/cgroup/memory/memory.limit_in_bytes; \
                  echo 1 > /sys/fs/cgroup/pids.max 2>/dev/null && echo WROTE; \
                  echo 1 > /sys/fs/cgroup/pids/pids.max 2>/dev/null && echo WROTE; \
                  mkdir /sys/fs/cgroup/escape 2>/dev/null && echo WROTE; \
                  ls /sys/fs/cgroup/memory.max /sys/fs/cgroup/memory 2>/dev/null | grep -c hbtest; true";
    let (stdout, stderr, code) = out(&d.hb(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-m",
        "48m",
        img,
        "sh",
        "-c",
        script,
    ]));
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines, ["50331648", "0"], "{stdout}{stderr}");
}

#[test]
fn containers_survive_a_daemon_kill9_and_nothing_leaks() {
    if !can_run() {
        return;
    }
    let (_, img) = image();
    let mut d = Daemon::start("");
    let id = d
        .hb_ok(&["run", "-d", "--name", "survivor", img, "sleep", "100"])
        .trim()
        .to_string();
    let pid = inspect(&d, "survivor")["State"]["Pid"]
        .as_i64()
        .expect("pid");
    d.kill9();
    d.spawn();
    // Still running, same process, reported so.
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    let v = inspect(&d, "survivor");
    assert_eq!(v["State"]["Status"], "running", "{v}");
    assert_eq!(v["State"]["Pid"], pid);
    assert_eq!(d.hb_ok(&["exec", "survivor", "echo", "alive"]), "alive\n");
    // An exit while the daemon is down is picked up at restart.
    d.kill9();
    // SAFETY: killing the container's process, which we started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    d.spawn();
    wait_until("exit seen after restart", || {
        inspect(&d, "survivor")["State"]["Status"] == "exited"
    });
    // Its layers are pinned again by the restarted daemon: removing the image and pruning
    // leave them, and the container starts again.
    d.hb_ok(&["rmi", "-f", img]);
    d.hb_ok(&["image", "prune"]);
    d.hb_ok(&["start", "survivor"]);
    assert_eq!(d.hb_ok(&["exec", "survivor", "echo", "again"]), "again\n");
    d.hb_ok(&["rm", "-f", "survivor"]);
    // Nothing of it remains: cgroups, dirs, mounts, netns files.
    let parent = d.cgroup_parent();
    for h in ["memory", "pids", "cpu"] {
        let p = format!("/sys/fs/cgroup/{h}/{parent}/{id}");
        assert!(!Path::new(&p).exists(), "{p} left behind");
    }
    assert!(!d.data_dir().join("containers").join(&id).exists());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(!mounts.contains(&id), "a mount of {id} is left");
    let net_dir = d.dir.path().join("net").join("ns");
    if let Ok(entries) = std::fs::read_dir(&net_dir) {
        for e in entries.flatten() {
            assert!(
                !e.file_name().to_string_lossy().contains(&id),
                "netns file left: {:?}",
                e.path()
            );
        }
    }
}

#[test]
fn bridge_network_and_published_ports() {
    if !can_run() {
        return;
    }
    let (_, img) = image();
    let d = Daemon::start("");
    let (stdout, stderr, code) = out(&d.hb(&[
        "run",
        "--rm",
        img,
        "sh",
        "-c",
        "ip -4 addr show eth0; ip route",
    ]));
    assert_eq!(code, 0, "{stderr}\n{}", d.log());
    assert!(stdout.contains("inet 10."), "{stdout}");
    assert!(stdout.contains("default via"), "{stdout}");
    // --network none: only lo.
    let (stdout, _, _) = out(&d.hb(&[
        "run",
        "--rm",
        "--network",
        "none",
        img,
        "ls",
        "/sys/class/net",
    ]));
    assert_eq!(stdout.split_whitespace().collect::<Vec<_>>(), vec!["lo"]);
    // A published port reaches busybox httpd in the container.
    let port = common::free_port();
    let publish = format!("127.0.0.1:{port}:80");
    d.hb_ok(&[
        "run", "-d", "--name", "www", "-p", &publish, img, "httpd", "-f", "-p", "80", "-h", "/www",
    ]);
    let addr = format!("127.0.0.1:{port}");
    wait_until("httpd answers", || {
        common::http_status(&addr, "/index.html") == Some(200)
    });
    let ps = d.hb_ok(&["ps"]);
    assert!(ps.contains(&format!("127.0.0.1:{port}->80/tcp")), "{ps}");
    // The port is taken now: a second container cannot publish it.
    let err = d.hb_err(&["run", "--rm", "-p", &publish, img, "true"]);
    assert!(err.contains("already") || err.contains("in use"), "{err}");
    d.hb_ok(&["rm", "-f", "www"]);
    wait_until("port released", || {
        common::http_status(&addr, "/index.html").is_none()
    });
}

/// `start` racing `rm -f` on the same containers: each container ends either removed with no
/// process left, or present; nothing is re-registered behind a removal (an orphan `sleep`),
/// and every call answers.
#[test]
fn start_racing_rm_leaves_no_orphan() {
    if !can_run() {
        return;
    }
    let (_, img) = image();
    let d = Daemon::start("");
    // A marker no other test's process carries.
    let marker = format!("{}", 40000 + std::process::id() % 20000);
    let names: Vec<String> = (0..12).map(|i| format!("race{i}")).collect();
    for n in &names {
        d.hb_ok(&[
            "create",
            "--name",
            n,
            "--network",
            "none",
            img,
            "sleep",
            &marker,
        ]);
    }
    let answers: Vec<(String, std::process::Output)> = std::thread::scope(|s| {
        let handles: Vec<_> = names
            .iter()
            .flat_map(|n| {
                let d = &d;
                [
                    s.spawn(move || (format!("start {n}"), d.hb(&["start", n]))),
                    s.spawn(move || (format!("rm -f {n}"), d.hb(&["rm", "-f", n]))),
                ]
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client thread"))
            .collect()
    });
    // Each call either did its job or found the container already gone: never an internal
    // error from a half-removed container.
    for (what, o) in &answers {
        let (_, err, code) = out(o);
        assert!(
            code == 0 || err.contains("No such container"),
            "{what}: exit {code}: {err}\n{}",
            d.log()
        );
    }
    // Whatever is left goes now; then no process of these containers may remain.
    let left = d.hb_ok(&["ps", "-a", "-q"]);
    for id in left.split_whitespace() {
        d.hb_ok(&["rm", "-f", id]);
    }
    wait_until("no orphaned container process", || {
        no_sleep_process(&marker)
    });
    assert_eq!(d.hb_ok(&["ps", "-a", "-q"]).trim(), "");
}

/// `kill -9` of the daemon while starts are in flight: after a restart every container it
/// reports can be removed, and then no process, mount, cgroup or container dir of any of them
/// is left (including ones whose create never got its record written).
#[test]
fn daemon_kill9_mid_start_leaves_nothing_behind() {
    if !can_run() {
        return;
    }
    let (_, img) = image();
    let mut d = Daemon::start("");
    let marker = format!("{}", 30000 + std::process::id() % 10000);
    let clients: Vec<std::process::Child> = (0..8)
        .map(|i| {
            Command::new(bin("hb"))
                .arg("-H")
                .arg(format!("unix://{}", d.socket.display()))
                .args([
                    "run",
                    "-d",
                    "--name",
                    &format!("mid{i}"),
                    "--network",
                    "none",
                ])
                .args([img.as_str(), "sleep", marker.as_str()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("hb")
        })
        .collect();
    // Kill once a few containers have their dirs: the others are between request and
    // create, or between create and start.
    let containers = d.data_dir().join("containers");
    wait_until("three creates under way", || {
        common::container_dirs(&containers).len() >= 3
    });
    d.kill9();
    for mut c in clients {
        let _ = c.wait();
    }
    d.spawn();
    let left = d.hb_ok(&["ps", "-a", "-q"]);
    eprintln!(
        "{} of 8 containers recorded when the daemon died",
        left.split_whitespace().count()
    );
    for id in left.split_whitespace() {
        d.hb_ok(&["rm", "-f", id]);
    }
    wait_until("no container process left", || no_sleep_process(&marker));
    let start = Instant::now();
    while !common::container_dirs(&containers).is_empty() {
        if start.elapsed() > Duration::from_secs(15) {
            let left: Vec<String> = common::all_files(&containers)
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            panic!("container files left: {left:#?}\n{}", d.log());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(
        !mounts.contains(&containers.display().to_string()),
        "a container mount is left"
    );
    let parent = d.cgroup_parent();
    for h in ["memory", "pids"] {
        let p = Path::new("/sys/fs/cgroup").join(h).join(&parent);
        let children =
            std::fs::read_dir(&p).map_or(0, |e| e.flatten().filter(|e| e.path().is_dir()).count());
        assert_eq!(children, 0, "cgroups left under {}", p.display());
    }
}

#[test]
fn a_network_namespace_serves_the_next_container_only_when_untouched() {
    if !can_run() {
        return;
    }
    let (_, img) = image();
    let d = Daemon::start("");
    // Each run prints its namespace, then does `extra`.
    let run = |flags: &[&str], extra: &str| {
        let script = format!("readlink /proc/self/ns/net; {extra}");
        let mut args = vec!["run", "--rm", "--network", "none"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&[img.as_str(), "sh", "-c", &script]);
        d.hb_ok(&args).lines().next().unwrap_or("").to_string()
    };
    let first = run(&[], "true");
    // It opened no socket and sent no packet: the next container gets the same namespace.
    assert_eq!(run(&[], "true"), first, "{}", d.log());
    // A packet over lo leaves a trace (counters, maybe sockets in TIME_WAIT): never reused.
    let pinged = run(&[], "ping -c 1 -W 1 127.0.0.1 >/dev/null");
    assert_eq!(pinged, first, "the untouched one is handed out again");
    let after_ping = run(&[], "true");
    assert_ne!(
        after_ping, pinged,
        "a namespace that carried a packet came back"
    );
    // A container that could change the namespace's settings never gives it back either, even
    // when it changed nothing.
    assert_eq!(run(&["--cap-add", "NET_ADMIN"], "true"), after_ping);
    let after_admin = run(&[], "true");
    assert_ne!(
        after_admin, after_ping,
        "a NET_ADMIN container's namespace came back"
    );
    // And what is handed out is as new: only lo, silent, no socket.
    let state = d.hb_ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        img.as_str(),
        "sh",
        "-c",
        "ls /sys/class/net; cat /sys/class/net/lo/statistics/rx_packets; head -1 /proc/net/sockstat",
    ]);
    assert_eq!(state, "lo\n0\nsockets: used 0\n");
}
