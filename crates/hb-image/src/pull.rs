//! `pull`: brings an image from an OCI distribution registry into the store. Resolves the
//! manifest (index → this platform), verifies every blob (sha256 of what arrives, and of the
//! uncompressed diff_id) before anything references it, downloads layers concurrently with
//! bounded retries, and records the image in the catalog in one transaction at the end. Layers
//! already in the store are never fetched again; two pulls sharing a layer fetch it once.

use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::manifest::{OciDescriptor, OciImageIndex, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, Semaphore};

use crate::catalog::{ImageCatalog, ImageRecord, LayerRecord};
use crate::credentials::{Credential, CredentialFile};
use crate::ingest::{ingest_layer, Compression};
use crate::reference::{host_is_loopback, ImageRef};
use crate::ImageError;

/// Largest manifest or index accepted (the distribution spec's recommended limit).
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;
/// Largest image config accepted.
const MAX_CONFIG_BYTES: i64 = 16 * 1024 * 1024;

const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// An os/architecture[/variant] triple, as `--platform` takes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// `amd64`, `arm64`…
    pub architecture: String,
    /// `v8`, `v7`…
    pub variant: Option<String>,
}

impl Platform {
    /// This machine's platform in OCI terms.
    pub fn host() -> Platform {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "arm" => "arm",
            "powerpc64" => "ppc64le",
            "s390x" => "s390x",
            "riscv64" => "riscv64",
            other => other,
        };
        Platform {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: None,
        }
    }

    /// Parses `os/arch[/variant]`.
    pub fn parse(s: &str) -> Result<Platform, ImageError> {
        let parts: Vec<&str> = s.split('/').collect();
        let bad = || ImageError::InvalidManifest {
            what: "platform".into(),
            reason: format!("{s:?} is not os/arch[/variant]"),
        };
        if parts.len() < 2 || parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
            return Err(bad());
        }
        Ok(Platform {
            os: parts[0].to_string(),
            architecture: parts[1].to_string(),
            variant: parts.get(2).map(|v| v.to_string()),
        })
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// What a pull reports as it goes (streamed to the CLI as JSON lines).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum PullEvent {
    /// The manifest is known: these layers (short id, compressed size) make the image.
    Resolved {
        /// Manifest digest.
        digest: String,
        /// (layer short id, bytes to download) per layer.
        layers: Vec<(String, u64)>,
    },
    /// This layer is already in the store.
    LayerExists {
        /// Layer short id.
        id: String,
    },
    /// Bytes of a layer downloaded so far.
    LayerProgress {
        /// Layer short id.
        id: String,
        /// Bytes so far.
        current: u64,
        /// Bytes in all.
        total: u64,
    },
    /// A layer is downloaded, verified and stored.
    LayerDone {
        /// Layer short id.
        id: String,
    },
    /// A transient failure; it will be tried again.
    Retrying {
        /// What failed.
        what: String,
        /// Attempt about to start.
        attempt: u32,
    },
}

/// How the puller reaches registries.
#[derive(Clone, Debug)]
pub struct PullerConfig {
    /// Registries (host[:port]) allowed over plain HTTP besides loopback ones.
    pub insecure_registries: Vec<String>,
    /// Connect and read timeout.
    pub timeout: Duration,
    /// Layers downloaded at once per pull.
    pub max_concurrent_downloads: usize,
    /// Attempts per request for transient failures (5xx, 429, resets, timeouts).
    pub attempts: u32,
    /// First backoff; doubles each retry.
    pub backoff: Duration,
}

impl Default for PullerConfig {
    fn default() -> Self {
        PullerConfig {
            insecure_registries: Vec::new(),
            timeout: Duration::from_secs(30),
            max_concurrent_downloads: 3,
            attempts: 4,
            backoff: Duration::from_millis(200),
        }
    }
}

/// A registry's client and the credential it was built with.
type RegistryClient = (Option<Credential>, Arc<Client>);

