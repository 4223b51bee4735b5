//! `hb-rootfs`: the hot tier. Layers unpacked from the content store into directories an
//! overlay mount stacks (`<root>/<hex of diff_id>/`), with whiteouts converted to overlayfs's
//! format, and the per-container writable directories (upper, work, merged).
//!
//! Unpacking is atomic (a temp dir renamed into place, so a `kill -9` never leaves a half layer
//! that looks complete) and safe: entries with `..`, absolute paths, parents that go through a
//! symlink out of the layer, and hardlinks to outside are refused by the `tar` crate's checks
//! (it canonicalizes every parent inside the layer dir) and by ours for special files.

#![warn(missing_docs)]

mod dirs;
mod overlay;
mod unpack;

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

pub use dirs::{ContainerDirs, DirRecycler, RECYCLED_DIR};
pub use overlay::{overlay_mount_data, MOUNT_DATA_MAX};

/// Errors of the hot tier.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// A file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, on which path.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The store could not give the layer.
    #[error("reading layer {diff_id} from the store: {source}")]
    Store {
        /// The layer.
        diff_id: String,
        /// The store's error.
        source: hb_store::StoreError,
    },
    /// A tar entry could not be unpacked (malformed or hostile).
    #[error("unpacking layer {diff_id}: entry {entry:?}: {why}")]
    Entry {
        /// The layer.
        diff_id: String,
        /// The entry's path as in the tar.
        entry: String,
        /// What is wrong.
        why: String,
    },
    /// The layer is used by containers.
    #[error("layer {diff_id} is in use by {users} container(s)")]
    Busy {
        /// The layer.
        diff_id: String,
        /// How many containers pin it.
        users: usize,
    },
    /// The overlay mount data does not fit one page even with short links.
    #[error("overlay mount data for {layers} layers is {bytes} bytes even with short links (limit 4095): mount with fsconfig lowerdir+ instead")]
    TooManyLayers {
        /// How many lower dirs.
        layers: usize,
        /// The length of the shortest data string.
        bytes: usize,
    },
    /// Not a `sha256:<64 hex>` id.
    #[error("invalid layer id {0:?}")]
    BadId(String),
}

impl RootfsError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> RootfsError {
        RootfsError::Io {
            what: what.into(),
            source,
        }
    }
}

/// Disk use of the hot tier.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HotUsage {
    /// Bytes of all unpacked layers.
    pub total_bytes: u64,
    /// Per layer (diff_id → bytes, each file object counted once within the layer).
    pub layers: Vec<(String, u64)>,
    /// Bytes of file objects used by more than one layer (counted once in `total_bytes`,
    /// once in each such layer's entry).
    pub shared_bytes: u64,
}

struct Shared {
    root: PathBuf,
    store: hb_store::Store,
    /// Layers being unpacked right now (others wait for them).
    busy: Mutex<HashSet<String>>,
    done: Condvar,
    /// Container id → the layers it uses. In memory: the owner of the containers re-pins
    /// them when it opens the tier (a file per container cost each create and removal an
    /// inode on the data filesystem).
    pins: Mutex<HashMap<String, Vec<String>>>,
}

/// Unpacked layers under one root. Cheap to clone; thread-safe.
#[derive(Clone)]
pub struct LayerStore {
    shared: Arc<Shared>,
}

/// The mount-points layer's directory name (versioned: a changed layout gets a new name).
const MOUNT_POINTS_LAYER: &str = "mount-points-v1";

/// Makes `<root>/mount-points-v1` once, atomically (temp dir + rename; `open` removes a temp
/// dir a crash left).
fn make_mount_points_layer(root: &Path) -> Result<(), RootfsError> {
    let dir = root.join(MOUNT_POINTS_LAYER);
    if dir.is_dir() {
        return Ok(());
    }
    let tmp = root.join(format!(".tmp-{MOUNT_POINTS_LAYER}-{}", std::process::id()));
    unpack::remove_tree(&tmp)?;
    let io = |what: &str, e| RootfsError::io(format!("{what} in {}", tmp.display()), e);
    for d in ["", "etc", "proc", "sys", "dev"] {
        let p = tmp.join(d);
        std::fs::create_dir(&p).map_err(|e| io("creating a directory", e))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| io("chmod", e))?;
    }
    for f in ["etc/hostname", "etc/hosts", "etc/resolv.conf"] {
        let p = tmp.join(f);
        std::fs::File::create(&p).map_err(|e| io("creating a file", e))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644))
            .map_err(|e| io("chmod", e))?;
    }
    match std::fs::rename(&tmp, &dir) {
        Ok(()) => Ok(()),
        // Another daemon on the same root won the race: its layer is the same.
        Err(_) if dir.is_dir() => unpack::remove_tree(&tmp),
        Err(e) => Err(RootfsError::io(format!("renaming {}", tmp.display()), e)),
    }
}

