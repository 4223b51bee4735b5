//! The client side of hyperboxd's guarded TCP API (its `tls.rs`): TLS with rustls (ring
//! provider), an optional client certificate, and the bearer token; flags and defaults as the
//! docker CLI has them (`--tls`, `--tlsverify`, `--tlscacert`, `--tlscert`, `--tlskey`, a cert
//! dir holding `ca.pem`, `cert.pem`, `key.pem`). Also turns TLS failures into messages that
//! say what to change.

use std::error::Error as StdError;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use hyper::header::HeaderValue;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{AlertDescription, CertificateError};
use tokio_rustls::TlsConnector;

/// What the user asked for, from flags and environment, before any file is read. Not
/// `Debug`: it may hold the token.
#[derive(Clone, Default)]
pub struct SecurityOptions {
    /// `--tls`: TLS, the server verified against `ca_cert` or the system's roots.
    pub tls: bool,
    /// `--tlsverify`: TLS, the server verified against a CA file.
    pub tls_verify: bool,
    /// `HYPERBOX_TLS_VERIFY` (like `DOCKER_TLS_VERIFY`): `--tlsverify` from the environment,
    /// for TCP addresses only.
    pub tls_verify_env: bool,
    /// `--tlscacert`.
    pub ca_cert: Option<PathBuf>,
    /// `--tlscert`.
    pub client_cert: Option<PathBuf>,
    /// `--tlskey`.
    pub client_key: Option<PathBuf>,
    /// Where `ca.pem`, `cert.pem` and `key.pem` are looked for when no flag names them
    /// (`HYPERBOX_CERT_PATH`, else `~/.hyperbox`).
    pub cert_dir: Option<PathBuf>,
    /// `--token-file`.
    pub token_file: Option<PathBuf>,
    /// `HYPERBOX_TOKEN`: the token itself.
    pub token: Option<String>,
}

impl SecurityOptions {
    /// True when a flag asks for TLS: `--tls`, `--tlsverify`, or a certificate flag (giving
    /// one only makes sense with TLS, so it is taken as asking for it, which docker does not).
    pub fn wants_tls_by_flag(&self) -> bool {
        self.tls
            || self.tls_verify
            || self.ca_cert.is_some()
            || self.client_cert.is_some()
            || self.client_key.is_some()
    }

    /// True when a flag or the environment asks for TLS.
    pub fn wants_tls(&self) -> bool {
        self.wants_tls_by_flag() || self.tls_verify_env
    }

    /// Whether the server must be verified against a CA file rather than the system's roots.
    fn verify_with_ca_file(&self) -> bool {
        self.tls_verify || self.tls_verify_env
    }
}

/// Reads a yes/no environment variable: set to anything but empty, `0`, `false`, `no` or `off`
/// (any case) means yes. Docker takes any non-empty value as yes; `0` meaning no surprises less.
pub fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| {
        let v = v.trim().to_ascii_lowercase();
        !matches!(v.as_str(), "" | "0" | "false" | "no" | "off")
    })
}

/// The default cert dir: `HYPERBOX_CERT_PATH` when set and not empty, else `~/.hyperbox`.
pub fn default_cert_dir() -> Option<PathBuf> {
    match std::env::var_os("HYPERBOX_CERT_PATH") {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(|h| Path::new(&h).join(".hyperbox")),
    }
}

/// A file named by a flag, or found in the cert dir; `origin` says which, for errors.
struct ChosenFile {
    path: PathBuf,
    origin: String,
}

impl ChosenFile {
    /// `flag_value`, else `name` in the cert dir when it exists there.
    fn pick(flag: &str, flag_value: Option<&Path>, dir: Option<&Path>, name: &str) -> Option<Self> {
        if let Some(p) = flag_value {
            return Some(ChosenFile {
                path: p.to_path_buf(),
                origin: flag.to_string(),
            });
        }
        let p = dir?.join(name);
        p.exists().then(|| ChosenFile {
            origin: format!("{name} from the cert dir (HYPERBOX_CERT_PATH or ~/.hyperbox)"),
            path: p,
        })
    }

