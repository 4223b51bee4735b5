//! The API on TCP with TLS and client authentication, driven by the real docker CLI (every
//! client on the machine: the 28.x one in /usr/local/bin and Debian's 20.10 in /usr/bin) and
//! by `hb` with its docker-like flags (`--tlsverify`, `--tlscacert`, `--tlscert`, `--tlskey`,
//! `--token-file`, the cert dir, `HYPERBOX_TLS_VERIFY`, `HYPERBOX_TOKEN`).
//! Certificates are made here with the `openssl` CLI: a CA, a server certificate for
//! 127.0.0.1, a client certificate, and a second CA with its own client certificate that the
//! daemon must not trust. Container tests need root and a static busybox.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::busybox::{can_run, daemon_for_image};
use common::docker::{clients, Docker};
use common::Daemon;

/// Certificates and keys for the whole test binary, in one directory.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn get() -> &'static Pki {
        static PKI: OnceLock<Pki> = OnceLock::new();
        PKI.get_or_init(|| {
            let pki = Pki {
                dir: tempfile::tempdir().expect("tempdir"),
            };
            pki.ca("ca");
            pki.leaf(
                "ca",
                "server",
                "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
            );
            pki.leaf("ca", "client", "extendedKeyUsage=clientAuth\n");
            pki.ca("other-ca");
            pki.leaf("other-ca", "stranger", "extendedKeyUsage=clientAuth\n");
            // What a certificate rotation installs: a server certificate from the other CA.
            pki.leaf(
                "other-ca",
                "rotated-server",
                "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
            );
            pki
        })
    }

    /// `name.pem` (for CAs and certificates) or `name-key.pem`.
    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    fn p(&self, file: &str) -> String {
        self.path(file).to_string_lossy().into_owned()
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("run openssl (apt-get install openssl; .ci/run does it)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A self-signed P-256 CA: `name.pem`, `name-key.pem`.
    fn ca(&self, name: &str) {
        self.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}-key.pem"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-subj",
            &format!("/CN=hyperbox test {name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
    }

    /// A P-256 certificate signed by `ca` with the extensions `ext`: `name.pem`, `name-key.pem`.
    fn leaf(&self, ca: &str, name: &str, ext: &str) {
        self.openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}-key.pem"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN=hyperbox test {name}"),
        ]);
        std::fs::write(
            self.path(&format!("{name}.ext")),
            format!("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n{ext}"),
        )
        .expect("write ext");
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}-key.pem"),
            "-set_serial",
            &format!("{}", 1000 + name.len()),
            "-days",
            "2",
            "-out",
            &format!("{name}.pem"),
            "-extfile",
            &format!("{name}.ext"),
        ]);
    }

    /// `[daemon]` lines for TLS with the server certificate (and client certificates when
    /// `client_ca`).
    fn daemon_config(&self, client_ca: bool) -> String {
        let mut c = format!(
            "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
            self.p("server.pem"),
            self.p("server-key.pem")
        );
        if client_ca {
            c.push_str(&format!("tls_client_ca = \"{}\"\n", self.p("ca.pem")));
        }
        c
    }
}

/// The docker CLI at the daemon's TCP address with the TLS flags `tls` (and `config_json`).
fn tcp_docker<'a>(
    cli: &'a Path,
    daemon: &'a Daemon,
    tls: &[String],
    config_json: Option<&str>,
) -> Docker<'a> {
    let mut leading = vec!["-H".to_string(), format!("tcp://{}", daemon.tcp_addr)];
    leading.extend(tls.iter().cloned());
    Docker::with(cli, daemon, leading, config_json)
}

/// `--tlsverify` flags: trust `ca`, present `client` (a name in the Pki) when given.
fn tls_flags(pki: &Pki, ca: &str, client: Option<&str>) -> Vec<String> {
    let mut f = vec![
        "--tlsverify".to_string(),
        "--tlscacert".into(),
        pki.p(&format!("{ca}.pem")),
    ];
    if let Some(c) = client {
        f.extend([
            "--tlscert".into(),
            pki.p(&format!("{c}.pem")),
            "--tlskey".into(),
            pki.p(&format!("{c}-key.pem")),
        ]);
    }
    f
}