/// Pulls images into a catalog.
pub struct Puller {
    catalog: ImageCatalog,
    credentials: Arc<CredentialFile>,
    config: PullerConfig,
    /// One client per registry, rebuilt when its saved credential changes: `oci-client`
    /// keeps the first credential and its tokens for the client's lifetime.
    clients: Mutex<HashMap<String, RegistryClient>>,
    /// One lock per layer diff_id being fetched, so concurrent pulls fetch it once.
    inflight: InflightMap,
}

impl Puller {
    /// A puller writing into `catalog`, authenticating with `credentials`.
    pub fn new(
        catalog: ImageCatalog,
        credentials: Arc<CredentialFile>,
        config: PullerConfig,
    ) -> Puller {
        Puller {
            clients: Mutex::new(HashMap::new()),
            catalog,
            credentials,
            config,
            inflight: Mutex::new(HashMap::new()),
        }
    }

    /// The catalog images are pulled into.
    pub fn catalog(&self) -> &ImageCatalog {
        &self.catalog
    }

    fn new_client(&self, registry: &str) -> Client {
        let plain = host_is_loopback(registry)
            || self
                .config
                .insecure_registries
                .iter()
                .any(|r| r == registry);
        Client::new(ClientConfig {
            protocol: if plain {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            connect_timeout: Some(self.config.timeout),
            read_timeout: Some(self.config.timeout),
            max_concurrent_download: self.config.max_concurrent_downloads.max(1),
            platform_resolver: None,
            user_agent: concat!("hyperbox/", env!("CARGO_PKG_VERSION")),
            ..Default::default()
        })
    }

    /// The client for a registry and the credential to present.
    fn client_for(&self, registry: &str) -> (Arc<Client>, RegistryAuth) {
        let cred = self.credentials.get(registry);
        let auth = match &cred {
            Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
            None => RegistryAuth::Anonymous,
        };
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        match clients.get(registry) {
            Some((c, client)) if *c == cred => (client.clone(), auth),
            _ => {
                let client = Arc::new(self.new_client(registry));
                clients.insert(registry.to_string(), (cred, client.clone()));
                (client, auth)
            }
        }
    }

    /// Checks credentials against a registry the way `docker login` does (a token exchange
    /// where the registry uses tokens) and, when accepted, saves them.
    pub async fn login(&self, registry: &str, cred: Credential) -> Result<(), ImageError> {
        let probe = Reference::with_tag(
            registry.into(),
            "hyperbox/login-probe".into(),
            "latest".into(),
        );
        let auth = RegistryAuth::Basic(cred.username.clone(), cred.password.clone());
        // A fresh client: a cached one would present the credential it first saw.
        let client = self.new_client(registry);
        // Token registries check the credentials when issuing a token; basic-auth registries
        // only when a request carries them: ask for a manifest that need not exist. Any answer
        // but 401 (a 404 for the probe, typically) means the credentials were accepted.
        client
            .auth(&probe, &auth, oci_client::RegistryOperation::Pull)
            .await
            .map_err(|e| classify(registry, registry, e, 1))?;
        match client
            .pull_manifest_raw(&probe, &auth, MANIFEST_TYPES)
            .await
        {
            Err(
                e @ (OciDistributionError::UnauthorizedError { .. }
                | OciDistributionError::AuthenticationFailure(_)),
            ) => return Err(classify(registry, registry, e, 1)),
            Err(OciDistributionError::RequestError(e)) => {
                return Err(ImageError::Registry {
                    registry: registry.to_string(),
                    detail: format!("cannot reach it: {e}"),
                    attempts: 1,
                })
            }
            _ => {}
        }
        self.credentials.set(registry, Some(cred))
    }

    /// Forgets saved credentials.
    pub fn logout(&self, registry: &str) -> Result<(), ImageError> {
        self.credentials.set(registry, None)
    }

    /// Pulls `reference` for `platform` (the host's when None), reporting through `progress`.
    pub async fn pull(
        &self,
        reference: &ImageRef,
        platform: Option<&Platform>,
        progress: &(dyn Fn(PullEvent) + Send + Sync),
    ) -> Result<ImageRecord, ImageError> {
        let _ingest = self.catalog.ingest_guard().await;
        let registry = reference.registry().to_string();
        let (client, auth) = self.client_for(&registry);
        let client = client.as_ref();
        let want = platform.cloned().unwrap_or_else(Platform::host);
        let oci_ref = reference.as_oci().clone();

        let (mut body, mut digest) = self
            .retry(&registry, "manifest", progress, || async {
                Ok(client
                    .pull_manifest_raw(&oci_ref, &auth, MANIFEST_TYPES)
                    .await?)
            })
            .await?;
        check_manifest_size(&body)?;
        let mut list_digest = None;
        if is_index(&body)? {
            let index: OciImageIndex =
                serde_json::from_slice(&body).map_err(|e| invalid("image index", e))?;
            let entry =
                select_platform(&index, &want).ok_or_else(|| ImageError::NoMatchingPlatform {
                    reference: reference.to_string(),
                    platform: want.to_string(),
                    available: index
                        .manifests
                        .iter()
                        .filter_map(|m| m.platform.as_ref())
                        .map(|p| format!("{}/{}", p.os, p.architecture))
                        .collect::<Vec<_>>()
                        .join(", "),
                })?;
            list_digest = Some(digest.clone());
            let by_digest = oci_ref.clone_with_digest(entry.clone());
            (body, digest) = self
                .retry(&registry, "manifest", progress, || async {
                    Ok(client
                        .pull_manifest_raw(&by_digest, &auth, MANIFEST_TYPES)
                        .await?)
                })
                .await?;
            check_manifest_size(&body)?;
            if is_index(&body)? {
                return Err(ImageError::InvalidManifest {
                    what: "manifest".into(),
                    reason: "an index points at another index".into(),
                });
            }
        }
        let manifest: OciImageManifest =
            serde_json::from_slice(&body).map_err(|e| invalid("image manifest", e))?;
        validate_manifest(&manifest)?;

        // Config: small, fetched whole and verified before use.
        let store = self.catalog.store().clone();
        let config_bytes = if store.has_blob(&manifest.config.digest)? {
            store.read_blob(&manifest.config.digest)?
        } else {
            let bytes = self
                .retry(&registry, "config", progress, || {
                    fetch_small_blob(client, &oci_ref, &manifest.config)
                })
                .await?;
            store.put_bytes(&bytes, Some(&manifest.config.digest))?;
            bytes
        };
        let config = ConfigSummary::parse(&config_bytes)?;
        if config.diff_ids.len() != manifest.layers.len() {
            return Err(ImageError::InvalidManifest {
                what: "image config".into(),
                reason: format!(
                    "{} layers in the manifest but {} diff_ids in the config",
                    manifest.layers.len(),
                    config.diff_ids.len()
                ),
            });
        }

        progress(PullEvent::Resolved {
            digest: digest.clone(),
            layers: manifest
                .layers
                .iter()
                .map(|l| (short(&l.digest), l.size.max(0) as u64))
                .collect(),
        });

        // Layers, at most max_concurrent_downloads at once.
        let limit = Arc::new(Semaphore::new(self.config.max_concurrent_downloads.max(1)));
        let mut tasks = Vec::new();
        let (registry_ref, oci_ref_ref, auth_ref) = (&registry, &oci_ref, &auth);
        for (desc, diff_id) in manifest.layers.iter().zip(&config.diff_ids) {
            let limit = limit.clone();
            let (registry, oci_ref, auth) = (registry_ref, oci_ref_ref, auth_ref);
            tasks.push(async move {
                let _permit = limit.acquire().await.map_err(|_| ImageError::Registry {
                    registry: registry.clone(),
                    detail: "download scheduler closed".into(),
                    attempts: 0,
                })?;
                self.fetch_layer(client, oci_ref, auth, desc, diff_id, progress)
                    .await
            });
        }
        let results = futures_util::future::join_all(tasks).await;
        let mut layers = Vec::with_capacity(results.len());
        for r in results {
            layers.push(r?);
        }

        store.put_bytes(&body, Some(&digest))?;
        let repo_digest = format!(
            "{}@{}",
            reference.repo_name(),
            list_digest.unwrap_or(digest.clone())
        );
        let record = ImageRecord {
            id: manifest.config.digest.clone(),
            manifest_digest: digest,
            manifest_media_type: manifest
                .media_type
                .clone()
                .unwrap_or_else(|| "application/vnd.oci.image.manifest.v1+json".into()),
            layers,
            os: config.os,
            architecture: config.architecture,
            created: config.created,
            repo_digests: merge_repo_digests(&self.catalog, &manifest.config.digest, repo_digest)?,
            added_at: now_secs(),
        };
        let names = if reference.tag().is_some() {
            vec![reference.canonical()]
        } else {
            vec![]
        };
        let catalog = self.catalog.clone();
        let rec = record.clone();
        tokio::task::spawn_blocking(move || catalog.put(&rec, &names))
            .await
            .map_err(join_error)??;
        Ok(record)
    }

    async fn fetch_layer(
        &self,
        client: &Client,
        oci_ref: &Reference,
        auth: &RegistryAuth,
        desc: &OciDescriptor,
        diff_id: &str,
        progress: &(dyn Fn(PullEvent) + Send + Sync),
    ) -> Result<LayerRecord, ImageError> {
        let compression = Compression::from_media_type(&desc.media_type)?;
        let id = short(&desc.digest);
        let entry = InflightEntry::join(&self.inflight, diff_id);
        let _guard = entry.lock.lock().await;
        let store = self.catalog.store().clone();
        let record = |size| LayerRecord {
            diff_id: diff_id.to_string(),
            size,
            source_digest: desc.digest.clone(),
            source_media_type: desc.media_type.clone(),
            source_size: desc.size.max(0) as u64,
        };
        if let Some(info) = store.blob_info(diff_id)? {
            progress(PullEvent::LayerExists { id });
            return Ok(record(info.size));
        }
        let registry = oci_ref.registry().to_string();
        let info = self
            .retry(&registry, &format!("layer {id}"), progress, || {
                download_layer(
                    client,
                    oci_ref,
                    auth,
                    desc,
                    diff_id,
                    compression,
                    &store,
                    &id,
                    progress,
                )
            })
            .await?;
        progress(PullEvent::LayerDone { id });
        Ok(record(info.size))
    }

    /// Runs `op` up to `attempts` times while it fails transiently, doubling the backoff.
    async fn retry<T, F, Fut>(
        &self,
        registry: &str,
        what: &str,
        progress: &(dyn Fn(PullEvent) + Send + Sync),
        mut op: F,
    ) -> Result<T, ImageError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, Attempt>>,
    {
        let mut delay = self.config.backoff;
        let attempts = self.config.attempts.max(1);
        let mut attempt = 1;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Oci(e)) if attempt >= attempts || !is_transient(&e) => {
                    return Err(classify(registry, what, e, attempt))
                }
                Err(Attempt::Transient(detail)) if attempt >= attempts => {
                    return Err(ImageError::Registry {
                        registry: registry.to_string(),
                        detail: format!("{what}: {detail}"),
                        attempts: attempt,
                    })
                }
                Err(_) => {
                    attempt += 1;
                    progress(PullEvent::Retrying {
                        what: what.to_string(),
                        attempt,
                    });
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
        }
    }
}