    fn describe(&self) -> String {
        format!("{} ({})", self.path.display(), self.origin)
    }

    fn read(&self) -> anyhow::Result<Vec<u8>> {
        std::fs::read(&self.path).with_context(|| format!("reading {}", self.describe()))
    }

    /// Every `CERTIFICATE` block; at least one.
    fn certificates(&self) -> anyhow::Result<Vec<CertificateDer<'static>>> {
        let pem = self.read()?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow!("{}: not valid PEM: {e}", self.describe()))?;
        if certs.is_empty() {
            bail!("{}: no PEM CERTIFICATE block in the file", self.describe());
        }
        Ok(certs)
    }

    fn private_key(&self) -> anyhow::Result<PrivateKeyDer<'static>> {
        let pem = self.read()?;
        PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
            anyhow!(
                "{}: no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {e}",
                self.describe()
            )
        })
    }
}

/// TLS towards one daemon address: the connector, the name its certificate must hold, and
/// what the configuration was, so that failures can say what to change.
#[derive(Clone)]
pub struct ClientTls {
    connector: TlsConnector,
    server_name: ServerName<'static>,
    /// What the server's certificate is checked against, for messages.
    trust: String,
    /// The client certificate presented, for messages.
    client_cert: Option<String>,
}

impl ClientTls {
    /// Reads the files `options` name (or finds them in the cert dir) and builds the rustls
    /// client for `host_port` (`HOST:PORT`, the name the server's certificate must hold).
    pub fn new(options: &SecurityOptions, host_port: &str) -> anyhow::Result<ClientTls> {
        let dir = options.cert_dir.as_deref();
        let ca = ChosenFile::pick("--tlscacert", options.ca_cert.as_deref(), dir, "ca.pem");
        let cert = ChosenFile::pick("--tlscert", options.client_cert.as_deref(), dir, "cert.pem");
        let key = ChosenFile::pick("--tlskey", options.client_key.as_deref(), dir, "key.pem");

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        let trust = match &ca {
            Some(ca) => {
                for c in ca.certificates()? {
                    roots.add(c).with_context(|| {
                        format!("{}: a certificate is not a usable CA", ca.describe())
                    })?;
                }
                format!("the CA in {}", ca.describe())
            }
            None if options.verify_with_ca_file() => bail!(
                "--tlsverify needs the CA certificate that signed the daemon's: pass \
                 --tlscacert FILE, or put ca.pem in {} (or use --tls to trust the system's \
                 root certificates instead)",
                dir.map_or("HYPERBOX_CERT_PATH or ~/.hyperbox".to_string(), |d| d
                    .display()
                    .to_string())
            ),
            None => {
                let found = rustls_native_certs::load_native_certs();
                let (added, _) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    let why = found
                        .errors
                        .first()
                        .map_or(String::new(), |e| format!(" ({e})"));
                    bail!(
                        "--tls: no system root certificates could be read{why}; pass the \
                         daemon's CA with --tlscacert FILE"
                    );
                }
                "the system's root certificates (no --tlscacert)".to_string()
            }
        };

        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions of the ring provider")?
            .with_root_certificates(roots);
        let (config, client_cert) = match (cert, key) {
            (Some(cert), Some(key)) => {
                let chain = cert.certificates()?;
                let private_key = key.private_key()?;
                let config = builder
                    .with_client_auth_cert(chain, private_key)
                    .with_context(|| {
                        format!(
                            "the client certificate {} and key {} do not go together (does \
                             the key belong to the certificate?)",
                            cert.describe(),
                            key.describe()
                        )
                    })?;
                (config, Some(cert.describe()))
            }
            (Some(cert), None) => bail!(
                "the client certificate {} needs its key: pass --tlskey FILE",
                cert.describe()
            ),
            (None, Some(key)) => bail!(
                "the client key {} needs its certificate: pass --tlscert FILE",
                key.describe()
            ),
            (None, None) => (builder.with_no_client_auth(), None),
        };
        Ok(ClientTls {
            connector: TlsConnector::from(Arc::new(config)),
            server_name: server_name(host_port)?,
            trust,
            client_cert,
        })
    }

    /// The TLS handshake over `tcp`.
    pub async fn connect(
        &self,
        tcp: tokio::net::TcpStream,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        self.connector.connect(self.server_name.clone(), tcp).await
    }

    /// What to change when `err` (anywhere in its chain) is a TLS failure; None when it is
    /// not one. With TLS 1.3 a refused client certificate shows only when the first answer is
    /// read, so this is asked of request errors too, not only of the handshake's.
    pub fn explain(&self, err: &(dyn StdError + 'static)) -> Option<String> {
        let tls_error = find_in_chain(err)?;
        Some(match tls_error {
            rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            ) => format!(
                "the daemon's certificate failed verification: it is not valid for {:?} \
                 ({tls_error}); connect with -H using a name or address the certificate holds",
                self.server_name.to_str()
            ),
            rustls::Error::InvalidCertificate(_) => format!(
                "the daemon's certificate failed verification against {} ({tls_error}); \
                 pass the CA that signed it with --tlscacert FILE",
                self.trust
            ),
            rustls::Error::AlertReceived(alert) => match &self.client_cert {
                _ if *alert == AlertDescription::CertificateRequired => {
                    needs_client_certificate(tls_error)
                }
                None if refuses_a_certificate(*alert) => needs_client_certificate(tls_error),
                Some(cert) if refuses_a_certificate(*alert) => format!(
                    "the daemon refused the client certificate {cert} ({tls_error}): it must \
                     be signed by the CA in the daemon's [daemon] tls_client_ca"
                ),
                _ => format!("the daemon ended the TLS connection: {tls_error}"),
            },
            rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
                format!(
                    "the daemon did not answer in TLS ({tls_error}): it serves plain HTTP on \
                     this port (no [daemon] tls_cert); drop --tls / --tlsverify / https://"
                )
            }
            other => format!("TLS with the daemon failed: {other}"),
        })
    }
}

