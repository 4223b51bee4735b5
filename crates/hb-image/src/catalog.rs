//! The image catalog: which images exist (by image id = config digest), what they are made of,
//! and which names point at them. Lives in the content store's redb database, so an image
//! record and its names change in one transaction.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::ImageError;
use hb_store::Store;

/// image id ("sha256:…" of the config) → JSON [`ImageRecord`].
const IMAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("images");
/// canonical name (`docker.io/library/alpine:latest`) → image id.
const NAMES: TableDefinition<&str, &str> = TableDefinition::new("image_names");

/// One layer of an image: its uncompressed identity and how it arrived.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LayerRecord {
    /// sha256 of the uncompressed tar (the config's `rootfs.diff_ids` entry); the store key.
    pub diff_id: String,
    /// Bytes of the uncompressed tar.
    pub size: u64,
    /// Digest of the blob as the registry or archive delivered it (compressed).
    pub source_digest: String,
    /// Media type it arrived with.
    pub source_media_type: String,
    /// Size of the blob as delivered.
    pub source_size: u64,
}

/// Everything HyperBox knows of one image.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageRecord {
    /// Image id: the config blob's digest, as Docker's.
    pub id: String,
    /// Digest of the manifest as pulled (the registry's identity of this image).
    pub manifest_digest: String,
    /// Media type of that manifest.
    pub manifest_media_type: String,
    /// Layers, bottom first.
    pub layers: Vec<LayerRecord>,
    /// `os` from the config.
    pub os: String,
    /// `architecture` from the config.
    pub architecture: String,
    /// `created` from the config, as written there.
    pub created: Option<String>,
    /// `repo@digest` names, as Docker's RepoDigests.
    pub repo_digests: Vec<String>,
    /// When this record was written (unix seconds).
    pub added_at: u64,
}

impl ImageRecord {
    /// Uncompressed size of all layers.
    pub fn size(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum()
    }

    /// Every store blob the image needs: config, manifest and layer tars.
    pub fn blobs(&self) -> Vec<String> {
        let mut v = vec![self.id.clone(), self.manifest_digest.clone()];
        v.extend(self.layers.iter().map(|l| l.diff_id.clone()));
        v
    }
}

/// The image catalog over the store's database.
#[derive(Clone)]
pub struct ImageCatalog {
    store: Store,
    /// Pulls and loads hold it shared while their blobs are not yet named by an image
    /// record; pruning holds it exclusively, so it never deletes a blob an ingest is about
    /// to reference.
    ingest_lock: Arc<tokio::sync::RwLock<()>>,
}

/// Held by a pull or load from its first stored blob to its image record.
pub type IngestGuard = tokio::sync::OwnedRwLockReadGuard<()>;

impl ImageCatalog {
    /// Opens the catalog, creating its tables on first use.
    pub fn open(store: Store) -> Result<ImageCatalog, ImageError> {
        let txn = store.database().begin_write()?;
        txn.open_table(IMAGES)?;
        txn.open_table(NAMES)?;
        txn.commit()?;
        Ok(ImageCatalog {
            store,
            ingest_lock: Arc::new(tokio::sync::RwLock::new(())),
        })
    }

    /// Shared hold for an async ingest (a pull).
    pub async fn ingest_guard(&self) -> IngestGuard {
        self.ingest_lock.clone().read_owned().await
    }