fn hex_of(diff_id: &str) -> Result<&str, RootfsError> {
    let hex = diff_id
        .strip_prefix("sha256:")
        .ok_or_else(|| RootfsError::BadId(diff_id.to_string()))?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(RootfsError::BadId(diff_id.to_string()));
    }
    Ok(hex)
}

impl LayerStore {
    /// Opens the tier at `root`, removing temp dirs a crash left.
    pub fn open(root: &Path, store: hb_store::Store) -> Result<LayerStore, RootfsError> {
        for d in [root.to_path_buf(), root.join("objects")] {
            std::fs::create_dir_all(&d)
                .map_err(|e| RootfsError::io(format!("creating {}", d.display()), e))?;
        }
        // Objects may be setuid binaries: keep them out of reach of unprivileged users.
        std::fs::set_permissions(root.join("objects"), std::fs::Permissions::from_mode(0o700))
            .map_err(|e| RootfsError::io(format!("chmod {}/objects", root.display()), e))?;
        for dir in [root.to_path_buf(), root.join("objects"), root.join("l")] {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(".tmp-") {
                    unpack::remove_tree(&e.path())?;
                }
            }
        }
        make_mount_points_layer(root)?;
        // Pins used to be files here; they are in memory now (the daemon re-pins from its
        // container records at start).
        unpack::remove_tree(&root.join("pins"))?;
        Ok(LayerStore {
            shared: Arc::new(Shared {
                root: root.to_path_buf(),
                store,
                busy: Mutex::new(HashSet::new()),
                done: Condvar::new(),
                pins: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The shared bottom layer every container stacks under its image: empty mount points
    /// (`etc/hostname`, `etc/hosts`, `etc/resolv.conf`, `proc`, `sys`, `dev`). It only fills
    /// gaps: any layer above that has the path (or a whiteout for it) wins. With it, mounting
    /// those paths never creates files in the container's upper dir, which saves each start
    /// four inodes (and a copy-up of `/etc`) on the data filesystem and each removal their
    /// deletion. Docker's per-container init layer does the same job.
    pub fn mount_points_layer(&self) -> PathBuf {
        self.shared.root.join(MOUNT_POINTS_LAYER)
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.shared.root
    }

    /// Where the layer is (or would be) unpacked.
    pub fn path(&self, diff_id: &str) -> PathBuf {
        let hex = diff_id.strip_prefix("sha256:").unwrap_or(diff_id);
        self.shared.root.join(hex)
    }

    /// Whether the layer is unpacked.
    pub fn is_unpacked(&self, diff_id: &str) -> bool {
        self.path(diff_id).is_dir()
    }

    /// Unpacks the layer unless it is there; returns its directory. Concurrent callers for the
    /// same layer wait for one unpack.
    pub fn ensure(&self, diff_id: &str) -> Result<PathBuf, RootfsError> {
        let hex = hex_of(diff_id)?.to_string();
        let dest = self.shared.root.join(&hex);
        {
            let mut busy = self.shared.busy.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if dest.is_dir() {
                    return Ok(dest);
                }
                if !busy.contains(&hex) {
                    busy.insert(hex.clone());
                    break;
                }
                busy = self
                    .shared
                    .done
                    .wait(busy)
                    .unwrap_or_else(|p| p.into_inner());
            }
        }
        let result = self.unpack_now(diff_id, &hex, &dest);
        let mut busy = self.shared.busy.lock().unwrap_or_else(|p| p.into_inner());
        busy.remove(&hex);
        self.shared.done.notify_all();
        result.map(|()| dest)
    }

    fn unpack_now(&self, diff_id: &str, hex: &str, dest: &Path) -> Result<(), RootfsError> {
        let tmp = self
            .shared
            .root
            .join(format!(".tmp-{hex}-{}", std::process::id()));
        let _ = unpack::remove_tree(&tmp);
        std::fs::create_dir(&tmp)
            .map_err(|e| RootfsError::io(format!("creating {}", tmp.display()), e))?;
        let reader = self
            .shared
            .store
            .open_blob(diff_id)
            .map_err(|source| RootfsError::Store {
                diff_id: diff_id.to_string(),
                source,
            })?;
        let reader = std::io::BufReader::with_capacity(1 << 20, reader);
        if let Err(e) = unpack::unpack_layer(
            reader,
            &tmp,
            Some(&self.shared.root.join("objects")),
            diff_id,
        ) {
            let _ = unpack::remove_tree(&tmp);
            return Err(e);
        }
        // One syncfs for the whole layer instead of an fsync per file, then the rename that
        // makes the layer visible.
        unpack::syncfs(&tmp)?;
        std::fs::rename(&tmp, dest).map_err(|e| {
            let _ = unpack::remove_tree(&tmp);
            RootfsError::io(format!("moving layer into {}", dest.display()), e)
        })?;
        Ok(())
    }

    /// Unpacks an image's layers (bottom first in), `parallel` at a time; returns their dirs
    /// top first (overlay's lowerdir order).
    pub fn ensure_image(
        &self,
        diff_ids: &[String],
        parallel: usize,
    ) -> Result<Vec<PathBuf>, RootfsError> {
        let missing: Vec<&String> = diff_ids.iter().filter(|d| !self.is_unpacked(d)).collect();
        if missing.len() > 1 && parallel > 1 {
            let queue = Mutex::new(missing.into_iter());
            let first_error: Mutex<Option<RootfsError>> = Mutex::new(None);
            std::thread::scope(|s| {
                for _ in 0..parallel.min(diff_ids.len()) {
                    s.spawn(|| loop {
                        let next = queue.lock().unwrap_or_else(|p| p.into_inner()).next();
                        let Some(d) = next else { return };
                        if let Err(e) = self.ensure(d) {
                            first_error
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .get_or_insert(e);
                            return;
                        }
                    });
                }
            });
            if let Some(e) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
                return Err(e);
            }
        }
        let mut out = Vec::with_capacity(diff_ids.len());
        for d in diff_ids.iter().rev() {
            out.push(self.ensure(d)?);
        }
        Ok(out)
    }

    /// Bytes used by one unpacked layer.
    pub fn layer_size(&self, diff_id: &str) -> Result<u64, RootfsError> {
        Ok(unpack::tree_size(&self.path(diff_id)))
    }

    /// Usage of every unpacked layer: per layer, each inode once; in total, each inode once
    /// across all layers; shared = inodes that more than one layer uses.
    pub fn usage(&self) -> Result<HotUsage, RootfsError> {
        let mut u = HotUsage::default();
        let entries = std::fs::read_dir(&self.shared.root)
            .map_err(|e| RootfsError::io("listing unpacked layers", e))?;
        // inode -> (bytes, first layer index, seen in more than one layer)
        let mut inodes: HashMap<(u64, u64), (u64, usize, bool)> = HashMap::new();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
                let idx = u.layers.len();
                let mut mine = HashSet::new();
                let mut size = 0;
                unpack::walk_inodes(&e.path(), |dev, ino, bytes| {
                    if !mine.insert((dev, ino)) {
                        return;
                    }
                    size += bytes;
                    let slot = inodes.entry((dev, ino)).or_insert((bytes, idx, false));
                    if slot.1 != idx {
                        slot.2 = true;
                    }
                });
                u.layers.push((format!("sha256:{name}"), size));
            }
        }
        for (bytes, _, shared) in inodes.values() {
            u.total_bytes += bytes;
            if *shared {
                u.shared_bytes += bytes;
            }
        }
        u.layers.sort();
        Ok(u)
    }

