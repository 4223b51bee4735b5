//! Test harness: a real distribution registry (Debian's `docker-registry`) on 127.0.0.1 and a
//! free port, a real `hyperboxd` on a temporary socket and data dir, the real `hb` binary, and
//! images built here from synthetic files and pushed with `oci-client`. Also a fault-injecting
//! proxy that sits between hyperboxd and the registry.

#![allow(dead_code)]

pub mod busybox;
pub mod docker;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for {what}");
}

/// A running `docker-registry` on 127.0.0.1, killed on drop.
pub struct Registry {
    pub addr: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub fn start() -> Registry {
        let bin = which("docker-registry").unwrap_or_else(|| {
            panic!("docker-registry is not installed: `apt-get install docker-registry` (.ci/run does it)")
        });
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let cfg = dir.path().join("config.yml");
        std::fs::write(
            &cfg,
            format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
                dir.path().join("data").display()
            ),
        )
        .expect("write registry config");
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = spawn_tied_to_process(cmd).expect("start docker-registry");
        let a = addr.clone();
        wait_until("the registry", Duration::from_secs(20), || {
            http_status(&a, "/v2/") == Some(200)
        });
        Registry {
            addr,
            child,
            _dir: dir,
        }
    }
}

/// Spawns `cmd` so that it is killed when this test process ends, even when no destructor
/// runs (a registry shared by a whole test binary lives in a static). PR_SET_PDEATHSIG fires
/// when the spawning *thread* ends, so the spawning is done by one thread that lives as long
/// as the process.
fn spawn_tied_to_process(cmd: Command) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt;
    use std::sync::mpsc;
    type Job = (Command, mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: std::sync::OnceLock<Mutex<mpsc::Sender<Job>>> = std::sync::OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::spawn(move || {
            for (mut cmd, reply) in rx {
                // SAFETY: prctl is async-signal-safe and touches only the child.
                unsafe {
                    cmd.pre_exec(|| {
                        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                        Ok(())
                    });
                }
                let _ = reply.send(cmd.spawn());
            }
        });
        Mutex::new(tx)
    });
    let (reply, answer) = mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send((cmd, reply))
        .map_err(|_| std::io::Error::other("spawner thread gone"))?;
    answer
        .recv()
        .map_err(|_| std::io::Error::other("spawner thread gone"))?
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(bin))
            .find(|p| p.is_file())
    })
}

/// GET over plain HTTP/1.0; the status code.
pub fn http_status(addr: &str, path: &str) -> Option<u16> {
    try_http_get(addr, path, Duration::from_secs(5)).map(|(status, _)| status)
}

/// GET over plain HTTP/1.0 (so the body is never chunked); (status, body).
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    try_http_get(addr, path, Duration::from_secs(30))
        .unwrap_or_else(|| panic!("GET http://{addr}{path} got no answer"))
}

fn try_http_get(addr: &str, path: &str, timeout: Duration) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let raw = String::from_utf8_lossy(&raw);
    let status = raw.split_whitespace().nth(1)?.parse().ok()?;
    let body = raw
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Some((status, body))
}

/// The value of the sample `name` (labels included, as written) in a Prometheus exposition.
pub fn metric_sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in\n{text}"))
}

/// Where cargo put the binaries of this workspace.
pub fn bin(name: &str) -> PathBuf {
    let hb = PathBuf::from(env!("CARGO_BIN_EXE_hb"));
    let p = hb.with_file_name(name);
    assert!(
        p.exists(),
        "{} is missing: `cargo build --workspace` first (scripts/test.sh does)",
        p.display()
    );
    p
}

/// The window size [`in_terminal`] gives its terminal.
pub const TERMINAL_ROWS: u16 = 33;
/// See [`TERMINAL_ROWS`].
pub const TERMINAL_COLS: u16 = 77;

