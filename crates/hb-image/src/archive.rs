//! `load` and `save`: images as tarballs, without a registry. `load` reads an OCI image layout
//! or a docker-archive (`docker save`, both old and combined formats). `save` writes the
//! combined format Docker 25+ writes: an OCI layout with a `manifest.json` beside it, so both
//! `docker load` and OCI tools read it. Layers are written uncompressed: their digest is then
//! the diff_id the store reproduces byte for byte, and the image id (config digest) is kept.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::catalog::{ImageCatalog, ImageRecord, LayerRecord};
use crate::ingest::{ingest_layer, Compression};
use crate::pull::{check_sha256_digest, now_secs, sha256_digest, ConfigSummary, Platform};
use crate::reference::ImageRef;
use crate::ImageError;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const MAX_JSON: u64 = 16 * 1024 * 1024;

/// One image brought in by `load`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoadedImage {
    /// Image id.
    pub id: String,
    /// Names given to it (canonical).
    pub names: Vec<String>,
}

/// Where each regular file of the archive sits.
struct ArchiveIndex {
    file: File,
    entries: HashMap<String, (u64, u64)>,
}

impl ArchiveIndex {
    fn scan(path: &Path) -> Result<ArchiveIndex, ImageError> {
        let ctx = || format!("reading archive {}", path.display());
        let file = File::open(path).map_err(|e| ImageError::io(ctx(), e))?;
        let mut archive =
            tar::Archive::new(file.try_clone().map_err(|e| ImageError::io(ctx(), e))?);
        let mut entries = HashMap::new();
        let iter = archive
            .entries()
            .map_err(|e| ImageError::InvalidArchive(format!("not a tar: {e}")))?;
        for entry in iter {
            let entry =
                entry.map_err(|e| ImageError::InvalidArchive(format!("bad tar entry: {e}")))?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let name = entry
                .path()
                .map_err(|e| ImageError::InvalidArchive(format!("bad path: {e}")))?
                .to_string_lossy()
                .trim_start_matches("./")
                .to_string();
            entries.insert(name, (entry.raw_file_position(), entry.size()));
        }
        Ok(ArchiveIndex { file, entries })
    }

    fn open(&self, name: &str) -> Result<impl Read + '_, ImageError> {
        let (pos, size) = *self
            .entries
            .get(name.trim_start_matches("./"))
            .ok_or_else(|| ImageError::InvalidArchive(format!("{name} is missing")))?;
        let mut f = &self.file;
        f.seek(SeekFrom::Start(pos))
            .map_err(|e| ImageError::io(format!("seeking to {name}"), e))?;
        Ok(f.take(size))
    }

    fn read_json_bytes(&self, name: &str) -> Result<Vec<u8>, ImageError> {
        let size = self
            .entries
            .get(name.trim_start_matches("./"))
            .map(|e| e.1)
            .unwrap_or(0);
        if size > MAX_JSON {
            return Err(ImageError::InvalidArchive(format!("{name} is over 16 MiB")));
        }
        let mut v = Vec::new();
        self.open(name)?
            .read_to_end(&mut v)
            .map_err(|e| ImageError::io(format!("reading {name}"), e))?;
        Ok(v)
    }

    fn has(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }
}

fn blob_path(digest: &str) -> Result<String, ImageError> {
    check_sha256_digest(digest, "blob digest")?;
    Ok(format!("blobs/sha256/{}", &digest[7..]))
}