/// Layer locks by diff_id: the first pull of a layer holds it while downloading, the others
/// wait and then find the layer stored.
type InflightMap = Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>;

/// One pull's share of a layer lock; the map entry goes when its last holder does, on every
/// path (stored already, downloaded, failed), so the map never outgrows the pulls under way.
struct InflightEntry<'a> {
    map: &'a InflightMap,
    key: String,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl<'a> InflightEntry<'a> {
    fn join(map: &'a InflightMap, key: &str) -> Self {
        let lock = map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.to_string())
            .or_default()
            .clone();
        InflightEntry {
            map,
            key: key.to_string(),
            lock,
        }
    }
}

impl Drop for InflightEntry<'_> {
    fn drop(&mut self) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        // Two references: the map's and ours. More means another pull still waits on it.
        if Arc::strong_count(&self.lock) <= 2 {
            map.remove(&self.key);
        }
    }
}

/// How one attempt failed.
enum Attempt {
    /// An error from the registry client, retried if transient.
    Oci(OciDistributionError),
    /// A transient failure of ours (stream cut, timeout).
    Transient(String),
    /// Not worth retrying (bad data, full disk, malformed tar).
    Fatal(ImageError),
}

impl From<OciDistributionError> for Attempt {
    fn from(e: OciDistributionError) -> Self {
        Attempt::Oci(e)
    }
}