/// Runs `argv` under `script(1)`, which gives it a terminal as a user's shell would (sized
/// [`TERMINAL_ROWS`] x [`TERMINAL_COLS`] first), stdin from /dev/null. The output is what the
/// terminal showed (`\r\n` line ends). A hang becomes a failure after a minute (`timeout`).
pub fn in_terminal(argv: &[String]) -> Output {
    // script runs its command through `sh -c`: quote every word.
    let quote = |w: &String| format!("'{}'", w.replace('\'', "'\\''"));
    let line = format!(
        "stty rows {TERMINAL_ROWS} cols {TERMINAL_COLS}; exec {}",
        argv.iter().map(quote).collect::<Vec<_>>().join(" ")
    );
    Command::new("timeout")
        .args(["60", "script", "-qec", &line, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("script (bsdutils) and timeout (coreutils)")
}

/// Runs `c` with `input` on stdin (else /dev/null) and its output captured. A run that takes
/// more than a minute is killed and fails the test with `daemon`'s log; `what` names it there.
pub fn run_bounded(mut c: Command, input: Option<&[u8]>, what: &str, daemon: &Daemon) -> Output {
    c.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = c.spawn().unwrap_or_else(|e| panic!("starting {what}: {e}"));
    if let Some(data) = input {
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(data).expect("write stdin");
    }
    let start = Instant::now();
    while child.try_wait().expect("try_wait").is_none() {
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("{what} hung\ndaemon log:\n{}", daemon.log());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("output of {what}: {e}"))
}

/// A running hyperboxd with its own data dir and socket, killed on drop.
static NEXT_NET: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

pub struct Daemon {
    pub dir: tempfile::TempDir,
    /// Where the daemon keeps its data (inside `dir` unless a test moves it).
    pub data_dir: PathBuf,
    pub socket: PathBuf,
    pub child: Option<Child>,
    pub extra_config: String,
    /// The API's TCP address (`[daemon] listen_addr`).
    pub tcp_addr: String,
    /// The metrics address (`[monitoring] metrics_addr`).
    pub metrics_addr: String,
}

impl Daemon {
    pub fn start(extra_config: &str) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut d = Daemon {
            socket: dir.path().join("hb.sock"),
            data_dir: dir.path().join("data"),
            dir,
            child: None,
            extra_config: extra_config.to_string(),
            tcp_addr: format!("127.0.0.1:{}", free_port()),
            metrics_addr: format!("127.0.0.1:{}", free_port()),
        };
        d.spawn();
        d
    }

    /// `[daemon] cgroup_parent` of this daemon (its containers' cgroups live below it).
    pub fn cgroup_parent(&self) -> String {
        let tag = self
            .dir
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().replace('.', ""))
            .unwrap_or_default();
        format!("hbtest-{tag}")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("hyperbox.toml")
    }

    /// (Re)starts the daemon on the same data dir.
    pub fn spawn(&mut self) {
        // Each test daemon gets its own cgroup parent, so one daemon's stale-cgroup cleanup
        // never touches another's containers.
        let mut ours = format!(
            "data_dir = \"{}\"\nsocket = \"{}\"\ncgroup_parent = \"{}\"\n",
            self.data_dir.display(),
            self.socket.display(),
            self.cgroup_parent()
        );
        if !self.extra_config.contains("listen_addr") {
            ours.push_str(&format!("listen_addr = \"{}\"\n", self.tcp_addr));
        }
        // And its own bridge and subnet, so parallel tests never share addresses.
        let n = NEXT_NET.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let net = format!(
            "[networking]\nbridge_name = \"hbt{:x}x{n}\"\nbridge_subnet = \"10.{}.{}.0/24\"\n",
            std::process::id() % 0xffff,
            200 + std::process::id() % 50,
            n % 250
        );
        let mut extra = if self.extra_config.contains("[networking]") {
            self.extra_config.replacen("[networking]\n", &net, 1)
        } else {
            format!("{}\n{net}", self.extra_config)
        };
        // Its own metrics port too.
        if !extra.contains("metrics_addr") {
            let m = format!("[monitoring]\nmetrics_addr = \"{}\"\n", self.metrics_addr);
            extra = if extra.contains("[monitoring]") {
                extra.replacen("[monitoring]\n", &m, 1)
            } else {
                format!("{extra}\n{m}")
            };
        }
        // Keys of ours go into the test's [daemon] section when it has one (a key appears once).
        let config = if extra.contains("[daemon]") {
            extra.replacen("[daemon]\n", &format!("[daemon]\n{ours}"), 1)
        } else {
            format!("[daemon]\n{ours}{extra}\n")
        };
        std::fs::write(self.config_path(), config).expect("write config");
        let log = std::fs::File::create(self.dir.path().join("daemon.log")).expect("log file");
        let child = Command::new(bin("hyperboxd"))
            .arg("--config")
            .arg(self.config_path())
            .env("HYPERBOX_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start hyperboxd");
        self.child = Some(child);
        let sock = self.socket.clone();
        let child = self.child.as_mut().expect("child");
        let start = Instant::now();
        loop {
            if std::os::unix::net::UnixStream::connect(&sock).is_ok() {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("hyperboxd exited at start ({status}): {}", self.log());
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "hyperboxd did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// SIGKILL, as a crash.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Runs `hb` against this daemon.
    pub fn hb(&self, args: &[&str]) -> Output {
        Command::new(bin("hb"))
            .arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run hb")
    }

    /// Runs `hb` with a terminal of [`TERMINAL_ROWS`] x [`TERMINAL_COLS`] on its stdio (see
    /// [`in_terminal`]), for `-t`.
    pub fn hb_in_terminal(&self, args: &[&str]) -> Output {
        let mut line = vec![
            bin("hb").display().to_string(),
            "-H".into(),
            format!("unix://{}", self.socket.display()),
        ];
        line.extend(args.iter().map(|a| a.to_string()));
        in_terminal(&line)
    }

    /// Runs `hb`, asserting success; returns stdout.
    pub fn hb_ok(&self, args: &[&str]) -> String {
        let out = self.hb(args);
        assert!(
            out.status.success(),
            "hb {args:?} failed ({}):\nstdout: {}\nstderr: {}\ndaemon log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `hb`, asserting failure; returns stderr.
    pub fn hb_err(&self, args: &[&str]) -> String {
        let out = self.hb(args);
        assert!(
            !out.status.success(),
            "hb {args:?} should have failed:\nstdout: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn images_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.hb_ok(&["images", "--format", "json"])).expect("images json")
    }

    pub fn df_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.hb_ok(&["system", "df", "--format", "json"])).expect("df json")
    }
}

impl Daemon {
    /// The monitor's pid, from the pid file it writes beside its socket.
    pub fn monitor_pid(&self) -> Option<i32> {
        let p = self.dir.path().join("monitor.pid");
        std::fs::read_to_string(p).ok()?.trim().parse().ok()
    }

    /// Stops the monitor (SIGTERM: it kills its containers and releases what they hold).
    pub fn stop_monitor(&self) {
        if let Some(pid) = self.monitor_pid() {
            // SAFETY: kill with a pid read from the monitor's own pid file.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let start = Instant::now();
            while std::path::Path::new(&format!("/proc/{pid}")).exists()
                && start.elapsed() < Duration::from_secs(10)
            {
                // Reap it if it is our grandchild-turned-child; otherwise just wait.
                std::thread::sleep(Duration::from_millis(10));
                if std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z "))
                {
                    break;
                }
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.stop_monitor();
    }
}

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Deterministic pseudo-random bytes (xorshift), so images are reproducible.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A layer tar from (path, contents) pairs (directories implied).
pub fn layer_tar(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o755);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        b.append_data(&mut h, path, data.as_slice())
            .expect("tar append");
    }
    b.into_inner().expect("tar finish")
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

/// An image to push: layers as uncompressed tars, compressed as asked.
pub struct TestImage {
    pub layers: Vec<Vec<u8>>,
    pub compression: &'static str, // "gzip" | "zstd" | "none"
    pub architecture: &'static str,
}

pub struct Pushed {
    pub manifest_digest: String,
    pub config_digest: String,
    pub manifest: Vec<u8>,
    pub layer_digests: Vec<String>,
}

fn client() -> oci_client::Client {
    oci_client::Client::new(oci_client::client::ClientConfig {
        protocol: oci_client::client::ClientProtocol::Http,
        ..Default::default()
    })
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Pushes blobs and a Docker v2 schema 2 manifest (or OCI when `oci`) to `registry/repo:tag`.
pub fn push(registry: &str, repo_tag: &str, img: &TestImage) -> Pushed {
    let reference: oci_client::Reference = format!("{registry}/{repo_tag}").parse().expect("ref");
    let rt = runtime();
    let c = client();
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    let mut layer_digests = Vec::new();
    for l in &img.layers {
        diff_ids.push(sha256(l));
        let (blob, media) = match img.compression {
            "gzip" => (gzip(l), "application/vnd.docker.image.rootfs.diff.tar.gzip"),
            "zstd" => (
                zstd::encode_all(l.as_slice(), 3).expect("zstd"),
                "application/vnd.oci.image.layer.v1.tar+zstd",
            ),
            _ => (l.clone(), "application/vnd.oci.image.layer.v1.tar"),
        };
        let d = sha256(&blob);
        rt.block_on(c.push_blob(&reference, blob.clone(), &d))
            .expect("push layer");
        descs.push(serde_json::json!({"mediaType": media, "digest": d, "size": blob.len()}));
        layer_digests.push(d);
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": img.architecture, "os": "linux",
        "created": "2026-01-02T03:04:05Z",
        "config": {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .expect("config json");
    let config_digest = sha256(&config);
    rt.block_on(c.push_blob(&reference, config.clone(), &config_digest))
        .expect("push config");
    let oci = img.compression == "zstd" || img.compression == "none";
    let (mt, cmt) = if oci {
        (
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.oci.image.config.v1+json",
        )
    } else {
        (
            "application/vnd.docker.distribution.manifest.v2+json",
            "application/vnd.docker.container.image.v1+json",
        )
    };
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": mt,
        "config": {"mediaType": cmt, "digest": config_digest, "size": config.len()},
        "layers": descs,
    }))
    .expect("manifest json");
    let manifest_digest = sha256(&manifest);
    rt.block_on(c.push_manifest_raw(
        &reference,
        manifest.clone(),
        http::HeaderValue::from_static(if oci {
            "application/vnd.oci.image.manifest.v1+json"
        } else {
            "application/vnd.docker.distribution.manifest.v2+json"
        }),
    ))
    .expect("push manifest");
    Pushed {
        manifest_digest,
        config_digest,
        manifest,
        layer_digests,
    }
}

/// Pushes an OCI index over already-pushed manifests: (digest, size, arch).
pub fn push_index(registry: &str, repo_tag: &str, entries: &[(String, usize, &str)]) -> String {
    let reference: oci_client::Reference = format!("{registry}/{repo_tag}").parse().expect("ref");
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": entries.iter().map(|(d, s, a)| serde_json::json!({
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "digest": d, "size": s, "platform": {"os": "linux", "architecture": a}
        })).collect::<Vec<_>>(),
    }))
    .expect("index json");
    runtime()
        .block_on(client().push_manifest_raw(
            &reference,
            index.clone(),
            http::HeaderValue::from_static("application/vnd.oci.image.index.v1+json"),
        ))
        .expect("push index");
    sha256(&index)
}