/// Loads every image of an archive file into the catalog.
pub fn load(catalog: &ImageCatalog, path: &Path) -> Result<Vec<LoadedImage>, ImageError> {
    let _ingest = catalog.blocking_ingest_guard();
    let index = ArchiveIndex::scan(path)?;
    if index.has("manifest.json") {
        load_docker_archive(catalog, &index)
    } else if index.has("index.json") && index.has("oci-layout") {
        load_oci_layout(catalog, &index)
    } else {
        Err(ImageError::InvalidArchive(
            "neither manifest.json (docker-archive) nor index.json + oci-layout (OCI layout) found"
                .into(),
        ))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn load_docker_archive(
    catalog: &ImageCatalog,
    index: &ArchiveIndex,
) -> Result<Vec<LoadedImage>, ImageError> {
    let entries: Vec<DockerManifestEntry> =
        serde_json::from_slice(&index.read_json_bytes("manifest.json")?)
            .map_err(|e| ImageError::InvalidArchive(format!("manifest.json: {e}")))?;
    let mut out = Vec::new();
    for e in entries {
        let config = index.read_json_bytes(&e.config)?;
        let layers: Vec<(String, Option<String>)> =
            e.layers.iter().map(|l| (l.clone(), None)).collect();
        let names = e.repo_tags.unwrap_or_default();
        out.push(import_image(
            catalog, index, &config, &layers, None, &names,
        )?);
    }
    Ok(out)
}

fn load_oci_layout(
    catalog: &ImageCatalog,
    index: &ArchiveIndex,
) -> Result<Vec<LoadedImage>, ImageError> {
    #[derive(Deserialize)]
    struct Desc {
        #[serde(rename = "mediaType", default)]
        media_type: String,
        digest: String,
        #[serde(default)]
        annotations: BTreeMap<String, String>,
        #[serde(default)]
        platform: Option<serde_json::Value>,
    }
    #[derive(Deserialize)]
    struct Index {
        manifests: Vec<Desc>,
    }
    #[derive(Deserialize)]
    struct Manifest {
        config: Desc,
        layers: Vec<Desc>,
    }
    let top: Index = serde_json::from_slice(&index.read_json_bytes("index.json")?)
        .map_err(|e| ImageError::InvalidArchive(format!("index.json: {e}")))?;
    let host = Platform::host();
    let mut out = Vec::new();
    for d in top.manifests {
        let mut name = d
            .annotations
            .get("io.containerd.image.name")
            .cloned()
            .or_else(|| {
                d.annotations
                    .get("org.opencontainers.image.ref.name")
                    .cloned()
            });
        let mut desc = d;
        // A nested index (multi-platform): take this host's manifest.
        if desc.media_type.contains("index") || desc.media_type.contains("manifest.list") {
            let bytes = verified_json(index, &desc.digest)?;
            let nested: Index = serde_json::from_slice(&bytes)
                .map_err(|e| ImageError::InvalidArchive(format!("{}: {e}", desc.digest)))?;
            let pick = nested.manifests.into_iter().find(|m| {
                m.platform.as_ref().is_some_and(|p| {
                    p["os"] == host.os.as_str() && p["architecture"] == host.architecture.as_str()
                })
            });
            desc = pick.ok_or_else(|| {
                ImageError::InvalidArchive(format!("no {host} manifest in {}", desc.digest))
            })?;
            name = name.or_else(|| {
                desc.annotations
                    .get("org.opencontainers.image.ref.name")
                    .cloned()
            });
        }
        let bytes = verified_json(index, &desc.digest)?;
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| ImageError::InvalidArchive(format!("manifest {}: {e}", desc.digest)))?;
        let config = verified_json(index, &manifest.config.digest)?;
        let layers = manifest
            .layers
            .iter()
            .map(|l| Ok((blob_path(&l.digest)?, Some(l.digest.clone()))))
            .collect::<Result<Vec<_>, ImageError>>()?;
        // A bare tag annotation ("latest") names nothing we can store; a full one does.
        let names: Vec<String> = name
            .into_iter()
            .filter(|n| n.contains([':', '/']))
            .collect();
        out.push(import_image(
            catalog,
            index,
            &config,
            &layers,
            Some((&bytes, &desc.digest)),
            &names,
        )?);
    }
    Ok(out)
}

fn verified_json(index: &ArchiveIndex, digest: &str) -> Result<Vec<u8>, ImageError> {
    let bytes = index.read_json_bytes(&blob_path(digest)?)?;
    let actual = sha256_digest(&bytes);
    if actual != digest {
        return Err(ImageError::DigestMismatch {
            what: blob_path(digest)?,
            expected: digest.to_string(),
            actual,
        });
    }
    Ok(bytes)
}

/// Hashes what passes through, to check a layer file against its descriptor.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

fn import_image(
    catalog: &ImageCatalog,
    index: &ArchiveIndex,
    config: &[u8],
    layers: &[(String, Option<String>)],
    manifest: Option<(&[u8], &str)>,
    names: &[String],
) -> Result<LoadedImage, ImageError> {
    let store = catalog.store();
    let summary = ConfigSummary::parse(config)?;
    if summary.diff_ids.len() != layers.len() {
        return Err(ImageError::InvalidArchive(format!(
            "{} layers but {} diff_ids in the config",
            layers.len(),
            summary.diff_ids.len()
        )));
    }
    let config_info = store.put_bytes(config, None)?;
    let mut records = Vec::new();
    for ((path, expected), diff_id) in layers.iter().zip(&summary.diff_ids) {
        let mut head = [0u8; 4];
        let n = index
            .open(path)?
            .read(&mut head)
            .map_err(|e| ImageError::io(format!("reading {path}"), e))?;
        let compression = Compression::sniff(&head[..n]);
        let mut reader = HashingReader {
            inner: index.open(path)?,
            hasher: Sha256::new(),
            count: 0,
        };
        let info = match store.blob_info(diff_id)? {
            Some(i) => {
                io::copy(&mut reader, &mut io::sink())
                    .map_err(|e| ImageError::io(format!("reading {path}"), e))?;
                i
            }
            None => ingest_layer(store, &mut reader, compression, Some(diff_id))?,
        };
        let source_digest = format!("sha256:{}", hex::encode(reader.hasher.finalize()));
        if let Some(exp) = expected {
            if *exp != source_digest {
                return Err(ImageError::DigestMismatch {
                    what: path.clone(),
                    expected: exp.clone(),
                    actual: source_digest,
                });
            }
        }
        let media = match compression {
            Compression::None => OCI_LAYER_TAR,
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        };
        records.push(LayerRecord {
            diff_id: diff_id.clone(),
            size: info.size,
            source_digest,
            source_media_type: media.to_string(),
            source_size: reader.count,
        });
    }
    let (manifest_bytes, manifest_digest) = match manifest {
        Some((b, d)) => (b.to_vec(), d.to_string()),
        None => {
            let m = uncompressed_manifest(&config_info.digest, config.len() as u64, &records);
            let d = sha256_digest(&m);
            (m, d)
        }
    };
    store.put_bytes(&manifest_bytes, Some(&manifest_digest))?;
    let mut canonical = Vec::new();
    for n in names {
        canonical.push(ImageRef::parse(n)?.canonical());
    }
    let record = ImageRecord {
        id: config_info.digest.clone(),
        manifest_digest,
        manifest_media_type: OCI_MANIFEST.into(),
        layers: records,
        os: summary.os,
        architecture: summary.architecture,
        created: summary.created,
        repo_digests: Vec::new(),
        added_at: now_secs(),
    };
    catalog.put(&record, &canonical)?;
    Ok(LoadedImage {
        id: record.id,
        names: canonical,
    })
}

/// An OCI manifest naming the config and the uncompressed layers (digest = diff_id).
fn uncompressed_manifest(config_digest: &str, config_size: u64, layers: &[LayerRecord]) -> Vec<u8> {
    let v = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config_size},
        "layers": layers.iter().map(|l| serde_json::json!({
            "mediaType": OCI_LAYER_TAR, "digest": l.diff_id, "size": l.size
        })).collect::<Vec<_>>(),
    });
    // serde_json::Value serialises its maps in key order: the same input gives the same digest.
    serde_json::to_vec(&v).unwrap_or_default()
}

