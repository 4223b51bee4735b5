//! The real docker CLI against hyperboxd: every docker client found on the machine (the 28.x
//! client in /usr/local/bin and Debian's 20.10 in /usr/bin; `.ci/run` installs the latter) runs
//! the same session over the unix socket and over TCP. Needs root and a static busybox, like
//! the container tests.

mod common;

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::busybox::{can_run, daemon_for_image};
use common::docker::{clients, Docker};

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `docker events` from `since` up to the next second, with one filter and a format.
fn events_since(docker: &Docker, since: &str, filter: &str, format: &str) -> String {
    let until = (now_secs() + 1).to_string();
    docker.ok(&[
        "events", "--since", since, "--until", &until, "--filter", filter, "--format", format,
    ])
}

/// The whole session a user of the docker CLI runs, against one daemon.
fn session(docker: &Docker, img: &str, tag: &str) {
    let v = docker.ok(&["version", "--format", "{{.Server.APIVersion}}"]);
    assert_eq!(v.trim(), "1.43", "server API version");
    let info = docker.ok(&["info", "--format", "{{.Driver}} {{.ServerVersion}}"]);
    assert!(info.starts_with("hyperbox"), "{info}");

    // Images: pull with progress, list, tag, inspect, save/load, rmi.
    let pulled = docker.ok(&["pull", img]);
    assert!(
        pulled.contains("Pull complete") || pulled.contains("Already exists"),
        "{pulled}"
    );
    assert!(pulled.contains("Digest: sha256:"), "{pulled}");
    let images = docker.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(images.contains(&format!("{img}:latest")), "{images}");
    let local = format!("hbtest/{tag}:v1");
    docker.ok(&["tag", img, &local]);
    let id = docker.ok(&["image", "inspect", "--format", "{{.Id}}", &local]);
    assert!(id.trim().starts_with("sha256:"), "{id}");
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = dir.path().join("img.tar");
    let archive = archive.to_str().expect("utf-8 path");
    docker.ok(&["save", "-o", archive, &local]);
    let untagged = docker.ok(&["rmi", &local]);
    assert!(untagged.contains("Untagged"), "{untagged}");
    let loaded = docker.ok(&["load", "-i", archive]);
    assert!(loaded.contains(&local), "{loaded}");
    docker.ok(&["rmi", &local]);

    let since = now_secs().to_string();
    // run in the foreground: output, exit code, --rm, env, workdir, user, entrypoint, a bind
    // mount, limits, no network.
    let host_dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(host_dir.path().join("f"), "from-host").expect("write");
    let bind = format!("{}:/v:ro", host_dir.path().display());
    let (code, out, err) = docker.code(&[
        "run",
        "--rm",
        "-e",
        "A=1",
        "-w",
        "/tmp",
        "-u",
        "1000",
        "--entrypoint",
        "/bin/sh",
        "-v",
        &bind,
        "--memory",
        "64m",
        "--cpus",
        "0.5",
        "--network",
        "none",
        img,
        "-c",
        "echo $A $(pwd) $(id -u) $(cat /v/f); echo to-err >&2; exit 7",
    ]);
    assert_eq!(code, 7, "stdout {out:?} stderr {err:?}");
    assert_eq!(out, "1 /tmp 1000 from-host\n");
    assert!(err.contains("to-err"), "{err:?}");
    // -i: stdin reaches the container.
    let echoed = docker.ok_with(&["run", "--rm", "-i", img, "cat"], Some(b"piped in\n"));
    assert_eq!(echoed, "piped in\n");
    // Engine refusals exit 125, a missing command 127.
    let (code, _, err) = docker.code(&["run", "--rm", img, "/no/such/binary"]);
    assert_eq!(code, 127, "{err}");
    let (code, _, err) = docker.code(&["run", "--rm", "127.0.0.1:1/hbtest/absent:none", "true"]);
    assert_eq!(code, 125, "{err}");

    // Detached with a published port, then everything one does to a running container.
    let name = format!("web-{tag}");
    let port = common::free_port();
    let publish = format!("127.0.0.1:{port}:80");
    docker.ok(&[
        "run",
        "-d",
        "--name",
        &name,
        "-p",
        &publish,
        img,
        "sh",
        "-c",
        "echo started; exec httpd -f -p 80 -h /www",
    ]);
    let ps = docker.ok(&["ps", "--format", "{{.Names}} {{.Status}}"]);
    assert!(ps.contains(&format!("{name} Up")), "{ps}");
    let served = wait_for_http(&format!("127.0.0.1:{port}"));
    assert!(served.contains("hello from hb"), "{served}");
    let logs = docker.ok(&["logs", &name]);
    assert_eq!(logs, "started\n");
    let execd = docker.ok(&["exec", &name, "echo", "in-exec"]);
    assert_eq!(execd, "in-exec\n");
    let cat = docker.ok_with(&["exec", "-i", &name, "cat"], Some(b"exec stdin\n"));
    assert_eq!(cat, "exec stdin\n");
    let top = docker.ok(&["top", &name]);
    assert!(top.contains("httpd"), "{top}");
    let stats = docker.ok(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.Name}} {{.PIDs}}",
        &name,
    ]);
    assert!(stats.starts_with(&name), "{stats}");
    let state = docker.ok(&[
        "inspect",
        "--format",
        "{{.State.Status}} {{.Config.Image}}",
        &name,
    ]);
    assert_eq!(state.trim(), format!("running {img}"));
    docker.ok(&["stop", "-t", "1", &name]);
    let waited = docker.ok(&["wait", &name]);
    assert!(waited.trim().parse::<i32>().is_ok(), "{waited}");
    docker.ok(&["rm", &name]);

    // logs -f follows until the container ends; kill; rm -f of a running container.
    let follow = format!("follow-{tag}");
    docker.ok(&[
        "run",
        "-d",
        "--name",
        &follow,
        img,
        "sh",
        "-c",
        "for i in 1 2 3; do echo line$i; sleep 0.2; done",
    ]);
    let followed = docker.ok(&["logs", "-f", &follow]);
    assert_eq!(followed, "line1\nline2\nline3\n");
    let sleeper = format!("sleeper-{tag}");
    docker.ok(&["run", "-d", "--name", &sleeper, img, "sleep", "100"]);
    docker.ok(&["kill", &sleeper]);
    let code = docker.ok(&["wait", &sleeper]);
    assert_eq!(code.trim(), "137");
    docker.ok(&["start", &sleeper]);
    docker.ok(&["rm", "-f", &sleeper]);

    // create, start -a, attach.
    let created = format!("created-{tag}");
    docker.ok(&["create", "--name", &created, img, "echo", "from-create"]);
    let started = docker.ok(&["start", "-a", &created]);
    assert_eq!(started, "from-create\n");
    let attached = format!("attached-{tag}");
    docker.ok(&[
        "run",
        "-d",
        "--name",
        &attached,
        img,
        "sh",
        "-c",
        "sleep 1; echo late",
    ]);
    let out = docker.ok(&["attach", &attached]);
    assert_eq!(out, "late\n");

    // events saw the lifecycle.
    let events = events_since(
        docker,
        &since,
        &format!("container={created}"),
        "{{.Action}}",
    );
    let actions: Vec<&str> = events.lines().collect();
    assert_eq!(actions, ["create", "start", "die"], "{events}");

    // df, prunes.
    let df = docker.ok(&["system", "df"]);
    assert!(df.contains("Images"), "{df}");
    let pruned = docker.ok(&["container", "prune", "-f"]);
    assert!(pruned.contains("Total reclaimed space"), "{pruned}");
    let left = docker.ok(&["ps", "-a", "--format", "{{.Names}}"]);
    assert!(
        !left.contains(&created) && !left.contains(&attached),
        "{left}"
    );
    docker.ok(&["image", "prune", "-f"]);

    // Something HyperBox does not offer: Docker's error, no hang.
    let (code, _, err) = docker.code(&["volume", "create", "v1"]);
    assert_ne!(code, 0);
    assert!(err.contains("Error response from daemon"), "{err}");
}