/// What the fault proxy does to a request whose path contains `path_contains`.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer with this status and body.
    Status(u16, &'static str),
    /// Forward, but cut the response body after this many bytes.
    Truncate(usize),
    /// Forward, flipping one byte of the body.
    Corrupt,
    /// Answer 200 with a body of this many bytes.
    HugeBody(usize),
    /// Wait this long, then close without answering.
    Delay(Duration),
    /// Forward untouched; only counted in `hits`.
    Count,
    /// Forward, writing the response in 64 KiB pieces with this pause between them.
    Throttle(Duration),
}

#[derive(Clone)]
pub struct Rule {
    pub path_contains: &'static str,
    pub fault: Fault,
    /// How many times it fires; after that requests pass untouched.
    pub times: u32,
}

/// Authentication the proxy demands before forwarding.
#[derive(Clone, Debug)]
pub enum ProxyAuth {
    /// `WWW-Authenticate: Basic`; the user:password that passes.
    Basic(&'static str, &'static str),
    /// `WWW-Authenticate: Bearer realm=…/token`; /token wants basic user:password and
    /// answers a token that then passes.
    Bearer(&'static str, &'static str),
}

/// An HTTP proxy on 127.0.0.1 in front of a registry that injects faults.
pub struct FaultProxy {
    pub addr: String,
    pub hits: Arc<AtomicU32>,
    rules: Arc<Mutex<Vec<Rule>>>,
    auth: Arc<Mutex<Option<ProxyAuth>>>,
}