fn is_transient(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::ServerError { code, .. } => *code == 429 || *code >= 500,
        OciDistributionError::RegistryError { envelope, .. } => envelope.errors.iter().any(|x| {
            format!("{:?}", x.code)
                .to_ascii_uppercase()
                .contains("TOOMANYREQUESTS")
        }),
        OciDistributionError::RequestError(_) | OciDistributionError::IoError(_) => true,
        _ => false,
    }
}

/// Turns a registry client error into what the user needs to read.
fn classify(registry: &str, what: &str, e: OciDistributionError, attempts: u32) -> ImageError {
    match e {
        OciDistributionError::UnauthorizedError { url } => ImageError::Unauthorized {
            registry: registry.to_string(),
            detail: format!("401 from {url}"),
        },
        OciDistributionError::AuthenticationFailure(detail) => ImageError::Unauthorized {
            registry: registry.to_string(),
            detail,
        },
        OciDistributionError::ImageManifestNotFoundError(detail) => ImageError::RemoteNotFound {
            reference: what.to_string(),
            detail,
        },
        OciDistributionError::ServerError {
            code: 404, message, ..
        } => ImageError::RemoteNotFound {
            reference: what.to_string(),
            detail: message,
        },
        OciDistributionError::ServerError { code: 401, url, .. } => ImageError::Unauthorized {
            registry: registry.to_string(),
            detail: format!("401 from {url}"),
        },
        OciDistributionError::RegistryError { envelope, url } => {
            let detail = envelope
                .errors
                .iter()
                .map(|x| format!("{:?}: {}", x.code, x.message))
                .collect::<Vec<_>>()
                .join("; ");
            let text = detail.to_ascii_uppercase();
            if text.contains("UNKNOWN")
                && (text.contains("MANIFEST") || text.contains("BLOB") || text.contains("NAME"))
            {
                ImageError::RemoteNotFound {
                    reference: what.to_string(),
                    detail,
                }
            } else if text.contains("UNAUTHORIZED") || text.contains("DENIED") {
                ImageError::Unauthorized {
                    registry: registry.to_string(),
                    detail,
                }
            } else {
                ImageError::Registry {
                    registry: registry.to_string(),
                    detail: format!("{what}: {detail} ({url})"),
                    attempts,
                }
            }
        }
        OciDistributionError::DigestError(d) => ImageError::DigestMismatch {
            what: what.to_string(),
            expected: String::new(),
            actual: d.to_string(),
        },
        other => ImageError::Registry {
            registry: registry.to_string(),
            detail: format!("{what}: {other}"),
            attempts,
        },
    }
}