/// Waits until the daemon's TCP port accepts (it is bound just after the unix socket).
fn wait_tcp(addr: &str) {
    let start = Instant::now();
    while TcpStream::connect(addr).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{addr} never listened"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One HTTP/1.0 request over TLS through `openssl s_client`, trusting the test CA; the raw
/// response.
fn https_raw(pki: &Pki, addr: &str, request: &str) -> String {
    let mut child = Command::new("openssl")
        .args(["s_client", "-quiet", "-connect", addr, "-CAfile"])
        .arg(pki.path("ca.pem"))
        .args(["-verify_return_error", "-servername", "localhost"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_client");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(request.as_bytes())
        .expect("write request");
    let out = child.wait_with_output().expect("s_client output");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn docker_cli_over_tls_with_client_certificates_on_a_non_loopback_listen_addr() {
    if !can_run() {
        return;
    }
    let pki = Pki::get();
    // 0.0.0.0 is off loopback: allowed because TLS and client certificates are configured.
    // The clients connect through 127.0.0.1, which the server certificate names.
    let port = common::free_port();
    let (mut d, img) = daemon_for_image(&format!(
        "listen_addr = \"0.0.0.0:{port}\"\n{}",
        pki.daemon_config(true)
    ));
    d.tcp_addr = format!("127.0.0.1:{port}");
    wait_tcp(&d.tcp_addr);
    assert!(
        d.log().contains("TLS with client certificates"),
        "{}",
        d.log()
    );
    for (i, cli) in clients().iter().enumerate() {
        let docker = tcp_docker(cli, &d, &tls_flags(pki, "ca", Some("client")), None);
        let v = docker.ok(&["version", "--format", "{{.Server.APIVersion}}"]);
        assert_eq!(v.trim(), "1.43");
        let pulled = docker.ok(&["pull", img]);
        assert!(pulled.contains("Digest: sha256:"), "{pulled}");
        docker.ok(&["ps"]);
        // A foreground run: attach (hijacked over TLS), output on both streams, exit code.
        let o = docker.run(
            &[
                "run",
                "--rm",
                img,
                "sh",
                "-c",
                "echo out-tls; echo err-tls >&2; exit 3",
            ],
            None,
        );
        assert_eq!(o.status.code(), Some(3), "{o:?}\n{}", d.log());
        assert_eq!(String::from_utf8_lossy(&o.stdout), "out-tls\n");
        assert!(String::from_utf8_lossy(&o.stderr).contains("err-tls"));
        // stdin through the hijacked stream, and its end (the client closes its write side).
        let echoed = docker.ok_with(
            &["run", "--rm", "-i", img, "cat"],
            Some(b"piped over tls\n"),
        );
        assert_eq!(echoed, "piped over tls\n");
        // exec and attach on a running container.
        let name = format!("tls-{i}");
        docker.ok(&["run", "-d", "--name", &name, img, "sleep", "100"]);
        assert_eq!(docker.ok(&["exec", &name, "echo", "in-exec"]), "in-exec\n");
        let cat = docker.ok_with(&["exec", "-i", &name, "cat"], Some(b"exec stdin\n"));
        assert_eq!(cat, "exec stdin\n");
        docker.ok(&["rm", "-f", &name]);
        let late = format!("tls-late-{i}");
        docker.ok(&[
            "run",
            "-d",
            "--name",
            &late,
            img,
            "sh",
            "-c",
            "sleep 1; echo late",
        ]);
        assert_eq!(docker.ok(&["attach", &late]), "late\n");
        docker.ok(&["rm", &late]);

        // No client certificate: the handshake fails.
        let err = tcp_docker(cli, &d, &tls_flags(pki, "ca", None), None).refused(&["version"]);
        assert!(err.to_lowercase().contains("tls"), "{err}");
        // A client certificate from a CA the daemon does not trust.
        let err =
            tcp_docker(cli, &d, &tls_flags(pki, "ca", Some("stranger")), None).refused(&["ps"]);
        assert!(err.to_lowercase().contains("tls"), "{err}");
        // A client that trusts another CA refuses the daemon's certificate.
        let err =
            tcp_docker(cli, &d, &tls_flags(pki, "other-ca", Some("client")), None).refused(&["ps"]);
        assert!(
            err.contains("certificate signed by unknown authority")
                || err.contains("certificate is not trusted"),
            "{err}"
        );
        // Plain HTTP to the TLS port gets nowhere either.
        let err = tcp_docker(cli, &d, &[], None).refused(&["ps"]);
        assert!(!err.is_empty());
    }
    assert!(
        d.log().contains("TLS handshake refused"),
        "refused handshakes are logged: {}",
        d.log()
    );
    // The unix socket stays plain.
    d.hb_ok(&["ps"]);
}

#[test]
fn docker_cli_with_a_bearer_token_in_config_json_http_headers() {
    if !can_run() {
        return;
    }
    let pki = Pki::get();
    let dir = tempfile::tempdir().expect("tempdir");
    let token = format!(
        "hbtok-{}",
        common::sha256(&common::noise(std::process::id().into(), 64)).trim_start_matches("sha256:")
    );
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{token}\n")).expect("write token");
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600))
        .expect("chmod token");
    let (d, img) = daemon_for_image(&format!(
        "{}api_token_file = \"{}\"\n",
        pki.daemon_config(false),
        token_file.display()
    ));
    wait_tcp(&d.tcp_addr);
    let headers = |t: &str| format!("{{\"HttpHeaders\": {{\"Authorization\": \"Bearer {t}\"}}}}");
    for cli in clients() {
        // No client certificate: the token is the client's identity.
        let docker = tcp_docker(
            &cli,
            &d,
            &tls_flags(pki, "ca", None),
            Some(&headers(&token)),
        );
        let v = docker.ok(&["version", "--format", "{{.Server.APIVersion}}"]);
        assert_eq!(v.trim(), "1.43");
        docker.ok(&["pull", img]);
        let out = docker.ok_with(&["run", "--rm", "-i", img, "cat"], Some(b"with a token\n"));
        assert_eq!(out, "with a token\n");

        let wrong = tcp_docker(
            &cli,
            &d,
            &tls_flags(pki, "ca", None),
            Some(&headers("nope")),
        );
        let err = wrong.refused(&["ps"]);
        assert!(err.contains("unauthorized"), "{err}");
        let none = tcp_docker(&cli, &d, &tls_flags(pki, "ca", None), None);
        let err = none.refused(&["ps"]);
        assert!(err.contains("unauthorized"), "{err}");
    }
    // The status and body, /_ping included.
    for (auth, status) in [
        (String::new(), "401"),
        ("Authorization: Bearer wrong\r\n".to_string(), "401"),
        (format!("Authorization: Bearer {token}x\r\n"), "401"),
        (format!("Authorization: Bearer {token}\r\n"), "200"),
    ] {
        let resp = https_raw(
            pki,
            &d.tcp_addr,
            &format!("GET /_ping HTTP/1.0\r\nHost: localhost\r\n{auth}\r\n"),
        );
        let first = resp.lines().next().unwrap_or_default();
        assert!(first.contains(&format!(" {status} ")), "{auth:?}: {resp}");
        if status == "401" {
            assert!(resp.contains("{\"message\":\"unauthorized"), "{resp}");
            assert!(resp.contains("Bearer realm=\"hyperboxd\""), "{resp}");
        } else {
            assert!(resp.ends_with("OK"), "{resp}");
        }
    }
    // The unix socket needs no token.
    d.hb_ok(&["ps"]);
}

/// hyperboxd with `config` (after data_dir and socket in a temp dir), expected to exit at
/// start; its exit code and stderr.
fn refused_start(extra_daemon_lines: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("hyperbox.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\ndata_dir = \"{}\"\nsocket = \"{}\"\n{extra_daemon_lines}[monitoring]\nenabled = false\n",
            dir.path().join("data").display(),
            dir.path().join("hb.sock").display(),
        ),
    )
    .expect("write config");
    let mut child = Command::new(common::bin("hyperboxd"))
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start hyperboxd");
    let start = Instant::now();
    while child.try_wait().expect("try_wait").is_none() {
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "hyperboxd started with {extra_daemon_lines:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    assert!(
        !dir.path().join("data").join("store").exists(),
        "the store was opened before the refusal"
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_non_loopback_listen_addr_without_tls_and_client_auth_refuses_to_start() {
    let port = common::free_port();
    let (code, err) = refused_start(&format!("listen_addr = \"0.0.0.0:{port}\"\n"));
    assert_eq!(code, Some(2), "{err}");
    for needed in [
        &format!("daemon.listen_addr = \"0.0.0.0:{port}\""),
        "not a loopback address",
        "daemon.tls_cert and daemon.tls_key",
        "daemon.tls_client_ca",
        "daemon.api_token_file",
    ] {
        assert!(err.contains(needed), "missing {needed:?} in {err}");
    }
    // TLS without a client check is still refused, and says only what is missing.
    let pki = Pki::get();
    let (code, err) = refused_start(&format!(
        "listen_addr = \"0.0.0.0:{port}\"\n{}",
        pki.daemon_config(false)
    ));
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("daemon.tls_client_ca") && !err.contains("set daemon.tls_cert"),
        "{err}"
    );
    // --validate-config says the same.
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("h.toml");
    std::fs::write(&config, "[daemon]\nlisten_addr = \"[::]:9999\"\n").expect("write");
    let out = Command::new(common::bin("hyperboxd"))
        .arg("--config")
        .arg(&config)
        .arg("--validate-config")
        .output()
        .expect("validate");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:2: daemon.listen_addr", config.display())),
        "{err}"
    );
}

#[test]
fn broken_tls_and_token_files_stop_the_daemon_naming_the_file() {
    let pki = Pki::get();
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = |cert: &str, key: &str| format!("tls_cert = \"{cert}\"\ntls_key = \"{key}\"\n");

    let missing = dir.path().join("absent.pem");
    let missing = missing.to_string_lossy();
    let (code, err) = refused_start(&tls(&missing, &pki.p("server-key.pem")));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("tls_cert") && err.contains(&*missing), "{err}");

    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").expect("write");
    let garbage = garbage.to_string_lossy();
    let (_, err) = refused_start(&tls(&garbage, &pki.p("server-key.pem")));
    assert!(
        err.contains(&*garbage) && err.contains("no PEM CERTIFICATE"),
        "{err}"
    );
    let (_, err) = refused_start(&tls(&pki.p("server.pem"), &garbage));
    assert!(
        err.contains(&*garbage) && err.contains("private key"),
        "{err}"
    );
    // The client's key with the server's certificate.
    let (_, err) = refused_start(&tls(&pki.p("server.pem"), &pki.p("client-key.pem")));
    assert!(err.contains("does the key belong"), "{err}");
    let (_, err) = refused_start(&format!(
        "{}tls_client_ca = \"{missing}\"\n",
        pki.daemon_config(false)
    ));
    assert!(
        err.contains("tls_client_ca") && err.contains(&*missing),
        "{err}"
    );

    // A token file every user can read is no secret.
    let token = dir.path().join("token");
    std::fs::write(&token, "0123456789abcdef0123456789abcdef\n").expect("write");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let (code, err) = refused_start(&format!("api_token_file = \"{}\"\n", token.display()));
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&token.display().to_string()) && err.contains("every user"),
        "{err}"
    );
}

