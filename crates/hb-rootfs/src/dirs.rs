//! Per-container writable directories: `<containers_root>/<id>/{upper,work,merged}` plus the
//! container's own files (hostname, hosts, resolv.conf, logs) beside them.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::unpack::remove_tree;
use crate::RootfsError;

/// A container's directories.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerDirs {
    /// `<containers_root>/<id>`.
    pub root: PathBuf,
    /// Overlay upper dir (the container's writes).
    pub upper: PathBuf,
    /// Overlay work dir.
    pub work: PathBuf,
    /// Where the rootfs is mounted (inside the container's mount namespace).
    pub merged: PathBuf,
}

pub(crate) fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl ContainerDirs {
    /// The paths for container `id` (nothing is created).
    pub fn open(containers_root: &Path, id: &str) -> ContainerDirs {
        let root = containers_root.join(id);
        ContainerDirs {
            upper: root.join("upper"),
            work: root.join("work"),
            merged: root.join("merged"),
            root,
        }
    }

    /// Creates the directories.
    pub fn create(containers_root: &Path, id: &str) -> Result<ContainerDirs, RootfsError> {
        if !valid_id(id) {
            return Err(RootfsError::BadId(id.to_string()));
        }
        let d = ContainerDirs::open(containers_root, id);
        for p in [&d.upper, &d.work, &d.merged] {
            std::fs::create_dir_all(p)
                .map_err(|e| RootfsError::io(format!("creating {}", p.display()), e))?;
        }
        Ok(d)
    }

    /// Detaches a mount left on `merged` (there is none normally: the rootfs is mounted in
    /// the container's own mount namespace), then removes everything. Idempotent.
    pub fn remove(&self) -> Result<(), RootfsError> {
        if let Ok(c) = CString::new(self.merged.as_os_str().as_bytes()) {
            // SAFETY: umount2 on a valid C path; failure (not mounted) is expected and ignored.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
        remove_tree(&self.root)
    }
}