/// The message for a daemon that wants a client certificate and got none.
fn needs_client_certificate(tls_error: &rustls::Error) -> String {
    format!(
        "the daemon refused the TLS connection ({tls_error}): it requires a client \
         certificate; pass --tlscert FILE --tlskey FILE (signed by the CA in its [daemon] \
         tls_client_ca)"
    )
}

/// Alerts a server sends when the client's certificate (or its absence) is the problem.
fn refuses_a_certificate(alert: AlertDescription) -> bool {
    matches!(
        alert,
        AlertDescription::BadCertificate
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnknownCA
            | AlertDescription::AccessDenied
            | AlertDescription::DecryptError
            | AlertDescription::HandshakeFailure
    )
}

/// The rustls error inside `err`'s chain. An `io::Error` shows the error it wraps in Display
/// but does not return it from `source()`, so it is unwrapped by hand.
fn find_in_chain<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        if let Some(found) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(found);
        }
        current = e.source();
    }
    None
}

/// The name in `HOST:PORT` (`[v6]:PORT` too) the server's certificate must hold.
fn server_name(host_port: &str) -> anyhow::Result<ServerName<'static>> {
    let host = match host_port.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => host_port,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string())
        .map_err(|e| anyhow!("{host:?} cannot be checked against a certificate: {e}"))
}

/// The bearer token sent as `Authorization: Bearer ...` on every request, and where it came
/// from (for the message when the daemon refuses it).
#[derive(Clone)]
pub struct ApiToken {
    /// The whole header value, marked sensitive.
    pub header: HeaderValue,
    /// `--token-file PATH` or `HYPERBOX_TOKEN`.
    pub origin: String,
}