/// GET / over HTTP/1.0 until it answers (the server may need a moment to listen).
fn wait_for_http(addr: &str) -> String {
    use std::io::Read;
    let start = Instant::now();
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(addr) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            if s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").is_ok() {
                let mut body = String::new();
                if s.read_to_string(&mut body).is_ok() && !body.is_empty() {
                    return body;
                }
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{addr} never answered"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn docker_cli_drives_hyperboxd_over_the_unix_socket() {
    if !can_run() {
        return;
    }
    let (d, img) = daemon_for_image("");
    for (i, cli) in clients().iter().enumerate() {
        let docker = Docker::new(cli, format!("unix://{}", d.socket.display()), &d);
        session(&docker, img, &format!("u{i}"));
    }
}

#[test]
fn docker_cli_drives_hyperboxd_over_tcp() {
    if !can_run() {
        return;
    }
    let (d, img) = daemon_for_image("");
    for (i, cli) in clients().iter().enumerate() {
        let docker = Docker::new(cli, format!("tcp://{}", d.tcp_addr), &d);
        session(&docker, img, &format!("t{i}"));
    }
}

#[test]
fn docker_run_tty_gives_a_terminal_and_the_exit_code() {
    if !can_run() {
        return;
    }
    let (d, img) = daemon_for_image("");
    for (i, cli) in clients().iter().enumerate() {
        let docker = Docker::new(cli, format!("unix://{}", d.socket.display()), &d);
        // `script` gives the CLI a terminal, as a user's shell would.
        let out = docker.in_terminal(&[
            "run",
            "--rm",
            "-t",
            img,
            "sh",
            "-c",
            "test -t 0 && test -t 1 && echo tty-yes; tty; exit 4",
        ]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(4), "{text}\n{}", d.log());
        assert!(text.contains("tty-yes"), "{text}");
        // A TTY turns \n into \r\n: the stream is raw terminal output, not multiplexed frames.
        assert!(text.contains("tty-yes\r"), "{text:?}");
        // The pty is the container's own (its devpts), so its name resolves inside.
        assert!(text.contains("\n/dev/pts/0\r"), "{text:?}");
        // docker exec -t: the exec's pty is allocated in the container as well.
        let name = format!("exec-tty-{i}");
        docker.ok(&["run", "-d", "--name", &name, img, "sleep", "100"]);
        let out = docker.in_terminal(&["exec", "-t", &name, "tty"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{text}\n{}", d.log());
        assert_eq!(text.trim(), "/dev/pts/0", "{text:?}");
        docker.ok(&["rm", "-f", &name]);
    }
}

/// One hijacked attach on the API socket: sends `input`, half-closes, and reads the multiplexed
/// output until it contains `expect` (or 10 s pass). Returns what arrived.
fn raw_attach(socket: &Path, id: &str, input: &[u8], expect: &str) -> String {
    use std::io::Read;
    use std::os::unix::net::UnixStream;
    let mut s = UnixStream::connect(socket).expect("connect to the API socket");
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("read timeout");
    write!(
        s,
        "POST /v1.43/containers/{id}/attach?stream=1&stdin=1&stdout=1&stderr=1 HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: 0\r\n\r\n"
    )
    .expect("attach request");
    let mut got = Vec::new();
    let start = Instant::now();
    let mut sent = false;
    while start.elapsed() < Duration::from_secs(10) {
        let mut buf = [0u8; 4096];
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("attach stream: {e}"),
        }
        if !sent && got.windows(4).any(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got);
            assert!(head.starts_with("HTTP/1.1 101"), "{head}");
            s.write_all(input).expect("stdin");
            s.shutdown(std::net::Shutdown::Write).expect("half-close");
            sent = true;
        }
        if String::from_utf8_lossy(&got).contains(expect) {
            break;
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// Where dockerd has a rule for the edges of the lifecycle, hyperboxd follows it: start on a
/// running container and stop on a stopped one are 304 (the CLI succeeds), `stop -t -1` waits
/// for the process however long it takes, and a container whose stdin is not StdinOnce keeps
/// its stdin open when an attached client's input ends.
#[test]
fn lifecycle_edges_follow_dockerd() {
    if !can_run() {
        return;
    }
    let (d, img) = daemon_for_image("");
    let cli = &clients()[0];
    let docker = Docker::new(cli, format!("unix://{}", d.socket.display()), &d);
    let api = |method: &str, path: &str| -> u16 {
        use std::io::Read;
        let mut s = std::os::unix::net::UnixStream::connect(&d.socket).expect("connect");
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        )
        .expect("request");
        let mut answer = String::new();
        s.read_to_string(&mut answer).expect("answer");
        answer
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    };

    // 304 both ways, and the CLI is content with it.
    docker.ok(&["run", "-d", "--name", "edge-run", img, "sleep", "60"]);
    assert_eq!(api("POST", "/v1.43/containers/edge-run/start"), 304);
    assert_eq!(docker.ok(&["start", "edge-run"]).trim(), "edge-run");
    docker.ok(&["kill", "edge-run"]);
    docker.ok(&["wait", "edge-run"]);
    assert_eq!(api("POST", "/v1.43/containers/edge-run/stop"), 304);
    assert_eq!(docker.ok(&["stop", "edge-run"]).trim(), "edge-run");

    // -t -1: no SIGKILL; the TERM handler's own exit code comes through (137 would mean killed).
    docker.ok(&[
        "run",
        "-d",
        "--name",
        "edge-term",
        img,
        "sh",
        "-c",
        "trap 'sleep 2; exit 3' TERM; while true; do sleep 0.1; done",
    ]);
    std::thread::sleep(Duration::from_millis(300));
    docker.ok(&["stop", "-t", "-1", "edge-term"]);
    let code = docker.ok(&["inspect", "-f", "{{.State.ExitCode}}", "edge-term"]);
    assert_eq!(code.trim(), "3", "{}", d.log());

    // `run -d -i` does not set StdinOnce: a client's end of input leaves stdin open.
    let id = docker.ok(&["run", "-d", "-i", "--name", "edge-cat", img, "cat"]);
    let id = id.trim();
    let first = raw_attach(&d.socket, id, b"one\n", "one");
    assert!(first.contains("one"), "{first:?}");
    std::thread::sleep(Duration::from_millis(500));
    let running = docker.ok(&["inspect", "-f", "{{.State.Running}}", "edge-cat"]);
    assert_eq!(running.trim(), "true", "cat lost its stdin");
    let second = raw_attach(&d.socket, id, b"two\n", "two");
    assert!(second.contains("two"), "{second:?}");
    // The CLI reads an exec's exit code once, right after its stream ends: it must be there.
    for i in 0..20 {
        let (code, _, err) = docker.code(&[
            "exec",
            "edge-cat",
            "sh",
            "-c",
            &format!("exit {}", 3 + i % 5),
        ]);
        assert_eq!(code, 3 + i % 5, "exec {i}: {err}");
    }
    // With StdinOnce (what `docker run -i` in the foreground sets) input's end is stdin's end.
    let out = docker.ok_with(&["run", "--rm", "-i", img, "cat"], Some(b"once\n"));
    assert_eq!(out, "once\n");
    // Every run's start event comes before its die, however quickly the process exits (the
    // monitor's answer to the start and its exit event arrive on different connections; the
    // exit used to win now and then, and `die` came first).
    let since = now_secs().to_string();
    let mut quick = Vec::new();
    for _ in 0..20 {
        quick.push(
            docker
                .ok(&["run", "-d", "--network", "none", img, "true"])
                .trim()
                .to_string(),
        );
    }
    for id in &quick {
        docker.ok(&["wait", id]);
    }
    let events = events_since(
        &docker,
        &since,
        "type=container",
        "{{.Actor.ID}} {{.Action}}",
    );
    for id in &quick {
        let actions: Vec<&str> = events
            .lines()
            .filter_map(|l| l.strip_prefix(id.as_str()))
            .map(str::trim)
            .collect();
        assert_eq!(actions, ["create", "start", "die"], "{id}:\n{events}");
    }
    docker.ok(&[
        &["rm"][..],
        &quick.iter().map(String::as_str).collect::<Vec<_>>(),
    ]
    .concat());

    // A `--rm` container survives `docker restart` with its files (its overlay, mounted
    // volatile, mounts again over the same work dir); the stop after that removes it.
    docker.ok(&[
        "run",
        "-d",
        "--rm",
        "--name",
        "edge-rm",
        img,
        "sh",
        "-c",
        "echo kept >> /f; sleep 60",
    ]);
    docker.ok(&["restart", "-t", "0", "edge-rm"]);
    let seen = docker.ok(&["exec", "edge-rm", "cat", "/f"]);
    assert_eq!(seen, "kept\nkept\n", "{}", d.log());
    docker.ok(&["stop", "-t", "0", "edge-rm"]);
    let gone = || docker.code(&["inspect", "edge-rm"]).0 != 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !gone() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        gone(),
        "a stopped --rm container is still there\n{}",
        d.log()
    );
    docker.ok(&["rm", "-f", "edge-run", "edge-term", "edge-cat"]);
    // An endpoint answered without reading the request's body must still answer cleanly: the
    // connection used to be reset under the CLI, which then said "broken pipe" (about one
    // call in ten here).
    for i in 0..40 {
        let (code, _, err) = docker.code(&["volume", "create", "v1"]);
        assert!(
            code != 0 && err.contains("Error response from daemon"),
            "volume create {i}: {err}"
        );
    }
}

/// `docker run --device`: the node appears (also at another path, with fewer permissions) and
/// the devices cgroup lets exactly it through; without the flag the same node made by mknod
/// cannot be opened. A missing host device and a path outside /dev are refused.
#[test]
fn run_with_device_gives_that_device_only() {
    if !can_run() {
        return;
    }
    let (d, img) = daemon_for_image("");
    let cli = &clients()[0];
    let docker = Docker::new(cli, format!("unix://{}", d.socket.display()), &d);
    // /dev/fuse (char 10:229): outside Docker's default device list, and opening it needs no
    // capability (unlike /dev/kmsg or /dev/mem).
    if !Path::new("/dev/fuse").exists() {
        eprintln!("skipping: no /dev/fuse on this host (modprobe fuse)");
        return;
    }
    let out = docker.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--device",
        "/dev/fuse",
        img,
        "sh",
        "-c",
        "test -c /dev/fuse && exec 3<>/dev/fuse && echo opened",
    ]);
    assert_eq!(out.trim(), "opened");
    let out = docker.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--device",
        "/dev/fuse:/dev/sub/f:r",
        img,
        "sh",
        "-c",
        "(exec 3</dev/sub/f) && echo read; (exec 4>/dev/sub/f) 2>/dev/null && echo wrote; true",
    ]);
    assert_eq!(out.trim(), "read");
    let out = docker.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        img,
        "sh",
        "-c",
        "mknod /dev/fuse c 10 229; (exec 3<>/dev/fuse) 2>/dev/null && echo opened; true",
    ]);
    assert_eq!(
        out.trim(),
        "",
        "a device outside the allowed list could be opened"
    );
    let (code, _, err) =
        docker.code(&["run", "--rm", "--device", "/dev/not-a-device", img, "true"]);
    assert_eq!(code, 125);
    assert!(err.contains("error gathering device information"), "{err}");
    let (code, _, err) = docker.code(&["run", "--rm", "--device", "/dev/fuse:/etc/f", img, "true"]);
    assert_eq!(code, 125);
    assert!(err.contains("under /dev"), "{err}");
}