async fn fetch_small_blob(
    client: &Client,
    oci_ref: &Reference,
    desc: &OciDescriptor,
) -> Result<Vec<u8>, Attempt> {
    if desc.size > MAX_CONFIG_BYTES {
        return Err(Attempt::Fatal(ImageError::InvalidManifest {
            what: "image config".into(),
            reason: format!(
                "{} bytes is over the {MAX_CONFIG_BYTES} byte limit",
                desc.size
            ),
        }));
    }
    let mut stream = client.pull_blob_stream(oci_ref, desc).await?;
    let mut out = Vec::new();
    while let Some(piece) = stream.next().await {
        let piece = match piece {
            Ok(p) => p,
            // Everything arrived and the client's verification failed: a wrong blob.
            Err(_) if out.len() as i64 == desc.size => break,
            Err(e) => return Err(Attempt::Transient(e.to_string())),
        };
        out.extend_from_slice(&piece);
        if out.len() as i64 > MAX_CONFIG_BYTES {
            return Err(Attempt::Fatal(ImageError::InvalidManifest {
                what: "image config".into(),
                reason: "body larger than its descriptor".into(),
            }));
        }
    }
    let actual = sha256_digest(&out);
    if actual != desc.digest {
        return Err(Attempt::Fatal(ImageError::DigestMismatch {
            what: "image config".into(),
            expected: desc.digest.clone(),
            actual,
        }));
    }
    Ok(out)
}