impl ApiToken {
    /// The token from `--token-file` (first) or `HYPERBOX_TOKEN`; None when neither is set.
    pub fn from_options(options: &SecurityOptions) -> anyhow::Result<Option<ApiToken>> {
        if let Some(path) = &options.token_file {
            let origin = format!("--token-file {}", path.display());
            let raw = std::fs::read(path).with_context(|| format!("reading {origin}"))?;
            return Self::from_bytes(&raw, origin).map(Some);
        }
        match &options.token {
            Some(t) if !t.is_empty() => {
                Self::from_bytes(t.as_bytes(), "HYPERBOX_TOKEN".to_string()).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// Surrounding whitespace (a file's final newline) is not part of the token; what is left
    /// must fit in a header, as hyperboxd requires of its own token file.
    fn from_bytes(raw: &[u8], origin: String) -> anyhow::Result<ApiToken> {
        let token = raw.trim_ascii();
        if token.is_empty() {
            bail!("{origin} holds no token");
        }
        if !token.iter().all(u8::is_ascii_graphic) {
            bail!("{origin}: the token must be printable ASCII without spaces");
        }
        let mut value = b"Bearer ".to_vec();
        value.extend_from_slice(token);
        let mut header = HeaderValue::from_bytes(&value)
            .map_err(|e| anyhow!("{origin}: not usable in a header: {e}"))?;
        // Keeps it out of hyper's debug output.
        header.set_sensitive(true);
        Ok(ApiToken { header, origin })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_come_from_the_host_part() {
        assert_eq!(
            server_name("127.0.0.1:9999")
                .map(|n| n.to_str().into_owned())
                .ok(),
            Some("127.0.0.1".to_string())
        );
        assert_eq!(
            server_name("[::1]:9999")
                .map(|n| n.to_str().into_owned())
                .ok(),
            Some("::1".to_string())
        );
        assert_eq!(
            server_name("docker.example:2376")
                .map(|n| n.to_str().into_owned())
                .ok(),
            Some("docker.example".to_string())
        );
        assert!(server_name("bad name:1").is_err());
    }

    #[test]
    fn tokens_are_trimmed_and_must_fit_a_header() {
        let t = ApiToken::from_bytes(b"  abc-123\n", "x".into()).expect("token");
        assert_eq!(t.header.as_bytes(), b"Bearer abc-123");
        assert!(t.header.is_sensitive());
        assert!(ApiToken::from_bytes(b"\n", "x".into()).is_err());
        assert!(ApiToken::from_bytes(b"two words", "x".into()).is_err());
        let none = SecurityOptions {
            token: Some(String::new()),
            ..Default::default()
        };
        assert!(ApiToken::from_options(&none).expect("no token").is_none());
    }

    #[test]
    fn missing_files_are_named_with_their_flag() {
        let dir = tempfile::tempdir().expect("tempdir");
        let absent = dir.path().join("absent.pem");
        let options = SecurityOptions {
            tls_verify: true,
            ca_cert: Some(absent.clone()),
            ..Default::default()
        };
        let err = format!(
            "{:#}",
            ClientTls::new(&options, "127.0.0.1:1").err().expect("err")
        );
        assert!(
            err.contains("--tlscacert") && err.contains(&absent.display().to_string()),
            "{err}"
        );

        // --tlsverify with an empty cert dir: no CA to verify with.
        let options = SecurityOptions {
            tls_verify: true,
            cert_dir: Some(dir.path().to_path_buf()),
            ..Default::default()
        };
        let err = format!(
            "{:#}",
            ClientTls::new(&options, "127.0.0.1:1").err().expect("err")
        );
        assert!(
            err.contains("--tlscacert") && err.contains("ca.pem"),
            "{err}"
        );

        let token_file = dir.path().join("no-token");
        let options = SecurityOptions {
            token_file: Some(token_file.clone()),
            ..Default::default()
        };
        let err = format!("{:#}", ApiToken::from_options(&options).err().expect("err"));
        assert!(
            err.contains("--token-file") && err.contains(&token_file.display().to_string()),
            "{err}"
        );
    }
}
