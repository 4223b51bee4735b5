//! Per-container writable directories: `<containers_root>/<id>/{upper,work,merged}` plus the
//! container's own files beside them (hostname, hosts and resolv.conf, bind-mounted into it,
//! and its json-file log), and [`DirRecycler`], which hands a removed container's untouched
//! dirs to the next create instead of deleting and making them again, and makes spare ones
//! ahead of predicted starts.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::unpack::remove_tree;
use crate::RootfsError;

/// The files beside the overlay dirs that are bind-mounted into the container.
const MOUNTED_FILES: [&str; 3] = ["hostname", "hosts", "resolv.conf"];

/// The dir inside the containers root where recycled dirs wait for their next container.
pub const RECYCLED_DIR: &str = ".recycled";

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
    /// Bind-mounted over the container's /etc/hostname.
    pub hostname: PathBuf,
    /// Bind-mounted over the container's /etc/hosts.
    pub hosts: PathBuf,
    /// Bind-mounted over the container's /etc/resolv.conf.
    pub resolv: PathBuf,
    /// The container's json-file log, `<id>-json.log` as Docker names it.
    pub log: PathBuf,
}

pub(crate) fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn log_name(id: &str) -> String {
    format!("{id}-json.log")
}

impl ContainerDirs {
    /// The paths for container `id` (nothing is created).
    pub fn open(containers_root: &Path, id: &str) -> ContainerDirs {
        let root = containers_root.join(id);
        ContainerDirs {
            upper: root.join("upper"),
            work: root.join("work"),
            merged: root.join("merged"),
            hostname: root.join(MOUNTED_FILES[0]),
            hosts: root.join(MOUNTED_FILES[1]),
            resolv: root.join(MOUNTED_FILES[2]),
            log: root.join(log_name(id)),
            root,
        }
    }

    /// Creates the directories (the files are the caller's to write).
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
        self.detach_merged();
        remove_tree(&self.root)
    }

    /// Writes the files bind-mounted over /etc/hostname, /etc/hosts and /etc/resolv.conf.
    ///
    /// Recycled dirs already have them: they are overwritten in place and cut to length,
    /// not truncated to zero first, because freeing their block would cost a synchronous
    /// discard on a filesystem mounted with `discard` (this host's root is).
    pub fn write_mounted_files(
        &self,
        hostname: &str,
        hosts: &str,
        resolv: &str,
    ) -> Result<(), RootfsError> {
        use std::os::unix::fs::{FileExt, OpenOptionsExt};
        for (p, text) in [
            (&self.hostname, hostname),
            (&self.hosts, hosts),
            (&self.resolv, resolv),
        ] {
            let written = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o666)
                .open(p)
                .and_then(|f| {
                    f.write_all_at(text.as_bytes(), 0)?;
                    f.set_len(text.len() as u64)
                });
            written.map_err(|e| RootfsError::io(format!("writing {}", p.display()), e))?;
        }
        Ok(())
    }

    fn detach_merged(&self) {
        if let Ok(c) = CString::new(self.merged.as_os_str().as_bytes()) {
            // SAFETY: umount2 on a valid C path; failure (not mounted) is expected and ignored.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }

    /// Whether the container left these dirs exactly as a create makes them, so that the
    /// next container may have them: nothing in the upper dir, and the upper dir and the
    /// mounted files (the parts the container could reach) with the owner, mode and xattrs
    /// they were made with. `merged`, which the container never reaches (its rootfs is
    /// mounted over it in its own namespace), is the reference for what "made" looks like.
    fn untouched(&self) -> bool {
        let Ok(made) = std::fs::symlink_metadata(&self.merged) else {
            return false;
        };
        let made_xattrs = xattr_names(&self.merged);
        if made_xattrs.is_none() || !empty_dir(&self.merged) || !empty_dir(&self.upper) {
            return false;
        }
        let as_made = |p: &Path, dir: bool| {
            let Ok(m) = std::fs::symlink_metadata(p) else {
                return false;
            };
            // A file is made with the dir's mode minus execute (both are 0o777 / 0o666
            // under the same umask).
            let mode = if dir {
                made.mode() & 0o7777
            } else {
                made.mode() & 0o666
            };
            m.file_type().is_dir() == dir
                && m.mode() & 0o7777 == mode
                && m.uid() == made.uid()
                && m.gid() == made.gid()
                && (!dir || m.nlink() == 2)
                && xattr_names(p) == made_xattrs
        };
        as_made(&self.upper, true)
            && [&self.hostname, &self.hosts, &self.resolv]
                .iter()
                .all(|p| as_made(p, false))
    }
}

/// The xattr overlayfs (6.6 and later) writes on the upper dir at mount: the filesystem's
/// persistent id, its own and not the container's.
const OVERLAY_UUID_XATTR: &[u8] = b"trusted.overlay.uuid";

/// The xattr names on `p`, overlayfs's uuid left out (None when they cannot be read).
fn xattr_names(p: &Path) -> Option<Vec<Vec<u8>>> {
    let c = CString::new(p.as_os_str().as_bytes()).ok()?;
    let mut buf = vec![0u8; 256];
    // SAFETY: llistxattr writes at most buf.len() bytes into buf; c is a valid C path.
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return None;
    }
    buf.truncate(n as usize);
    let mut names: Vec<Vec<u8>> = buf
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty() && *n != OVERLAY_UUID_XATTR)
        .map(<[u8]>::to_vec)
        .collect();
    names.sort();
    Some(names)
}