impl FaultProxy {
    pub fn start(upstream: &str, rules: Vec<Rule>) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().expect("addr").to_string();
        let rules = Arc::new(Mutex::new(rules));
        let hits = Arc::new(AtomicU32::new(0));
        let auth = Arc::new(Mutex::new(None));
        let (r, h, a, up) = (
            rules.clone(),
            hits.clone(),
            auth.clone(),
            upstream.to_string(),
        );
        let me = addr.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { break };
                let (r, h, a, up, me) = (r.clone(), h.clone(), a.clone(), up.clone(), me.clone());
                std::thread::spawn(move || {
                    let _ = serve_one(conn, &up, &me, &r, &h, &a);
                });
            }
        });
        FaultProxy {
            addr,
            hits,
            rules,
            auth,
        }
    }

    pub fn set_auth(&self, auth: Option<ProxyAuth>) {
        *self.auth.lock().expect("auth") = auth;
    }

    pub fn set_rules(&self, rules: Vec<Rule>) {
        *self.rules.lock().expect("rules") = rules;
    }
}

fn read_head(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.push(b[0]);
    }
    Ok(head)
}

fn basic_header(user: &str, pass: &str) -> String {
    use base64_lite::encode;
    format!("basic {}", encode(format!("{user}:{pass}").as_bytes()))
}