/// Streams one layer blob from the registry into the store: bytes are hashed as they arrive
/// and handed to a blocking ingest thread; the ingest sees end-of-stream only once the
/// compressed digest has been verified, so a bad blob is never committed.
#[allow(clippy::too_many_arguments)]
async fn download_layer(
    client: &Client,
    oci_ref: &Reference,
    auth: &RegistryAuth,
    desc: &OciDescriptor,
    diff_id: &str,
    compression: Compression,
    store: &hb_store::Store,
    id: &str,
    progress: &(dyn Fn(PullEvent) + Send + Sync),
) -> Result<hb_store::BlobInfo, Attempt> {
    client
        .store_auth_if_needed(oci_ref.resolve_registry(), auth)
        .await;
    let mut stream = client.pull_blob_stream(oci_ref, desc).await?;
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(16);
    let store = store.clone();
    let expected = diff_id.to_string();
    let ingest = tokio::task::spawn_blocking(move || {
        ingest_layer(&store, ChannelReader::new(rx), compression, Some(&expected))
    });
    let total = desc.size.max(0) as u64;
    let mut hasher = Sha256::new();
    let mut current = 0u64;
    let mut reported = 0u64;
    let mut failure: Option<Attempt> = None;
    let mut ingest_stopped = false;
    while let Some(piece) = stream.next().await {
        match piece {
            Ok(bytes) => {
                hasher.update(&bytes);
                current += bytes.len() as u64;
                if tx.send(Ok(bytes)).await.is_err() {
                    // The ingest stopped early (full disk, malformed tar): its error says why.
                    ingest_stopped = true;
                    break;
                }
                if current - reported >= 512 * 1024 || current == total {
                    reported = current;
                    progress(PullEvent::LayerProgress {
                        id: id.to_string(),
                        current,
                        total,
                    });
                }
            }
            Err(e) => {
                let msg = e.to_string();
                let _ = tx.send(Err(io::Error::other(msg.clone()))).await;
                // The client's own verification fails at the very end: every byte arrived, so
                // this is a wrong blob, not a cut connection, and retrying will not help.
                failure = Some(if current == total && total > 0 {
                    Attempt::Fatal(ImageError::DigestMismatch {
                        what: format!("layer {}", desc.digest),
                        expected: desc.digest.clone(),
                        actual: format!("sha256:{}", hex::encode(hasher.clone().finalize())),
                    })
                } else {
                    Attempt::Transient(format!("download interrupted: {msg}"))
                });
                break;
            }
        }
    }
    if failure.is_none() && !ingest_stopped {
        let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
        if actual != desc.digest {
            let _ = tx
                .send(Err(io::Error::other("compressed digest mismatch")))
                .await;
            failure = Some(Attempt::Fatal(ImageError::DigestMismatch {
                what: format!("layer {}", desc.digest),
                expected: desc.digest.clone(),
                actual,
            }));
        }
    }
    drop(tx);
    let ingested = ingest.await.map_err(|e| Attempt::Fatal(join_error(e)))?;
    if let Some(f) = failure {
        return Err(f);
    }
    ingested.map_err(Attempt::Fatal)
}

