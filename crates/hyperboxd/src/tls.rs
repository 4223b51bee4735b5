//! How the API is guarded on TCP: TLS from `[daemon] tls_cert` / `tls_key` (rustls, ring
//! provider), client certificates checked against `tls_client_ca`, and a bearer token from
//! `api_token_file`. The unix socket has none of these: its file mode guards it.
//!
//! Everything is read and checked at start, before the store opens, so a missing or broken
//! file stops the daemon with the file's name. SIGHUP reads them again ([`LiveSecurity`]):
//! a rotated certificate or token takes effect without a restart, and files that no longer
//! load leave the running protection in place.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, RwLock};

use anyhow::{bail, Context};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hb_config::DaemonConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// The TCP listeners' protection, built from `[daemon]`.
#[derive(Clone, Default)]
pub struct TcpSecurity {
    /// TLS on every TCP connection, when `tls_cert` and `tls_key` are set.
    pub tls: Option<TlsAcceptor>,
    /// Whether TLS asks for and verifies client certificates (`tls_client_ca`).
    pub client_certificates: bool,
    /// The bearer token every TCP request must carry (`api_token_file`).
    pub token: Option<Arc<BearerToken>>,
}

impl TcpSecurity {
    /// Reads and checks the certificate, key, client CA and token files named in `[daemon]`;
    /// errors name the key and the file.
    pub fn from_config(daemon: &DaemonConfig) -> anyhow::Result<TcpSecurity> {
        let token = match daemon.api_token_file() {
            Some(path) => Some(Arc::new(BearerToken::read(path)?)),
            None => None,
        };
        let (tls, client_certificates) = match (daemon.tls_cert(), daemon.tls_key()) {
            (Some(cert), Some(key)) => (
                Some(acceptor(cert, key, daemon.tls_client_ca())?),
                daemon.tls_client_ca().is_some(),
            ),
            (None, None) => (None, false),
            // Config validation refuses these; say so again rather than serve plain text.
            _ => bail!("[daemon] tls_cert and tls_key must be set together"),
        };
        Ok(TcpSecurity {
            tls,
            client_certificates,
            token,
        })
    }

    /// True when TCP clients are both encrypted and authenticated, which is what an address
    /// off loopback requires.
    pub fn guards_remote_clients(&self) -> bool {
        self.tls.is_some() && (self.client_certificates || self.token.is_some())
    }

    /// What protects TCP, for the startup log.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        match (&self.tls, self.client_certificates) {
            (None, _) => parts.push("plain HTTP"),
            (Some(_), false) => parts.push("TLS"),
            (Some(_), true) => parts.push("TLS with client certificates"),
        }
        if self.token.is_some() {
            parts.push("bearer token");
        }
        parts.join(" + ")
    }
}

/// The TCP protection in force, shared by the accept loops (TLS per new connection) and the
/// token check (per request); SIGHUP swaps in a new one.
#[derive(Clone)]
pub struct LiveSecurity {
    current: Arc<RwLock<TcpSecurity>>,
    /// A TCP listener is off loopback: a new protection must still guard remote clients.
    remote_clients: bool,
}

