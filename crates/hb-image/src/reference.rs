//! Docker-style image references (`alpine`, `library/alpine:3.19`, `host:5000/o/r@sha256:…`):
//! parsing, normalisation to one canonical name, and the familiar short form people type.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Mutex, OnceLock};

use oci_client::Reference;

use crate::ImageError;

/// Most references [`ImageRef::parse`] remembers before it starts over.
const PARSED_MEMO_MAX: usize = 256;

/// References parsed so far. The reference grammar (oci-client's) is one large regex whose
/// matcher keeps a scratch cache of about 2.6 MiB per thread that runs it at once (a daemon
/// with eight concurrent starts held 40 MiB of them), and a daemon parses the same few names
/// on every create, start and lookup: with this each name is matched once.
fn lock_memo() -> std::sync::MutexGuard<'static, HashMap<String, ImageRef>> {
    static PARSED: OnceLock<Mutex<HashMap<String, ImageRef>>> = OnceLock::new();
    PARSED
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A validated image reference, normalised as Docker does (`alpine` is
/// `docker.io/library/alpine:latest`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    inner: Reference,
}

impl ImageRef {
    /// Parses a reference the way `docker pull` does, refusing what Docker refuses.
    pub fn parse(input: &str) -> Result<ImageRef, ImageError> {
        let bad = |reason: &str| ImageError::InvalidReference {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        if input.is_empty() {
            return Err(bad("empty reference"));
        }
        if input.len() > 512 {
            return Err(bad("longer than 512 characters"));
        }
        if input.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("contains whitespace or control characters"));
        }
        // Docker refuses upper case in the repository path (the registry host may have it).
        let name_part = input.split(['@']).next().unwrap_or(input);
        let repo_part = match name_part.rsplit_once(':') {
            Some((head, tail)) if !tail.contains('/') => head,
            _ => name_part,
        };
        let path = match repo_part.split_once('/') {
            Some((host, rest)) if host.contains(['.', ':']) || host == "localhost" => rest,
            _ => repo_part,
        };
        if path.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(bad("repository name must be lowercase"));
        }
        if let Some(known) = lock_memo().get(input) {
            return Ok(known.clone());
        }
        let inner: Reference = input.parse().map_err(|e| bad(&format!("{e}")))?;
        if inner.repository().is_empty() {
            return Err(bad("empty repository name"));
        }
        let parsed = ImageRef { inner };
        let mut memo = lock_memo();
        if memo.len() >= PARSED_MEMO_MAX {
            memo.clear();
        }
        memo.insert(input.to_string(), parsed.clone());
        Ok(parsed)
    }

    /// The registry host (`docker.io`, `127.0.0.1:5000`).
    pub fn registry(&self) -> &str {
        self.inner.registry()
    }

    /// The repository path inside the registry (`library/alpine`).
    pub fn repository(&self) -> &str {
        self.inner.repository()
    }

    /// The tag, if any (`latest` is filled in when neither tag nor digest is given).
    pub fn tag(&self) -> Option<&str> {
        self.inner.tag()
    }

    /// The pinned manifest digest, if any.
    pub fn digest(&self) -> Option<&str> {
        self.inner.digest()
    }

    /// The `oci-client` reference, for talking to the registry.
    pub fn as_oci(&self) -> &Reference {
        &self.inner
    }

    /// The repository's full name without tag or digest: `docker.io/library/alpine`.
    pub fn repo_name(&self) -> String {
        format!("{}/{}", self.registry(), self.repository())
    }

    /// The one name under which a tag is stored: `docker.io/library/alpine:latest`, or
    /// `host/repo@sha256:…` for a digest-only reference.
    pub fn canonical(&self) -> String {
        match (self.tag(), self.digest()) {
            (Some(t), _) => format!("{}:{t}", self.repo_name()),
            (None, Some(d)) => format!("{}@{d}", self.repo_name()),
            (None, None) => format!("{}:latest", self.repo_name()),
        }
    }

    /// True when the registry is on this machine (plain HTTP is allowed there).
    pub fn registry_is_loopback(&self) -> bool {
        host_is_loopback(self.registry())
    }
}

impl fmt::Display for ImageRef {
    /// The familiar form: `alpine:latest`, `127.0.0.1:5000/hb/deb:latest`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&familiar_name(&self.canonical()))
    }
}

/// Shortens a canonical name the way Docker prints it (drops `docker.io/` and `library/`).
pub fn familiar_name(canonical: &str) -> String {
    let rest = canonical.strip_prefix("docker.io/").unwrap_or(canonical);
    if rest.len() != canonical.len() {
        rest.strip_prefix("library/").unwrap_or(rest).to_string()
    } else {
        canonical.to_string()
    }
}

/// True for `localhost`, `127.x.y.z` and `[::1]`, with or without a port.
pub fn host_is_loopback(host_port: &str) -> bool {
    let host = if let Some(rest) = host_port.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    host == "localhost"
        || host
            .parse::<IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_like_docker() {
        let r = ImageRef::parse("alpine").unwrap();
        assert_eq!(r.canonical(), "docker.io/library/alpine:latest");
        assert_eq!(r.to_string(), "alpine:latest");
        let r = ImageRef::parse("library/alpine:3.19").unwrap();
        assert_eq!(r.canonical(), "docker.io/library/alpine:3.19");
        let r = ImageRef::parse("127.0.0.1:5000/hb/deb").unwrap();
        assert_eq!(r.canonical(), "127.0.0.1:5000/hb/deb:latest");
        assert_eq!(r.to_string(), "127.0.0.1:5000/hb/deb:latest");
        assert!(r.registry_is_loopback());
        let d = format!("sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&format!("ghcr.io/o/r@{d}")).unwrap();
        assert_eq!(r.digest(), Some(d.as_str()));
        assert_eq!(r.canonical(), format!("ghcr.io/o/r@{d}"));
        assert!(!r.registry_is_loopback());
    }

    #[test]
    fn a_remembered_parse_answers_as_the_first() {
        // Twice each, and more names than the memo holds so it starts over in between.
        for round in 0..2 {
            for i in 0..(PARSED_MEMO_MAX + 10) {
                let input = format!("127.0.0.1:5000/memo/r{i}:t{round}");
                let first = ImageRef::parse(&input).unwrap();
                let again = ImageRef::parse(&input).unwrap();
                assert_eq!(first, again);
                assert_eq!(again.canonical(), input);
            }
        }
        assert!(lock_memo().len() <= PARSED_MEMO_MAX);
        // What the checks before the memo refuse stays refused once the lowercase form is known.
        ImageRef::parse("memo/case").unwrap();
        assert!(ImageRef::parse("MEMO/case").is_err());
    }

    #[test]
    fn refuses_malformed_references() {
        for bad in [
            "",
            "Alpine",
            "alpine:",
            "alpine@sha256:abc",
            "alpine@md5:0123",
            "a b",
            ":tag",
            "alpine:bad tag",
            "-alpine",
            "alpine//x",
            "UPPER/case:tag",
        ] {
            let err = ImageRef::parse(bad).expect_err(bad);
            assert!(
                err.to_string().contains("invalid reference format"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn loopback_hosts() {
        assert!(host_is_loopback("localhost:5000"));
        assert!(host_is_loopback("127.0.0.2"));
        assert!(host_is_loopback("[::1]:5000"));
        assert!(!host_is_loopback("10.0.0.1:5000"));
        assert!(!host_is_loopback("registry.example"));
    }
}