#[test]
fn clients_that_never_finish_the_tls_handshake_are_cut_off_while_others_are_served() {
    let pki = Pki::get();
    let d = Daemon::start(&format!(
        "[daemon]\n{}[networking]\nconnection_timeout_secs = 4\n",
        pki.daemon_config(true)
    ));
    wait_tcp(&d.tcp_addr);
    // The metrics port is bound just after the API's: wait for it too.
    let ready = Instant::now();
    while common::http_status(&d.metrics_addr, "/health").is_none() {
        assert!(
            ready.elapsed() < Duration::from_secs(10),
            "metrics never served"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let gauge = || {
        let (_, text) = common::http_get(&d.metrics_addr, "/metrics");
        common::metric_sample(&text, "hyperbox_network_connections")
    };
    let baseline = gauge();
    // One client says nothing; another starts a TLS record and stalls.
    let start = Instant::now();
    let mut silent = TcpStream::connect(&d.tcp_addr).expect("connect");
    let mut stalled = TcpStream::connect(&d.tcp_addr).expect("connect");
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x00, 0xff, 0x01])
        .expect("partial hello");
    // Meanwhile the API answers others, with TLS, while the silent ones still hold their slots.
    for cli in clients() {
        let docker = tcp_docker(&cli, &d, &tls_flags(pki, "ca", Some("client")), None);
        let v = docker.ok(&["version", "--format", "{{.Server.APIVersion}}"]);
        assert_eq!(v.trim(), "1.43");
    }
    assert!(
        start.elapsed() < Duration::from_secs(4) && gauge() >= baseline + 2.0,
        "others were served only after the silent clients were cut off ({:?})",
        start.elapsed()
    );
    for s in [&mut silent, &mut stalled] {
        s.set_read_timeout(Some(Duration::from_secs(15)))
            .expect("timeout");
        let mut buf = [0u8; 64];
        let cut = match s.read(&mut buf) {
            Ok(0) => true,
            Ok(_) => {
                // A TLS alert, then the close.
                matches!(s.read(&mut buf), Ok(0) | Err(_))
            }
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        };
        assert!(cut, "not cut off");
    }
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(3900) && elapsed < Duration::from_secs(9),
        "cut off after {elapsed:?}, connection_timeout_secs is 4"
    );
    // Their slots are free again.
    let deadline = Instant::now() + Duration::from_secs(5);
    while gauge() > baseline {
        assert!(Instant::now() < deadline, "connections still counted");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `hb` at a daemon's TCP address with fixed leading arguments, in a clean environment: none of
/// the caller's `HYPERBOX_*` variables, and HOME an empty dir (so `~/.hyperbox` holds nothing
/// unless a test puts files there).
struct TcpHb<'a> {
    daemon: &'a Daemon,
    leading: Vec<String>,
    env: Vec<(String, String)>,
    home: tempfile::TempDir,
}