/// A blocking `Read` over chunks sent from async code.
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl ChannelReader {
    fn new(rx: mpsc::Receiver<io::Result<Bytes>>) -> Self {
        ChannelReader {
            rx,
            current: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.current = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}

/// The parts of an image config a pull needs.
#[derive(Debug)]
pub struct ConfigSummary {
    /// `rootfs.diff_ids`.
    pub diff_ids: Vec<String>,
    /// `os`.
    pub os: String,
    /// `architecture`.
    pub architecture: String,
    /// `created`.
    pub created: Option<String>,
}

impl ConfigSummary {
    /// Parses and checks an image config.
    pub fn parse(bytes: &[u8]) -> Result<ConfigSummary, ImageError> {
        #[derive(Deserialize)]
        struct RootFs {
            #[serde(rename = "type")]
            kind: String,
            diff_ids: Vec<String>,
        }
        #[derive(Deserialize)]
        struct Raw {
            rootfs: RootFs,
            #[serde(default)]
            os: String,
            #[serde(default)]
            architecture: String,
            created: Option<String>,
        }
        let raw: Raw = serde_json::from_slice(bytes).map_err(|e| invalid("image config", e))?;
        if raw.rootfs.kind != "layers" {
            return Err(ImageError::InvalidManifest {
                what: "image config".into(),
                reason: format!("rootfs type {:?} is not \"layers\"", raw.rootfs.kind),
            });
        }
        for d in &raw.rootfs.diff_ids {
            check_sha256_digest(d, "diff_id")?;
        }
        Ok(ConfigSummary {
            diff_ids: raw.rootfs.diff_ids,
            os: raw.os,
            architecture: raw.architecture,
            created: raw.created,
        })
    }
}

fn validate_manifest(m: &OciImageManifest) -> Result<(), ImageError> {
    let ok_config = [
        "application/vnd.oci.image.config.v1+json",
        "application/vnd.docker.container.image.v1+json",
    ];
    if !ok_config.contains(&m.config.media_type.as_str()) {
        return Err(ImageError::InvalidManifest {
            what: "image manifest".into(),
            reason: format!(
                "config media type {:?} is not a container image (an artifact?)",
                m.config.media_type
            ),
        });
    }
    check_sha256_digest(&m.config.digest, "config digest")?;
    for l in &m.layers {
        check_sha256_digest(&l.digest, "layer digest")?;
        Compression::from_media_type(&l.media_type)?;
    }
    Ok(())
}

/// Refuses anything but `sha256:` + 64 lowercase hex digits.
pub fn check_sha256_digest(d: &str, what: &str) -> Result<(), ImageError> {
    match d.strip_prefix("sha256:") {
        Some(h) if h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) => {
            Ok(())
        }
        _ => Err(ImageError::InvalidManifest {
            what: what.to_string(),
            reason: format!("{d:?} is not a sha256 digest"),
        }),
    }
}

fn is_index(body: &[u8]) -> Result<bool, ImageError> {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
        #[serde(rename = "schemaVersion")]
        schema_version: Option<i64>,
    }
    let p: Probe = serde_json::from_slice(body).map_err(|e| invalid("manifest", e))?;
    if p.schema_version != Some(2) {
        return Err(ImageError::InvalidManifest {
            what: "manifest".into(),
            reason: format!(
                "schemaVersion {:?} is not supported (only 2; schema 1 is deprecated)",
                p.schema_version
            ),
        });
    }
    Ok(match p.media_type.as_deref() {
        Some(t) if t.contains("index") || t.contains("manifest.list") => true,
        Some(_) => false,
        None => p.manifests.is_some(),
    })
}

