//! A second client library against hyperboxd: docker-py (the Docker SDK for Python) runs
//! `tests/docker_py/session.py` over the unix socket and over TCP. It reaches the API the way
//! the docker CLI does not: a demultiplexed `exec_run`, `stats(stream=False)`, Python-style
//! booleans in queries, filters, SDK exceptions from Docker's error JSON, decoded events.
//! Needs root, a static busybox and docker-py (`.ci/run` installs python3-docker).

mod common;

use std::path::Path;
use std::process::Command;

use common::busybox::{can_run, daemon_for_image};

/// A python3 that imports `docker`.
fn python_with_docker_py() -> String {
    for py in ["python3", "/usr/bin/python3"] {
        let ok = Command::new(py)
            .args(["-c", "import docker"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return py.to_string();
        }
    }
    panic!("no python3 with docker-py: apt-get install python3-docker (.ci/run does it)");
}

fn session(base_url: &str, image: &str, log: impl Fn() -> String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/docker_py/session.py");
    let out = Command::new(python_with_docker_py())
        .arg(&script)
        .args([base_url, image])
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("docker-py session passed"),
        "docker-py over {base_url}: {}\nstdout:\n{stdout}\nstderr:\n{}\ndaemon log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        log()
    );
}

#[test]
fn docker_py_drives_hyperboxd() {
    if !can_run() {
        return;
    }
    let (d, img) = daemon_for_image("");
    session(&format!("unix://{}", d.socket.display()), img, || d.log());
    session(&format!("tcp://{}", d.tcp_addr), img, || d.log());
}