impl<'a> TcpHb<'a> {
    /// `hb -H tcp://ADDR FLAGS...`.
    fn new(daemon: &'a Daemon, flags: &[String]) -> TcpHb<'a> {
        TcpHb::at(daemon, format!("tcp://{}", daemon.tcp_addr), flags)
    }

    /// `hb -H HOST FLAGS...`.
    fn at(daemon: &'a Daemon, host: String, flags: &[String]) -> TcpHb<'a> {
        let mut leading = vec!["-H".to_string(), host];
        leading.extend(flags.iter().cloned());
        TcpHb {
            daemon,
            leading,
            env: Vec::new(),
            home: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    /// Runs with `input` on stdin (else /dev/null); a hang of a minute fails the test.
    fn run(&self, args: &[&str], input: Option<&[u8]>) -> Output {
        let mut c = Command::new(common::bin("hb"));
        c.args(&self.leading).args(args);
        for (name, _) in std::env::vars() {
            if name.starts_with("HYPERBOX_") {
                c.env_remove(name);
            }
        }
        c.env("HOME", self.home.path())
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        common::run_bounded(c, input, &format!("hb {args:?}"), self.daemon)
    }

    fn ok(&self, args: &[&str]) -> String {
        self.ok_with(args, None)
    }

    /// Runs with `input`, asserting success; stdout.
    fn ok_with(&self, args: &[&str], input: Option<&[u8]>) -> String {
        let o = self.run(args, input);
        assert!(
            o.status.success(),
            "hb {:?} {args:?} failed ({}):\nstdout: {}\nstderr: {}\ndaemon log:\n{}",
            self.leading,
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            self.daemon.log()
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Runs, asserting failure; stderr.
    fn refused(&self, args: &[&str]) -> String {
        let o = self.run(args, None);
        assert!(
            !o.status.success(),
            "hb {:?} {args:?} should have been refused:\nstdout: {}",
            self.leading,
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8_lossy(&o.stderr).into_owned()
    }
}

/// A cert dir as docker has it (ca.pem, cert.pem, key.pem) with the test CA and client.
fn fill_cert_dir(pki: &Pki, dir: &Path) {
    std::fs::create_dir_all(dir).expect("mkdir cert dir");
    for (from, to) in [
        ("ca.pem", "ca.pem"),
        ("client.pem", "cert.pem"),
        ("client-key.pem", "key.pem"),
    ] {
        std::fs::copy(pki.path(from), dir.join(to)).expect("copy into cert dir");
    }
}

/// A token file of mode 0600 holding `token`.
fn token_file(dir: &Path, name: &str, token: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{token}\n")).expect("write token");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

#[test]
fn hb_with_client_certificates_pulls_lists_saves_loads_and_runs_over_tls() {
    let pki = Pki::get();
    let (d, img) = daemon_for_image(&pki.daemon_config(true));
    wait_tcp(&d.tcp_addr);
    let hb = TcpHb::new(&d, &tls_flags(pki, "ca", Some("client")));
    let version = hb.ok(&["version"]);
    assert!(version.contains("API version: 1.43"), "{version}");
    // A pull's progress stream, a listing, and archives streamed out and back in.
    hb.ok(&["pull", img]);
    assert!(hb.ok(&["images"]).contains("test/bb"));
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = dir.path().join("bb.tar");
    let archive = archive.to_string_lossy();
    hb.ok(&["save", "-o", &archive, img]);
    hb.ok(&["rmi", img]);
    let loaded = hb.ok(&["load", "-i", &archive]);
    assert!(loaded.contains("Loaded image"), "{loaded}");

    // Defaults from a cert dir, as DOCKER_CERT_PATH and DOCKER_TLS_VERIFY give docker.
    let cert_dir = dir.path().join("certs");
    fill_cert_dir(pki, &cert_dir);
    let from_env = TcpHb::new(&d, &[])
        .env("HYPERBOX_CERT_PATH", &cert_dir.to_string_lossy())
        .env("HYPERBOX_TLS_VERIFY", "1");
    assert!(from_env.ok(&["images"]).contains("test/bb"));
    // ~/.hyperbox when HYPERBOX_CERT_PATH is not set.
    let from_home = TcpHb::new(&d, &["--tlsverify".to_string()]);
    fill_cert_dir(pki, &from_home.home.path().join(".hyperbox"));
    from_home.ok(&["ps"]);
    // https:// turns TLS on by itself.
    let mut files = tls_flags(pki, "ca", Some("client"));
    files.remove(0);
    TcpHb::at(&d, format!("https://{}", d.tcp_addr), &files).ok(&["ps"]);

    if !can_run() {
        return;
    }
    // Attach (hijacked over TLS): both streams and the exit code.
    let o = hb.run(
        &[
            "run",
            "--rm",
            img,
            "sh",
            "-c",
            "echo out-tls; echo err-tls >&2; exit 3",
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(3), "{o:?}\n{}", d.log());
    assert_eq!(String::from_utf8_lossy(&o.stdout), "out-tls\n");
    assert!(String::from_utf8_lossy(&o.stderr).contains("err-tls"));
    // stdin through the hijacked TLS stream, and its end (close_notify, then the write side).
    let echoed = hb.ok_with(
        &["run", "--rm", "-i", img, "cat"],
        Some(b"piped over tls\n"),
    );
    assert_eq!(echoed, "piped over tls\n");
    hb.ok(&["run", "-d", "--name", "hb-tls", img, "sleep", "100"]);
    assert_eq!(hb.ok(&["exec", "hb-tls", "echo", "in-exec"]), "in-exec\n");
    let cat = hb.ok_with(&["exec", "-i", "hb-tls", "cat"], Some(b"exec stdin\n"));
    assert_eq!(cat, "exec stdin\n");
    hb.ok(&["rm", "-f", "hb-tls"]);
}

#[test]
fn hb_without_an_accepted_client_certificate_is_refused_with_a_clear_message() {
    let pki = Pki::get();
    let d = Daemon::start(&format!("[daemon]\n{}", pki.daemon_config(true)));
    wait_tcp(&d.tcp_addr);

    let err = TcpHb::new(&d, &tls_flags(pki, "ca", None)).refused(&["ps"]);
    assert!(
        err.contains("requires a client certificate") && err.contains("--tlscert"),
        "{err}"
    );
    let err = TcpHb::new(&d, &tls_flags(pki, "ca", Some("stranger"))).refused(&["version"]);
    assert!(
        err.contains("refused the client certificate")
            && err.contains(&pki.p("stranger.pem"))
            && err.contains("tls_client_ca"),
        "{err}"
    );
    // Plain HTTP to the TLS port: a hint to use TLS.
    let err = TcpHb::new(&d, &[]).refused(&["ps"]);
    assert!(
        err.contains("not plain HTTP") && err.contains("--tlsverify"),
        "{err}"
    );
    assert!(
        d.log().contains("TLS handshake refused"),
        "refused handshakes are logged: {}",
        d.log()
    );

    // Files that cannot be used are named before anything is sent.
    let absent = pki.path("absent.pem");
    let err = TcpHb::new(
        &d,
        &[
            "--tlsverify".into(),
            "--tlscacert".into(),
            pki.p("ca.pem"),
            "--tlscert".into(),
            absent.to_string_lossy().into_owned(),
            "--tlskey".into(),
            pki.p("client-key.pem"),
        ],
    )
    .refused(&["ps"]);
    assert!(
        err.contains("--tlscert") && err.contains(&*absent.to_string_lossy()),
        "{err}"
    );
    let err = TcpHb::new(
        &d,
        &[
            "--tlsverify".into(),
            "--tlscacert".into(),
            pki.p("ca.pem"),
            "--tlscert".into(),
            pki.p("client.pem"),
            "--tlskey".into(),
            pki.p("stranger-key.pem"),
        ],
    )
    .refused(&["ps"]);
    assert!(err.contains("does the key belong"), "{err}");
    let err = TcpHb::new(
        &d,
        &[
            "--tlscacert".into(),
            pki.p("ca.pem"),
            "--tlscert".into(),
            pki.p("client.pem"),
        ],
    )
    .refused(&["ps"]);
    assert!(
        err.contains("needs its key") && err.contains("--tlskey"),
        "{err}"
    );
}

#[test]
fn hb_tlsverify_against_a_daemon_whose_ca_it_does_not_have_fails_naming_verification() {
    let pki = Pki::get();
    // TLS without client certificates: only the client's check of the server is at stake.
    let d = Daemon::start(&format!("[daemon]\n{}", pki.daemon_config(false)));
    wait_tcp(&d.tcp_addr);
    let err = TcpHb::new(&d, &tls_flags(pki, "other-ca", None)).refused(&["ps"]);
    assert!(
        err.contains("certificate failed verification")
            && err.contains(&pki.p("other-ca.pem"))
            && err.contains("--tlscacert"),
        "{err}"
    );
    // --tls without a CA checks against the system's roots, which do not hold the test CA.
    let err = TcpHb::new(&d, &["--tls".into()]).refused(&["ps"]);
    assert!(
        err.contains("certificate failed verification")
            && err.contains("system's root certificates")
            && err.contains("--tlscacert"),
        "{err}"
    );
    // --tlsverify with no CA anywhere (HOME is empty, no HYPERBOX_CERT_PATH).
    let err = TcpHb::new(&d, &["--tlsverify".into()]).refused(&["ps"]);
    assert!(
        err.contains("--tlsverify needs the CA") && err.contains("--tlscacert"),
        "{err}"
    );
    // With the right CA it works.
    TcpHb::new(&d, &tls_flags(pki, "ca", None)).ok(&["ps"]);
}

#[test]
fn hb_speaking_tls_to_a_plain_http_daemon_is_told_so() {
    let pki = Pki::get();
    let d = Daemon::start("");
    wait_tcp(&d.tcp_addr);
    let err = TcpHb::new(&d, &tls_flags(pki, "ca", None)).refused(&["ps"]);
    assert!(
        err.contains("TLS handshake") && err.contains("drop --tls"),
        "{err}"
    );
    // And plain HTTP there works.
    TcpHb::new(&d, &[]).ok(&["ps"]);
}

#[test]
fn hb_with_a_bearer_token_over_tls_and_a_clear_401_without_the_right_one() {
    let pki = Pki::get();
    let dir = tempfile::tempdir().expect("tempdir");
    let token = format!(
        "hbtok-{}",
        common::sha256(&common::noise(u64::from(std::process::id()) + 1, 64))
            .trim_start_matches("sha256:")
    );
    let daemon_token = token_file(dir.path(), "daemon-token", &token);
    let (d, img) = daemon_for_image(&format!(
        "{}api_token_file = \"{}\"\n",
        pki.daemon_config(false),
        daemon_token.display()
    ));
    wait_tcp(&d.tcp_addr);
    let client_token = token_file(dir.path(), "client-token", &token);
    let mut flags = tls_flags(pki, "ca", None);
    flags.extend(["--token-file".into(), client_token.display().to_string()]);
    let hb = TcpHb::new(&d, &flags);
    let version = hb.ok(&["version"]);
    assert!(version.contains("API version: 1.43"), "{version}");
    hb.ok(&["pull", img]);
    assert!(hb.ok(&["images"]).contains("test/bb"));
    // The token from the environment.
    TcpHb::new(&d, &tls_flags(pki, "ca", None))
        .env("HYPERBOX_TOKEN", &token)
        .ok(&["ps"]);

    // Wrong or missing tokens: a 401 that says what happened.
    let wrong = token_file(dir.path(), "wrong-token", "not-the-token-0123456789");
    let mut flags = tls_flags(pki, "ca", None);
    flags.extend(["--token-file".into(), wrong.display().to_string()]);
    let err = TcpHb::new(&d, &flags).refused(&["images"]);
    assert!(
        err.contains("refused the API token from --token-file")
            && err.contains(&wrong.display().to_string())
            && err.contains("the bearer token is wrong"),
        "{err}"
    );
    let err = TcpHb::new(&d, &tls_flags(pki, "ca", None))
        .env("HYPERBOX_TOKEN", "not-the-token-0123456789")
        .refused(&["ps"]);
    assert!(
        err.contains("refused the API token from HYPERBOX_TOKEN"),
        "{err}"
    );
    let err = TcpHb::new(&d, &tls_flags(pki, "ca", None)).refused(&["ps"]);
    assert!(
        err.contains("requires an API token") && err.contains("--token-file"),
        "{err}"
    );
    let absent = dir.path().join("absent-token");
    let mut flags = tls_flags(pki, "ca", None);
    flags.extend(["--token-file".into(), absent.display().to_string()]);
    let err = TcpHb::new(&d, &flags).refused(&["ps"]);
    assert!(
        err.contains("--token-file") && err.contains(&absent.display().to_string()),
        "{err}"
    );

    if !can_run() {
        return;
    }
    // The hijacked attach and exec carry the token too.
    let out = hb.ok_with(&["run", "--rm", "-i", img, "cat"], Some(b"with a token\n"));
    assert_eq!(out, "with a token\n");
    hb.ok(&["run", "-d", "--name", "hb-token", img, "sleep", "100"]);
    let cat = hb.ok_with(&["exec", "-i", "hb-token", "cat"], Some(b"exec token\n"));
    assert_eq!(cat, "exec token\n");
    hb.ok(&["rm", "-f", "hb-token"]);
}

#[test]
fn sighup_puts_a_rotated_certificate_and_token_in_force_and_keeps_them_when_files_break() {
    let pki = Pki::get();
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let install = |name: &str| {
        std::fs::copy(pki.path(&format!("{name}.pem")), &cert).expect("copy cert");
        std::fs::copy(pki.path(&format!("{name}-key.pem")), &key).expect("copy key");
    };
    install("server");
    let (old_token, new_token) = ("old-token-0123456789abcdef", "new-token-0123456789abcdef");
    let daemon_token = token_file(dir.path(), "daemon-token", old_token);
    let d = Daemon::start(&format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"\napi_token_file = \"{}\"\n",
        cert.display(),
        key.display(),
        daemon_token.display()
    ));
    wait_tcp(&d.tcp_addr);
    let client = |ca: &str, token: &str| {
        let mut flags = tls_flags(pki, ca, None);
        let file = token_file(dir.path(), &format!("client-{token}"), token);
        flags.extend(["--token-file".into(), file.display().to_string()]);
        TcpHb::new(&d, &flags)
    };
    client("ca", old_token).ok(&["ps"]);
    let hup = || {
        let pid = d.child.as_ref().expect("daemon").id() as i32;
        // SAFETY: signalling the daemon this test started.
        unsafe { libc::kill(pid, libc::SIGHUP) };
    };

    // Rotation: same paths, new contents.
    install("rotated-server");
    token_file(dir.path(), "daemon-token", new_token);
    hup();
    let start = Instant::now();
    while client("other-ca", new_token)
        .run(&["ps"], None)
        .status
        .code()
        != Some(0)
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the rotated certificate and token never took effect\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let err = client("ca", new_token).refused(&["ps"]);
    assert!(
        err.contains("certificate"),
        "the old CA still verifies: {err}"
    );
    let err = client("other-ca", old_token).refused(&["ps"]);
    assert!(err.contains("the bearer token is wrong"), "{err}");

    // A key that no longer parses: the reload is refused and the running protection stays.
    std::fs::write(&key, "not a key").expect("break the key");
    hup();
    let start = Instant::now();
    while !d.log().contains("TLS and token files not reloaded") {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no refused reload in the log\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(d.log().contains(&key.display().to_string()), "{}", d.log());
    client("other-ca", new_token).ok(&["ps"]);
}