impl LiveSecurity {
    /// `security` in force; `remote_clients` when a TCP listener is off loopback.
    pub fn new(security: TcpSecurity, remote_clients: bool) -> LiveSecurity {
        LiveSecurity {
            current: Arc::new(RwLock::new(security)),
            remote_clients,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, TcpSecurity> {
        self.current.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The TLS acceptor for a new TCP connection (None: plain HTTP).
    pub fn tls(&self) -> Option<TlsAcceptor> {
        self.read().tls.clone()
    }

    /// The token a TCP request must carry (None: no token check).
    pub fn token(&self) -> Option<Arc<BearerToken>> {
        self.read().token.clone()
    }

    /// What protects TCP now, for the log.
    pub fn describe(&self) -> String {
        self.read().describe()
    }

    /// Reads `[daemon]`'s certificate, key, client CA and token files again and puts them in
    /// force for new connections and requests (open connections keep their TLS session).
    /// On error (a file that does not load, or a protection that no longer guards a listener
    /// off loopback) the running protection stays.
    pub fn reload(&self, daemon: &DaemonConfig) -> anyhow::Result<()> {
        let new = TcpSecurity::from_config(daemon)?;
        if self.remote_clients && !new.guards_remote_clients() {
            bail!(
                "a TCP listener is off loopback, and the new settings would leave it without \
                 TLS and client authentication"
            );
        }
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = new;
        Ok(())
    }
}

/// The rustls server config: the certificate chain and key, TLS 1.2 and 1.3 with the ring
/// provider, and client certificates required when a client CA is given.
fn acceptor(cert: &Path, key: &Path, client_ca: Option<&Path>) -> anyhow::Result<TlsAcceptor> {
    let chain = read_certificates(cert, "tls_cert")?;
    let key_der = read_pem_file(key, "tls_key")?;
    warn_if_world_readable(key, "tls_key");
    let private_key = PrivateKeyDer::from_pem_slice(&key_der).map_err(|e| {
        anyhow::anyhow!(
            "[daemon] tls_key {}: no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {e}",
            key.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions of the ring provider")?;
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in read_certificates(ca, "tls_client_ca")? {
                roots.add(c).with_context(|| {
                    format!(
                        "[daemon] tls_client_ca {}: a certificate is not a usable CA",
                        ca.display()
                    )
                })?;
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .with_context(|| {
                        format!(
                            "[daemon] tls_client_ca {}: cannot verify with it",
                            ca.display()
                        )
                    })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(chain, private_key)
        .with_context(|| {
            format!(
                "[daemon] tls_cert {} and tls_key {} do not make a usable certificate and key \
             (does the key belong to the certificate?)",
                cert.display(),
                key.display()
            )
        })?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn read_pem_file(path: &Path, key: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading [daemon] {key} {}", path.display()))
}

/// Every `CERTIFICATE` block of a PEM file; at least one.
fn read_certificates(path: &Path, key: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = read_pem_file(path, key)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("[daemon] {key} {}: not valid PEM: {e}", path.display()))?;
    if certs.is_empty() {
        bail!(
            "[daemon] {key} {}: no PEM CERTIFICATE block in the file",
            path.display()
        );
    }
    Ok(certs)
}

/// A private key others can read is a key others have; the daemon still starts (the file may
/// sit in a directory only root can enter), but says so.
fn warn_if_world_readable(path: &Path, key: &str) {
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode();
        if mode & 0o004 != 0 {
            tracing::warn!(
                "[daemon] {key} {} is readable by every user (mode {:o}); chmod 600 it",
                path.display(),
                mode & 0o7777
            );
        }
    }
}

/// The API's bearer token, compared in constant time.
pub struct BearerToken {
    token: Vec<u8>,
}

impl BearerToken {
    /// Tokens shorter than this are accepted with a warning.
    const SHORT: usize = 16;

    /// Reads the token from `path` (surrounding whitespace, such as the final newline, is not
    /// part of it). Refuses a file every user can read or write: the token is root on this
    /// host, so a world-readable token is no authentication at all.
    pub fn read(path: &Path) -> anyhow::Result<BearerToken> {
        let meta = std::fs::metadata(path)
            .with_context(|| format!("reading [daemon] api_token_file {}", path.display()))?;
        let mode = meta.permissions().mode();
        if mode & 0o006 != 0 {
            bail!(
                "[daemon] api_token_file {} can be read or written by every user (mode {:o}): \
                 the token gives root on this host; chmod 600 (or 640 for a group) it",
                path.display(),
                mode & 0o7777
            );
        }
        let raw = std::fs::read(path)
            .with_context(|| format!("reading [daemon] api_token_file {}", path.display()))?;
        Self::from_bytes(&raw)
            .with_context(|| format!("[daemon] api_token_file {}", path.display()))
    }

    /// A token from the file's bytes: printable ASCII without spaces (it travels in an HTTP
    /// header), surrounding whitespace trimmed.
    pub fn from_bytes(raw: &[u8]) -> anyhow::Result<BearerToken> {
        let token = raw.trim_ascii();
        if token.is_empty() {
            bail!("the file holds no token");
        }
        if !token.iter().all(u8::is_ascii_graphic) {
            bail!(
                "the token must be printable ASCII without spaces (it is sent in an HTTP header)"
            );
        }
        if token.len() < Self::SHORT {
            tracing::warn!(
                "the API token is only {} characters long; use {} or more (openssl rand -hex 32)",
                token.len(),
                Self::SHORT
            );
        }
        Ok(BearerToken {
            token: token.to_vec(),
        })
    }

    /// Whether an `Authorization` header value is `Bearer <this token>` (the scheme in any
    /// case). Takes the same time whatever the header holds, for a given token.
    pub fn accepts(&self, authorization: Option<&HeaderValue>) -> bool {
        let given = authorization.map_or(&[][..], HeaderValue::as_bytes);
        let (scheme, credentials) = match given.iter().position(|b| *b == b' ') {
            Some(i) => (&given[..i], given[i + 1..].trim_ascii()),
            None => (given, &[][..]),
        };
        let scheme_ok = scheme.eq_ignore_ascii_case(b"bearer");
        constant_time_eq(credentials, &self.token) & scheme_ok
    }
}

/// Compares `given` with `expected` in time that does not depend on where they differ
/// (`subtle`; a length difference answers at once, and the length is not the secret).
fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(given.ct_eq(expected))
}

/// The middleware in front of the API on TCP: when a token is configured, a request without
/// `Authorization: Bearer <token>` (`/_ping` included, as a client certificate is needed for
/// every request with `--tlsverify`) gets 401 and Docker's error JSON.
pub async fn require_token(
    State(security): State<LiveSecurity>,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = security.token() else {
        return next.run(request).await;
    };
    let header_value = request.headers().get(header::AUTHORIZATION);
    if token.accepts(header_value) {
        return next.run(request).await;
    }
    let message = if header_value.is_some() {
        "unauthorized: the bearer token is wrong"
    } else {
        "unauthorized: this API needs an `Authorization: Bearer <token>` header (for the \
         docker CLI: \"HttpHeaders\" in config.json)"
    };
    (
        StatusCode::UNAUTHORIZED,
        [(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"hyperboxd\""),
        )],
        axum::Json(serde_json::json!({ "message": message })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(v: &str) -> HeaderValue {
        HeaderValue::from_str(v).expect("header value")
    }

    fn token_only() -> TcpSecurity {
        TcpSecurity {
            token: Some(Arc::new(
                BearerToken::from_bytes(b"tok-0123456789abcdef").expect("token"),
            )),
            ..TcpSecurity::default()
        }
    }

    #[test]
    fn a_reload_that_would_leave_a_remote_listener_unguarded_is_refused() {
        // The new config has no TLS and no token.
        let plain = DaemonConfig::default();
        let remote = LiveSecurity::new(token_only(), true);
        let err = remote.reload(&plain).expect_err("must be refused");
        assert!(err.to_string().contains("off loopback"), "{err}");
        assert!(
            err.to_string()
                .contains("without TLS and client authentication"),
            "{err}"
        );
        assert!(remote.token().is_some(), "the running protection stays");
        // On loopback the same reload is fine.
        let local = LiveSecurity::new(token_only(), false);
        local.reload(&plain).expect("reload");
        assert!(local.token().is_none() && local.tls().is_none());
    }

    #[test]
    fn tokens_are_compared_exactly_whatever_the_scheme_case() {
        let t = BearerToken::from_bytes(b"  s3cret-token-0123456789\n").expect("token");
        assert!(t.accepts(Some(&header("Bearer s3cret-token-0123456789"))));
        assert!(t.accepts(Some(&header("bearer s3cret-token-0123456789"))));
        assert!(!t.accepts(None));
        assert!(!t.accepts(Some(&header("Bearer"))));
        assert!(!t.accepts(Some(&header("Bearer "))));
        assert!(!t.accepts(Some(&header("Basic s3cret-token-0123456789"))));
        assert!(!t.accepts(Some(&header("Bearer s3cret-token-012345678"))));
        assert!(!t.accepts(Some(&header("Bearer s3cret-token-01234567890"))));
        assert!(!t.accepts(Some(&header("Bearer S3cret-token-0123456789"))));
        assert!(!t.accepts(Some(&header("s3cret-token-0123456789"))));
    }

    #[test]
    fn token_files_must_hold_a_printable_token() {
        assert!(BearerToken::from_bytes(b"\n \n").is_err());
        assert!(BearerToken::from_bytes(b"two words").is_err());
        assert!(BearerToken::from_bytes("caf\u{e9}".as_bytes()).is_err());
    }

    #[test]
    fn constant_time_eq_matches_only_equal_bytes() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abd", b"abc"));
        assert!(!constant_time_eq(b"ab", b"abc"));
        assert!(!constant_time_eq(b"abcd", b"abc"));
        assert!(!constant_time_eq(b"", b"abc"));
    }

    #[test]
    fn world_readable_token_files_are_refused_and_private_ones_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("token");
        std::fs::write(&p, "0123456789abcdef0123\n").expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = BearerToken::read(&p).err().expect("refused").to_string();
        assert!(err.contains("every user") && err.contains("644"), "{err}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let t = BearerToken::read(&p).expect("read");
        assert!(t.accepts(Some(&header("Bearer 0123456789abcdef0123"))));
        let missing = BearerToken::read(&dir.path().join("absent"))
            .err()
            .expect("missing")
            .to_string();
        assert!(
            missing.contains("api_token_file") && missing.contains("absent"),
            "{missing}"
        );
    }
}