mod base64_lite {
    //! Just enough base64 for a test's Authorization header.
    pub fn encode(data: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for c in data.chunks(3) {
            let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
            let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
            for i in 0..4 {
                if i <= c.len() {
                    out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}

/// Answers a request the auth scheme refuses; None when it may pass.
fn auth_reply(auth: &Option<ProxyAuth>, path: &str, head: &str, me: &str) -> Option<String> {
    // Scheme compared case-insensitively, credentials exactly.
    let header = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        let (scheme, cred) = value.trim().split_once(' ')?;
        name.eq_ignore_ascii_case("authorization")
            .then(|| format!("{} {}", scheme.to_ascii_lowercase(), cred.trim()))
    });
    let deny = |challenge: String| {
        let b =
            "{\"errors\":[{\"code\":\"UNAUTHORIZED\",\"message\":\"authentication required\"}]}";
        format!("HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: {challenge}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}", b.len())
    };
    match auth {
        None => None,
        Some(ProxyAuth::Basic(u, p)) => {
            if header.as_deref() == Some(basic_header(u, p).as_str()) {
                None
            } else {
                Some(deny("Basic realm=\"test\"".into()))
            }
        }
        Some(ProxyAuth::Bearer(u, p)) => {
            if path.starts_with("/token") {
                let body = if header.as_deref() == Some(basic_header(u, p).as_str()) {
                    "{\"token\":\"good-token\"}"
                } else {
                    return Some(deny("Basic realm=\"token\"".into()));
                };
                return Some(format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()));
            }
            if header.as_deref() == Some("bearer good-token") {
                None
            } else {
                Some(deny(format!(
                    "Bearer realm=\"http://{me}/token\",service=\"test\""
                )))
            }
        }
    }
}

fn serve_one(
    mut c: TcpStream,
    upstream: &str,
    me: &str,
    rules: &Mutex<Vec<Rule>>,
    hits: &AtomicU32,
    auth: &Mutex<Option<ProxyAuth>>,
) -> std::io::Result<()> {
    c.set_read_timeout(Some(Duration::from_secs(30)))?;
    loop {
        let head = read_head(&mut c)?;
        let text = String::from_utf8_lossy(&head).to_string();
        let path = text.split_whitespace().nth(1).unwrap_or("").to_string();
        let content_length: usize = text
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap_or(0))
            })
            .unwrap_or(0);
        let mut body = vec![0u8; content_length];
        c.read_exact(&mut body)?;
        let scheme = auth.lock().expect("auth").clone();
        if let Some(reply) = auth_reply(&scheme, &path, &text, me) {
            c.write_all(reply.as_bytes())?;
            return Ok(());
        }
        let fault = {
            let mut rs = rules.lock().expect("rules");
            rs.iter_mut()
                .find(|r| r.times > 0 && path.contains(r.path_contains))
                .map(|r| {
                    r.times -= 1;
                    r.fault.clone()
                })
        };
        if fault.is_some() {
            hits.fetch_add(1, Ordering::SeqCst);
        }
        match fault {
            Some(Fault::Status(code, msg)) => {
                let b = format!(
                    "{{\"errors\":[{{\"code\":\"{msg}\",\"message\":\"injected {code}\"}}]}}"
                );
                write!(c, "HTTP/1.1 {code} Injected\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}", b.len())?;
                return Ok(());
            }
            Some(Fault::HugeBody(n)) => {
                write!(c, "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.distribution.manifest.v2+json\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n")?;
                let chunk = vec![b' '; 64 * 1024];
                let mut left = n;
                while left > 0 {
                    let k = left.min(chunk.len());
                    c.write_all(&chunk[..k])?;
                    left -= k;
                }
                return Ok(());
            }
            Some(Fault::Delay(d)) => {
                std::thread::sleep(d);
                return Ok(());
            }
            _ => {}
        }
        // Forward with Connection: close so the response ends when upstream closes.
        let mut up = TcpStream::connect(upstream)?;
        let fixed: String = text
            .split("\r\n")
            .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
            .collect::<Vec<_>>()
            .join("\r\n");
        let fixed = fixed.trim_end_matches("\r\n").to_string() + "\r\nConnection: close\r\n\r\n";
        up.write_all(fixed.as_bytes())?;
        up.write_all(&body)?;
        let mut resp = Vec::new();
        up.read_to_end(&mut resp)?;
        let split = resp
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|p| p + 4)
            .unwrap_or(resp.len());
        match fault {
            Some(Fault::Truncate(n)) => {
                let end = (split + n).min(resp.len());
                c.write_all(&resp[..end])?;
                return Ok(());
            }
            Some(Fault::Throttle(pause)) => {
                for piece in resp.chunks(64 * 1024) {
                    c.write_all(piece)?;
                    std::thread::sleep(pause);
                }
                return Ok(());
            }
            Some(Fault::Corrupt) if resp.len() > split => {
                let mid = split + (resp.len() - split) / 2;
                resp[mid] ^= 0x40;
                c.write_all(&resp)?;
                return Ok(());
            }
            _ => {
                // Keep the client's connection usable: our response has a length or is closed.
                let head_text = String::from_utf8_lossy(&resp[..split]).to_ascii_lowercase();
                c.write_all(&resp)?;
                if !head_text.contains("content-length") {
                    return Ok(());
                }
            }
        }
    }
}

/// Files under a directory whose names are not in `allowed_roots` (for "nothing outside").
pub fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p.clone());
                }
                out.push(p);
            }
        }
    }
    out
}

/// The containers that have dirs under `containers` (the daemon's containers root), leaving
/// out `.recycled`, where removed containers' untouched dirs wait for the next create.
pub fn container_dirs(containers: &Path) -> Vec<String> {
    std::fs::read_dir(containers).map_or_else(
        |_| Vec::new(),
        |rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != ".recycled")
                .collect()
        },
    )
}