    /// Deletes file objects no layer links any more (link count 1); returns the bytes freed.
    /// `remove` calls it.
    pub fn collect_objects(&self) -> Result<u64, RootfsError> {
        let dir = self.shared.root.join("objects");
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| RootfsError::io(format!("listing {}", dir.display()), e))?;
        let mut freed = 0;
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with('.') {
                continue; // a temp file of an unpack in progress
            }
            if let Ok(m) = e.path().symlink_metadata() {
                if m.nlink() == 1 && std::fs::remove_file(e.path()).is_ok() {
                    freed += m.blocks() * 512;
                }
            }
        }
        Ok(freed)
    }

    fn pins(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<String>>> {
        self.shared.pins.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Removes an unpacked layer; refused while a container pins it.
    pub fn remove(&self, diff_id: &str) -> Result<(), RootfsError> {
        // Held until the layer has left its path, so a pin taken meanwhile either comes
        // first (and refuses this) or finds the layer gone (and unpacks it again).
        let pins = self.pins();
        let users = pins
            .values()
            .filter(|l| l.iter().any(|d| d == diff_id))
            .count();
        if users > 0 {
            return Err(RootfsError::Busy {
                diff_id: diff_id.to_string(),
                users,
            });
        }
        let p = self.path(diff_id);
        if !p.exists() {
            return Ok(());
        }
        // Rename first so a crash mid-delete leaves a temp dir (cleaned at open), never a
        // half layer under its real name.
        let doomed = self
            .shared
            .root
            .join(format!(".tmp-rm-{}", hex_of(diff_id)?));
        std::fs::rename(&p, &doomed)
            .map_err(|e| RootfsError::io(format!("removing {}", p.display()), e))?;
        drop(pins);
        unpack::remove_tree(&doomed)?;
        self.collect_objects().map(|_| ())
    }

    /// Records that container `id` uses these layers (until [`LayerStore::unpin`]; not
    /// persisted: whoever owns the containers pins them again after a restart).
    pub fn pin(&self, container_id: &str, diff_ids: &[String]) -> Result<(), RootfsError> {
        self.pins()
            .insert(container_id.to_string(), diff_ids.to_vec());
        Ok(())
    }

    /// Drops container `id`'s pins (no error if it has none).
    pub fn unpin(&self, container_id: &str) -> Result<(), RootfsError> {
        self.pins().remove(container_id);
        Ok(())
    }

    /// Containers that pin layers.
    pub fn pinned_containers(&self) -> Vec<String> {
        self.pins().keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests;