fn empty_dir(p: &Path) -> bool {
    std::fs::read_dir(p).is_ok_and(|mut d| d.next().is_none())
}

/// Keeps removed containers' dirs for the next creates, up to a number.
///
/// Each container otherwise makes and frees a dozen inodes on the data filesystem; on ext4
/// without a journal (this project's hosts) every new inode then scans past all those freed
/// in the last minute, which at a hundred runs a second was a tenth of all CPU. A container
/// that wrote nothing (see [`ContainerDirs`]'s check) leaves dirs that are as good as new:
/// they move to `<root>/.recycled/` and back by rename, and the next container's files are
/// written over the old ones. The log is deleted, not reused: a `logs -f` reader may still
/// hold it open, and must not see the next container's output. Anything else is removed as before.
#[derive(Debug)]
pub struct DirRecycler {
    containers_root: PathBuf,
    bin: PathBuf,
    capacity: usize,
    /// Ids whose dirs wait in `bin`, under their old id.
    free: Mutex<Vec<String>>,
    /// Names of the spare sets [`DirRecycler::stock`] made.
    stocked: AtomicU64,
}

impl DirRecycler {
    /// A recycler for `containers_root` keeping up to `capacity` sets of dirs. Dirs a
    /// previous daemon left in the bin are removed (their state is not known).
    pub fn new(containers_root: &Path, capacity: usize) -> Result<DirRecycler, RootfsError> {
        let bin = containers_root.join(RECYCLED_DIR);
        remove_tree(&bin)?;
        std::fs::create_dir_all(&bin)
            .map_err(|e| RootfsError::io(format!("creating {}", bin.display()), e))?;
        if let Err(e) = spread_subdirs(containers_root) {
            // Unspread dirs only cost CPU, and only on ext4; other filesystems refuse the flag.
            tracing::debug!(
                root = %containers_root.display(),
                error = %e,
                "container dirs not spread over block groups"
            );
        }
        Ok(DirRecycler {
            containers_root: containers_root.to_path_buf(),
            bin,
            capacity,
            free: Mutex::new(Vec::new()),
            stocked: AtomicU64::new(0),
        })
    }

    /// Makes fresh sets of dirs until `wanted` (at most the capacity) wait for creates, so that
    /// predicted starts take them by a rename instead of making four dirs on their critical
    /// path. Returns how many it made. Each set is made under the containers root, where the
    /// `+T` flag spreads it over the block groups, and then moved to the bin. A set
    /// interrupted by a crash is an unknown dir there, which the daemon's reconcile removes.
    pub fn stock(&self, wanted: usize) -> Result<usize, RootfsError> {
        let wanted = wanted.min(self.capacity);
        let mut made = 0;
        while self.available() < wanted {
            let n = self.stocked.fetch_add(1, Ordering::Relaxed);
            let name = format!("stock-{}-{n}", std::process::id());
            let dirs = ContainerDirs::create(&self.containers_root, &name)?;
            let mut free = self.free_list();
            if free.len() >= self.capacity {
                drop(free);
                remove_tree(&dirs.root)?;
                break;
            }
            if let Err(e) = std::fs::rename(&dirs.root, self.bin.join(&name)) {
                drop(free);
                let _ = remove_tree(&dirs.root);
                return Err(RootfsError::io(
                    format!("moving {} to {}", dirs.root.display(), self.bin.display()),
                    e,
                ));
            }
            free.push(name);
            made += 1;
        }
        Ok(made)
    }