    /// Shared hold for a blocking ingest (a load); not for async contexts.
    pub fn blocking_ingest_guard(&self) -> tokio::sync::RwLockReadGuard<'_, ()> {
        self.ingest_lock.blocking_read()
    }

    /// The store this catalog describes.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Records an image and points `names` (canonical) at it, in one transaction.
    pub fn put(&self, record: &ImageRecord, names: &[String]) -> Result<(), ImageError> {
        let json = serde_json::to_vec(record).map_err(|e| ImageError::Catalog(e.to_string()))?;
        let txn = self.store.database().begin_write()?;
        {
            let mut images = txn.open_table(IMAGES)?;
            images.insert(record.id.as_str(), json.as_slice())?;
            let mut table = txn.open_table(NAMES)?;
            for name in names {
                table.insert(name.as_str(), record.id.as_str())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Finds an image the way Docker does for user input: as a reference first
    /// (`alpine` → `docker.io/library/alpine:latest`), then as an id or id prefix.
    pub fn lookup(&self, input: &str) -> Result<Option<ImageRecord>, ImageError> {
        let hex = input.strip_prefix("sha256:").unwrap_or(input);
        if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            // A full id is never a name (Docker refuses 64-hex repository names): no parse.
            return self.resolve(input);
        }
        if let Ok(r) = crate::ImageRef::parse(input) {
            if let Some(rec) = self.resolve(&r.canonical())? {
                return Ok(Some(rec));
            }
        }
        self.resolve(input)
    }

    /// Finds an image by canonical name, full id (`sha256:…` or bare hex) or an id prefix of
    /// at least 4 hex digits that is unique.
    pub fn resolve(&self, key: &str) -> Result<Option<ImageRecord>, ImageError> {
        let txn = self.store.database().begin_read()?;
        let images = txn.open_table(IMAGES)?;
        let names = txn.open_table(NAMES)?;
        if let Some(id) = names.get(key)? {
            let id = id.value().to_string();
            return Self::record(&images, &id);
        }
        let hex = key.strip_prefix("sha256:").unwrap_or(key);
        if hex.len() < 4 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let start = format!("sha256:{hex}");
        let mut found = None;
        for item in images.range(start.as_str()..)? {
            let (k, _) = item?;
            if !k.value().starts_with(&start) {
                break;
            }
            if found.is_some() {
                return Err(ImageError::NotFound(format!(
                    "{key} (ambiguous: more than one image id starts with it)"
                )));
            }
            found = Some(k.value().to_string());
        }
        match found {
            Some(id) => Self::record(&images, &id),
            None => Ok(None),
        }
    }

    fn record(
        images: &impl ReadableTable<&'static str, &'static [u8]>,
        id: &str,
    ) -> Result<Option<ImageRecord>, ImageError> {
        match images.get(id)? {
            Some(v) => serde_json::from_slice(v.value())
                .map(Some)
                .map_err(|e| ImageError::Catalog(format!("record of {id} is unreadable: {e}"))),
            None => Ok(None),
        }
    }

    /// The names that point at image `id` (sorted).
    pub fn names_of(&self, id: &str) -> Result<Vec<String>, ImageError> {
        let txn = self.store.database().begin_read()?;
        let names = txn.open_table(NAMES)?;
        let mut out = Vec::new();
        for item in names.iter()? {
            let (k, v) = item?;
            if v.value() == id {
                out.push(k.value().to_string());
            }
        }
        Ok(out)
    }

    /// All images with the names that point at them (sorted).
    pub fn list(&self) -> Result<Vec<(ImageRecord, Vec<String>)>, ImageError> {
        let txn = self.store.database().begin_read()?;
        let images = txn.open_table(IMAGES)?;
        let names = txn.open_table(NAMES)?;
        let mut by_id: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for item in names.iter()? {
            let (k, v) = item?;
            by_id
                .entry(v.value().to_string())
                .or_default()
                .push(k.value().to_string());
        }
        let mut out = Vec::new();
        for item in images.iter()? {
            let (k, v) = item?;
            let rec: ImageRecord = serde_json::from_slice(v.value()).map_err(|e| {
                ImageError::Catalog(format!("record of {} is unreadable: {e}", k.value()))
            })?;
            let n = by_id.remove(&rec.id).unwrap_or_default();
            out.push((rec, n));
        }
        Ok(out)
    }

    /// Points `name` (canonical) at the image `target` resolves to.
    pub fn tag(&self, target: &str, name: &str) -> Result<ImageRecord, ImageError> {
        let rec = self
            .lookup(target)?
            .ok_or_else(|| ImageError::NotFound(target.to_string()))?;
        let txn = self.store.database().begin_write()?;
        txn.open_table(NAMES)?.insert(name, rec.id.as_str())?;
        txn.commit()?;
        Ok(rec)
    }

    /// Removes a name, or (given an id, or with the last name gone) the image itself.
    /// Returns what was untagged and the id deleted, if any. `force` deletes an image that
    /// still has other names.
    pub fn remove(&self, input: &str, force: bool) -> Result<Removal, ImageError> {
        let rec = self
            .lookup(input)?
            .ok_or_else(|| ImageError::NotFound(input.to_string()))?;
        let key = crate::ImageRef::parse(input)
            .map(|r| r.canonical())
            .unwrap_or_else(|_| input.to_string());
        let key = key.as_str();
        let txn = self.store.database().begin_write()?;
        let mut removal = Removal::default();
        {
            let mut names = txn.open_table(NAMES)?;
            let mut mine = Vec::new();
            for item in names.iter()? {
                let (k, v) = item?;
                if v.value() == rec.id {
                    mine.push(k.value().to_string());
                }
            }
            let by_name = mine.iter().any(|n| n == key);
            let to_untag: Vec<String> = if by_name && !force {
                vec![key.to_string()]
            } else if !by_name && mine.len() > 1 && !force {
                return Err(ImageError::Catalog(format!(
                    "image {} is referenced by several names ({}); remove them by name or force",
                    short_id(&rec.id),
                    mine.join(", ")
                )));
            } else {
                mine.clone()
            };
            for n in &to_untag {
                names.remove(n.as_str())?;
            }
            removal.untagged = to_untag.clone();
            if to_untag.len() == mine.len() {
                txn.open_table(IMAGES)?.remove(rec.id.as_str())?;
                removal.deleted = Some(rec.id.clone());
            }
        }
        txn.commit()?;
        Ok(removal)
    }

    /// Every blob some image still needs.
    pub fn live_blobs(&self) -> Result<HashSet<String>, ImageError> {
        Ok(self
            .list()?
            .into_iter()
            .flat_map(|(r, _)| r.blobs())
            .collect())
    }

    /// Deletes store blobs no image needs (blobs of half-finished pulls included), then
    /// reclaims their chunks. Returns the number of blobs deleted.
    pub fn prune_blobs(&self) -> Result<(usize, hb_store::GcReport), ImageError> {
        // Blocking: callers run this off the async threads.
        let _no_ingest = self.ingest_lock.blocking_write();
        let live = self.live_blobs()?;
        let mut deleted = 0;
        for blob in self.store.list_blobs()? {
            if !live.contains(&blob.digest) && self.store.delete_blob(&blob.digest)? {
                deleted += 1;
            }
        }
        let report = self.store.gc()?;
        Ok((deleted, report))
    }
}

/// What `remove` did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removal {
    /// Names removed.
    pub untagged: Vec<String>,
    /// Image id deleted, when its last name went.
    pub deleted: Option<String>,
}

/// The 12-hex-digit short id Docker prints.
pub fn short_id(id: &str) -> String {
    id.strip_prefix("sha256:")
        .unwrap_or(id)
        .chars()
        .take(12)
        .collect()
}