/// Writes `images` (each with the names to put in the archive) as one combined
/// OCI-layout + docker-archive tarball.
pub fn save(
    catalog: &ImageCatalog,
    images: &[(ImageRecord, Vec<String>)],
    out: impl Write,
) -> Result<(), ImageError> {
    let store = catalog.store();
    let mut tar = tar::Builder::new(out);
    tar.mode(tar::HeaderMode::Deterministic);
    let mut written = HashSet::new();
    let mut index_entries = Vec::new();
    let mut docker_entries = Vec::new();
    let werr = |e: io::Error| ImageError::io("writing the archive", e);
    let put = |tar: &mut tar::Builder<_>, name: String, size: u64, data: &mut dyn Read| {
        let mut h = tar::Header::new_ustar();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, name, data).map_err(werr)
    };
    for (rec, names) in images {
        let config = store.read_blob(&rec.id)?;
        let manifest = uncompressed_manifest(&rec.id, config.len() as u64, &rec.layers);
        let manifest_digest = sha256_digest(&manifest);
        for (digest, bytes) in [(&rec.id, &config), (&manifest_digest, &manifest)] {
            if written.insert(digest.clone()) {
                put(
                    &mut tar,
                    blob_path(digest)?,
                    bytes.len() as u64,
                    &mut bytes.as_slice(),
                )?;
            }
        }
        for l in &rec.layers {
            if written.insert(l.diff_id.clone()) {
                let mut reader = store.open_blob(&l.diff_id)?;
                put(&mut tar, blob_path(&l.diff_id)?, l.size, &mut reader)?;
            }
        }
        let familiar: Vec<String> = names
            .iter()
            .map(|n| crate::reference::familiar_name(n))
            .collect();
        let mut annotations = serde_json::Map::new();
        if let Some(first) = names.first() {
            annotations.insert("io.containerd.image.name".into(), first.clone().into());
            if let Some((_, tag)) = first.rsplit_once(':') {
                annotations.insert("org.opencontainers.image.ref.name".into(), tag.into());
            }
        }
        index_entries.push(serde_json::json!({
            "mediaType": OCI_MANIFEST, "digest": manifest_digest, "size": manifest.len(),
            "annotations": annotations,
        }));
        docker_entries.push(serde_json::json!({
            "Config": blob_path(&rec.id)?,
            "RepoTags": familiar,
            "Layers": rec.layers.iter().map(|l| blob_path(&l.diff_id)).collect::<Result<Vec<_>, _>>()?,
        }));
    }
    let files = [
        (
            "oci-layout",
            serde_json::json!({"imageLayoutVersion": "1.0.0"}),
        ),
        (
            "index.json",
            serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": index_entries}),
        ),
        ("manifest.json", serde_json::Value::Array(docker_entries)),
    ];
    for (name, value) in files {
        let bytes = serde_json::to_vec(&value).map_err(|e| ImageError::Catalog(e.to_string()))?;
        put(
            &mut tar,
            name.to_string(),
            bytes.len() as u64,
            &mut bytes.as_slice(),
        )?;
    }
    tar.into_inner().map_err(werr)?.flush().map_err(werr)?;
    Ok(())
}