    fn free_list(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.free.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many sets of dirs wait for reuse.
    pub fn available(&self) -> usize {
        self.free_list().len()
    }

    /// The dirs for a new container `id`: recycled ones when some wait, else new ones.
    /// The mounted files exist only in recycled dirs; the caller writes them either way
    /// ([`ContainerDirs::write_mounted_files`]).
    pub fn create(&self, id: &str) -> Result<ContainerDirs, RootfsError> {
        if !valid_id(id) {
            return Err(RootfsError::BadId(id.to_string()));
        }
        let dirs = ContainerDirs::open(&self.containers_root, id);
        while let Some(old) = self.free_list().pop() {
            let shell = self.bin.join(&old);
            if std::fs::rename(&shell, &dirs.root).is_err() {
                // Gone or unmovable: the bin is ours alone, so drop it and go on.
                let _ = remove_tree(&shell);
                continue;
            }
            return Ok(dirs);
        }
        ContainerDirs::create(&self.containers_root, id)
    }

    /// Removes a container's dirs, keeping them for the next create when it left them
    /// untouched and there is room. Idempotent.
    pub fn remove(&self, dirs: &ContainerDirs) -> Result<(), RootfsError> {
        dirs.detach_merged();
        if self.recycle(dirs) {
            return Ok(());
        }
        remove_tree(&dirs.root)
    }

    fn recycle(&self, dirs: &ContainerDirs) -> bool {
        let Some(id) = dirs.root.file_name().and_then(|n| n.to_str()) else {
            return false;
        };
        if !valid_id(id) || self.available() >= self.capacity {
            return false;
        }
        // Only what a create makes and a run adds: a rotated log, say, means delete.
        let log = log_name(id);
        let expected = |n: &str| {
            n == log || ["upper", "work", "merged"].contains(&n) || MOUNTED_FILES.contains(&n)
        };
        let Ok(entries) = std::fs::read_dir(&dirs.root) else {
            return false;
        };
        for e in entries {
            let Ok(e) = e else { return false };
            if !e.file_name().to_str().is_some_and(expected) {
                return false;
            }
        }
        if !dirs.untouched() {
            return false;
        }
        // A volatile mount's marker: overlayfs refuses to mount over it.
        let marker = dirs.work.join("work/incompat/volatile");
        let _ = std::fs::remove_file(marker.join("dirty"));
        let _ = std::fs::remove_dir(&marker);
        let _ = std::fs::remove_dir(dirs.work.join("work/incompat"));
        match std::fs::remove_file(&dirs.log) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(_) => return false,
        }
        let mut free = self.free_list();
        if free.len() >= self.capacity || std::fs::rename(&dirs.root, self.bin.join(id)).is_err() {
            return false;
        }
        free.push(id.to_string());
        true
    }
}

/// ext4's "top of a directory hierarchy" inode flag (`chattr +T`; linux/fs.h).
const FS_TOPDIR_FL: libc::c_int = 0x0002_0000;

/// Marks `dir` as the top of a hierarchy (`chattr +T`), so that ext4 spreads its
/// subdirectories over the block groups instead of packing them beside `dir`.
///
/// Why: every overlay mount makes and frees about seven inodes in its work dir (the `work`
/// dir, the tmpfile and whiteout probes, the volatile marker), and a file goes to its parent
/// dir's group. On ext4 without a journal each new inode then scans past every inode of that
/// group freed in the last minute; with all containers in one group, at a hundred starts a
/// second that scan was the whole group, about 2 ms of CPU per start. Spread, each group
/// takes only its own containers' churn.
fn spread_subdirs(dir: &Path) -> std::io::Result<()> {
    let f = std::fs::File::open(dir)?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
    // The kernel reads and writes an int here, whatever the ioctl number's type says.
    let mut flags: libc::c_int = 0;
    // SAFETY: `fd` is open for the call and `flags` outlives it.
    if unsafe { libc::ioctl(fd, libc::FS_IOC_GETFLAGS, &mut flags) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if flags & FS_TOPDIR_FL != 0 {
        return Ok(());
    }
    flags |= FS_TOPDIR_FL;
    // SAFETY: as above.
    if unsafe { libc::ioctl(fd, libc::FS_IOC_SETFLAGS, &flags) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