fn select_platform(index: &OciImageIndex, want: &Platform) -> Option<String> {
    let matches = |variant_must_match: bool| {
        index.manifests.iter().find(|m| {
            m.platform.as_ref().is_some_and(|p| {
                p.os.to_string() == want.os
                    && p.architecture.to_string() == want.architecture
                    && (!variant_must_match || p.variant == want.variant)
            })
        })
    };
    matches(true)
        .or_else(|| {
            if want.variant.is_none() {
                matches(false)
            } else {
                None
            }
        })
        .map(|m| m.digest.clone())
}

fn check_manifest_size(body: &[u8]) -> Result<(), ImageError> {
    if body.len() > MAX_MANIFEST_BYTES {
        return Err(ImageError::InvalidManifest {
            what: "manifest".into(),
            reason: format!(
                "{} bytes is over the {MAX_MANIFEST_BYTES} byte limit",
                body.len()
            ),
        });
    }
    Ok(())
}

fn merge_repo_digests(
    catalog: &ImageCatalog,
    id: &str,
    new: String,
) -> Result<Vec<String>, ImageError> {
    let mut v = catalog
        .resolve(id)?
        .map(|r| r.repo_digests)
        .unwrap_or_default();
    if !v.contains(&new) {
        v.push(new);
    }
    Ok(v)
}

fn invalid(what: &str, e: impl std::fmt::Display) -> ImageError {
    ImageError::InvalidManifest {
        what: what.to_string(),
        reason: e.to_string(),
    }
}

/// `sha256:<hex>` of some bytes.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// The 12-hex-digit short form of a digest, as progress lines show it.
pub fn short(digest: &str) -> String {
    digest
        .strip_prefix("sha256:")
        .unwrap_or(digest)
        .chars()
        .take(12)
        .collect()
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(crate) fn join_error(e: tokio::task::JoinError) -> ImageError {
    ImageError::io("background task", io::Error::other(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_parsing() {
        let p = Platform::parse("linux/arm64/v8").unwrap();
        assert_eq!(p.variant.as_deref(), Some("v8"));
        assert_eq!(p.to_string(), "linux/arm64/v8");
        assert!(Platform::parse("linux").is_err());
        assert!(Platform::parse("linux//").is_err());
        assert_eq!(Platform::host().os, "linux");
    }

    #[test]
    fn index_detection_and_schema_checks() {
        assert!(is_index(br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#).unwrap());
        assert!(is_index(br#"{"schemaVersion":2,"manifests":[]}"#).unwrap());
        assert!(!is_index(br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json"}"#).unwrap());
        assert!(is_index(br#"{"schemaVersion":1}"#).is_err());
        assert!(is_index(b"not json").is_err());
    }

    #[test]
    fn config_summary_checks() {
        let d = format!("sha256:{}", "a".repeat(64));
        let ok = format!(
            r#"{{"os":"linux","architecture":"amd64","rootfs":{{"type":"layers","diff_ids":["{d}"]}}}}"#
        );
        assert_eq!(
            ConfigSummary::parse(ok.as_bytes()).unwrap().diff_ids,
            vec![d]
        );
        let bad = r#"{"rootfs":{"type":"layers","diff_ids":["sha256:xyz"]}}"#;
        assert!(ConfigSummary::parse(bad.as_bytes()).is_err());
        assert!(ConfigSummary::parse(b"{}").is_err());
    }

    #[test]
    fn oversized_manifest_refused() {
        let big = vec![b' '; MAX_MANIFEST_BYTES + 1];
        assert!(check_manifest_size(&big)
            .unwrap_err()
            .to_string()
            .contains("limit"));
    }
}
