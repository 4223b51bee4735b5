//! The real docker CLI as the tests drive it: every client found on the machine, each run with
//! its own empty config dir (or a given `config.json`), no user environment leaking in, and a
//! hang turned into a failure that shows the daemon's log.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::Daemon;

/// The docker clients to test with: the 28.x client in /usr/local/bin and Debian's 20.10.
pub fn clients() -> Vec<PathBuf> {
    let found: Vec<PathBuf> = ["/usr/local/bin/docker", "/usr/bin/docker"]
        .iter()
        .map(PathBuf::from)
        .filter(|p| p.exists())
        .collect();
    assert!(
        !found.is_empty(),
        "no docker CLI found: apt-get install docker.io (.ci/run does it)"
    );
    found
}

/// One docker CLI binary pointed at a daemon with fixed leading arguments (`-H`, TLS flags).
pub struct Docker<'a> {
    cli: &'a Path,
    leading: Vec<String>,
    config_dir: tempfile::TempDir,
    daemon: &'a Daemon,
}

impl<'a> Docker<'a> {
    /// `cli -H host`, with an empty config dir.
    pub fn new(cli: &'a Path, host: String, daemon: &'a Daemon) -> Docker<'a> {
        Docker::with(cli, daemon, vec!["-H".into(), host], None)
    }

    /// `cli LEADING...`, with `config_json` (when given) as the CLI's config.json.
    pub fn with(
        cli: &'a Path,
        daemon: &'a Daemon,
        leading: Vec<String>,
        config_json: Option<&str>,
    ) -> Docker<'a> {
        let config_dir = tempfile::tempdir().expect("tempdir");
        if let Some(json) = config_json {
            std::fs::write(config_dir.path().join("config.json"), json).expect("config.json");
        }
        Docker {
            cli,
            leading,
            config_dir,
            daemon,
        }
    }

    /// Runs with `input` on stdin (else /dev/null); fails the test if it hangs for a minute.
    pub fn run(&self, args: &[&str], input: Option<&[u8]>) -> Output {
        let mut c = Command::new(self.cli);
        c.args(&self.leading)
            .args(args)
            .env("DOCKER_CONFIG", self.config_dir.path())
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH")
            .env_remove("DOCKER_API_VERSION");
        let what = format!("{} {args:?}", self.cli.display());
        super::run_bounded(c, input, &what, self.daemon)
    }

    /// Runs with a terminal on its stdio (`script(1)`, see [`super::in_terminal`]), in the same
    /// clean environment as [`Docker::run`]; for `-t`.
    pub fn in_terminal(&self, args: &[&str]) -> Output {
        let mut argv: Vec<String> = ["env", "-u", "DOCKER_HOST", "-u", "DOCKER_CONTEXT"]
            .iter()
            .chain(&["-u", "DOCKER_TLS_VERIFY", "-u", "DOCKER_CERT_PATH"])
            .chain(&["-u", "DOCKER_API_VERSION"])
            .map(|s| s.to_string())
            .collect();
        argv.push(format!(
            "DOCKER_CONFIG={}",
            self.config_dir.path().display()
        ));
        argv.push(self.cli.display().to_string());
        argv.extend(self.leading.iter().cloned());
        argv.extend(args.iter().map(|a| a.to_string()));
        super::in_terminal(&argv)
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        self.ok_with(args, None)
    }

    /// As [`Docker::ok`], with `input` on stdin.
    pub fn ok_with(&self, args: &[&str], input: Option<&[u8]>) -> String {
        let o = self.run(args, input);
        assert!(
            o.status.success(),
            "{} {args:?} failed ({}):\nstdout: {}\nstderr: {}\ndaemon log:\n{}",
            self.cli.display(),
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            self.daemon.log()
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Runs; returns (exit code, stdout, stderr).
    pub fn code(&self, args: &[&str]) -> (i32, String, String) {
        let o = self.run(args, None);
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }

    /// Runs and asserts failure; returns stderr.
    pub fn refused(&self, args: &[&str]) -> String {
        let o = self.run(args, None);
        assert!(
            !o.status.success(),
            "{} {args:?} should have been refused:\nstdout: {}",
            self.cli.display(),
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8_lossy(&o.stderr).into_owned()
    }
}
