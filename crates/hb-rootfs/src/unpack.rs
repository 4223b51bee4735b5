//! Unpacking one layer tar into a directory, exactly and safely, with regular files shared
//! through content-addressed objects.
//!
//! Safety: every entry's path is made relative (leading `/` stripped, as docker and containerd
//! do) and an entry with a `..` component fails the unpack, naming the entry. Parents are
//! walked component by component with `lstat`, never following a symlink: an entry whose parent
//! goes through a symlink (or a file) fails the unpack. Hardlink targets are resolved the same
//! way inside this layer's dir, must exist and must not be directories; `link(2)` does not
//! follow a symlink target, so linking to a symlink only copies the symlink. The layer dir is a
//! private temp dir only this thread writes, so the lstat walk has no race with anyone.
//! Xattrs named `trusted.overlay.*` in the tar are dropped: they would steer overlayfs
//! (redirects, metacopy) from image content.
//!
//! Whiteouts become overlayfs's format: `.wh.NAME` a 0/0 character device `NAME`,
//! `.wh..wh..opq` the xattr `trusted.overlay.opaque=y` on its directory; other `.wh..wh.*`
//! names (aufs internals) are skipped, as docker does.
//!
//! Sharing: a non-empty regular file is written once to `<root>/objects/<key>`, key = sha256 of
//! (content sha256, mode, uid, gid, mtime, xattrs), and hardlinked into each layer that has it.
//! The mtime is part of the key so sharing never changes what a layer says. Overlay copies a
//! file up before any write, so the shared inode is never modified. GNU sparse entries are
//! written directly (with holes), not shared.

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use crate::RootfsError;

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";
const AUFS_META_PREFIX: &str = ".wh..wh.";
/// Files up to this size are read into memory and hashed before anything is written, so a file
/// whose object already exists costs one link.
const SMALL_FILE: u64 = 1 << 20;

static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// `p` as a C string for a libc call (an error when it holds a NUL byte).
pub(crate) fn cpath(p: &Path) -> Result<CString, RootfsError> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| {
        RootfsError::io(
            format!("path {} has a NUL byte", p.display()),
            std::io::Error::from(std::io::ErrorKind::InvalidInput),
        )
    })
}

fn last_err(what: String) -> RootfsError {
    RootfsError::io(what, std::io::Error::last_os_error())
}

/// The entry's path relative to the layer, without `.`/root parts; None if it has `..`.
fn relative(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => return None,
        }
    }
    Some(out)
}

/// `dst/parent-of-rel`, every component a real directory (never a symlink). With `create`,
/// missing components are made (0755 root, like docker's implicit parents).
fn resolve_parent(dst: &Path, rel: &Path, create: bool) -> Result<PathBuf, String> {
    let mut cur = dst.to_path_buf();
    if let Some(parent) = rel.parent() {
        for c in parent.components() {
            cur.push(c);
            match std::fs::symlink_metadata(&cur) {
                Ok(m) if m.is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(format!(
                        "parent {} is a symlink (refusing to follow it)",
                        cur.display()
                    ))
                }
                Ok(_) => return Err(format!("parent {} is not a directory", cur.display())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                    std::fs::create_dir(&cur)
                        .map_err(|e| format!("creating parent {}: {e}", cur.display()))?
                }
                Err(e) => return Err(format!("parent {}: {e}", cur.display())),
            }
        }
    }
    Ok(cur)
}

/// Clears `target` for a new entry (tars may repeat a path: the later entry wins). Keeps an
/// existing directory when the new entry is one too. Returns whether a directory was kept.
fn clear_target(target: &Path, new_is_dir: bool) -> Result<bool, RootfsError> {
    match std::fs::symlink_metadata(target) {
        Err(_) => Ok(false),
        Ok(m) if m.is_dir() && new_is_dir => Ok(true),
        Ok(_) => remove_tree(target).map(|()| false),
    }
}

fn mknod(path: &Path, mode: u32, dev: libc::dev_t) -> Result<(), RootfsError> {
    let c = cpath(path)?;
    // SAFETY: mknod with a valid C path.
    if unsafe { libc::mknod(c.as_ptr(), mode, dev) } != 0 {
        return Err(last_err(format!("mknod {}", path.display())));
    }
    Ok(())
}

fn lchown(path: &Path, uid: u64, gid: u64) -> Result<(), RootfsError> {
    let c = cpath(path)?;
    // SAFETY: lchown with a valid C path.
    if unsafe { libc::lchown(c.as_ptr(), uid as libc::uid_t, gid as libc::gid_t) } != 0 {
        return Err(last_err(format!("lchown {}", path.display())));
    }
    Ok(())
}

/// chmod of a path that is known not to be a symlink (we just created or lstat'ed it).
fn chmod(path: &Path, mode: u32) -> Result<(), RootfsError> {
    let c = cpath(path)?;
    // SAFETY: chmod with a valid C path.
    if unsafe { libc::chmod(c.as_ptr(), mode & 0o7777) } != 0 {
        return Err(last_err(format!("chmod {}", path.display())));
    }
    Ok(())
}

/// lsetxattr(2) of `name` on `path` (not following a symlink).
pub(crate) fn set_xattr(path: &Path, name: &str, value: &[u8]) -> Result<(), RootfsError> {
    let c = cpath(path)?;
    let n = CString::new(name).map_err(|_| RootfsError::BadId(name.to_string()))?;
    // SAFETY: lsetxattr with valid C strings and a value buffer we own.
    let rc = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc != 0 {
        return Err(last_err(format!(
            "setting xattr {name} on {}",
            path.display()
        )));
    }
    Ok(())
}

fn set_mtime(path: &Path, secs: u64) -> Result<(), RootfsError> {
    let c = cpath(path)?;
    let t = libc::timespec {
        tv_sec: secs as libc::time_t,
        tv_nsec: 0,
    };
    let times = [t, t];
    // SAFETY: utimensat on a valid C path, not following symlinks.
    if unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    } != 0
    {
        return Err(last_err(format!("setting mtime of {}", path.display())));
    }
    Ok(())
}

/// What a tar header says about an entry, besides its data.
struct Meta {
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    xattrs: Vec<(String, Vec<u8>)>,
}

impl Meta {
    /// Applies owner, mode (after chown, which clears setuid), xattrs (after chown, which clears
    /// security.capability) and mtime to an open file.
    fn apply_to_file(&self, f: &std::fs::File, shown: &Path) -> Result<(), RootfsError> {
        let fd = f.as_raw_fd();
        // SAFETY: fchown/fchmod/fsetxattr/futimens on an fd we own, with buffers we own.
        unsafe {
            if libc::fchown(fd, self.uid as libc::uid_t, self.gid as libc::gid_t) != 0 {
                return Err(last_err(format!("fchown {}", shown.display())));
            }
            if libc::fchmod(fd, self.mode & 0o7777) != 0 {
                return Err(last_err(format!("fchmod {}", shown.display())));
            }
            for (name, value) in &self.xattrs {
                let n = CString::new(name.as_str())
                    .map_err(|_| RootfsError::BadId(name.to_string()))?;
                if libc::fsetxattr(fd, n.as_ptr(), value.as_ptr().cast(), value.len(), 0) != 0 {
                    return Err(last_err(format!(
                        "setting xattr {name} on {}",
                        shown.display()
                    )));
                }
            }
            let t = libc::timespec {
                tv_sec: self.mtime as libc::time_t,
                tv_nsec: 0,
            };
            if libc::futimens(fd, [t, t].as_ptr()) != 0 {
                return Err(last_err(format!("setting mtime of {}", shown.display())));
            }
        }
        Ok(())
    }

    /// The object key: the content digest plus everything stored in the inode.
    fn object_key(&self, content: &[u8]) -> String {
        let mut h = Sha256::new();
        h.update(content);
        h.update(
            format!(
                "\0{:o}\0{}\0{}\0{}\0",
                self.mode & 0o7777,
                self.uid,
                self.gid,
                self.mtime
            )
            .as_bytes(),
        );
        let mut xattrs: Vec<&(String, Vec<u8>)> = self.xattrs.iter().collect();
        xattrs.sort();
        for (name, value) in xattrs {
            h.update(name.as_bytes());
            h.update((value.len() as u64).to_le_bytes());
            h.update(value);
        }
        hex::encode(h.finalize())
    }
}

/// One layer being unpacked.
struct Unpacker<'a> {
    dst: &'a Path,
    objects: Option<&'a Path>,
    diff_id: &'a str,
    /// Directories whose owner, mode and mtime are set once everything is written.
    dirs: Vec<(PathBuf, Meta)>,
    buf: Vec<u8>,
}

/// Unpacks the tar stream into `dst` (an empty directory), sharing regular files through
/// `objects` when given.
pub fn unpack_layer(
    reader: impl Read,
    dst: &Path,
    objects: Option<&Path>,
    diff_id: &str,
) -> Result<(), RootfsError> {
    let mut u = Unpacker {
        dst,
        objects,
        diff_id,
        dirs: Vec::new(),
        buf: Vec::with_capacity(SMALL_FILE as usize),
    };
    let mut archive = tar::Archive::new(reader);
    // Only used for GNU sparse entries, which `tar` writes with holes.
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(true);
    archive.set_overwrite(true);
    let entries = archive
        .entries()
        .map_err(|e| u.entry_err("", format!("not a tar stream: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| u.entry_err("", format!("malformed tar: {e}")))?;
        u.entry(&mut entry)?;
    }
    u.finish_dirs()
}

impl Unpacker<'_> {
    fn entry_err(&self, entry: &str, why: String) -> RootfsError {
        RootfsError::Entry {
            diff_id: self.diff_id.to_string(),
            entry: entry.to_string(),
            why,
        }
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<R>) -> Result<(), RootfsError> {
        let raw = entry
            .path()
            .map_err(|e| self.entry_err("", format!("bad path: {e}")))?
            .into_owned();
        let shown = raw.display().to_string();
        let Some(rel) = relative(&raw) else {
            return Err(self.entry_err(&shown, "path leaves the layer (`..`)".into()));
        };
        let xattrs = xattrs_of(entry);
        let header = entry.header().clone();
        let kind = header.entry_type();
        let meta = Meta {
            mode: header.mode().unwrap_or(0o644),
            uid: header.uid().unwrap_or(0),
            gid: header.gid().unwrap_or(0),
            mtime: header.mtime().unwrap_or(0),
            xattrs,
        };
        if rel.as_os_str().is_empty() {
            // "./": the layer's own root directory.
            if kind.is_dir() {
                self.dirs.push((self.dst.to_path_buf(), meta));
            }
            return Ok(());
        }
        let name = rel.file_name().map(|n| n.as_bytes()).unwrap_or_default();
        let parent = |create| {
            resolve_parent(self.dst, &rel, create).map_err(|why| self.entry_err(&shown, why))
        };
        if name == OPAQUE.as_bytes() {
            let dir = parent(true)?;
            return set_xattr(&dir, "trusted.overlay.opaque", b"y");
        }
        if name.starts_with(AUFS_META_PREFIX.as_bytes()) {
            return Ok(());
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            if hidden.is_empty() || hidden == b"." || hidden == b".." {
                return Err(self.entry_err(&shown, "malformed whiteout".into()));
            }
            let target = parent(true)?.join(std::ffi::OsStr::from_bytes(hidden));
            clear_target(&target, false)?;
            return mknod(&target, libc::S_IFCHR, 0);
        }
        let target = parent(true)?.join(std::ffi::OsStr::from_bytes(name));
        use tar::EntryType as T;
        match kind {
            T::Directory => {
                if !clear_target(&target, true)? {
                    std::fs::create_dir(&target)
                        .map_err(|e| RootfsError::io(format!("mkdir {}", target.display()), e))?;
                }
                for (n, v) in &meta.xattrs {
                    set_xattr(&target, n, v)?;
                }
                self.dirs.push((target, meta));
            }
            T::Regular | T::Continuous => {
                clear_target(&target, false)?;
                self.regular(entry, &target, &meta)?;
            }
            T::GNUSparse => {
                clear_target(&target, false)?;
                entry
                    .unpack(&target)
                    .map_err(|e| self.entry_err(&shown, format!("sparse file: {e}")))?;
            }
            T::Symlink => {
                let link = entry
                    .link_name()
                    .map_err(|e| self.entry_err(&shown, format!("bad link name: {e}")))?
                    .ok_or_else(|| self.entry_err(&shown, "symlink without target".into()))?
                    .into_owned();
                clear_target(&target, false)?;
                std::os::unix::fs::symlink(&link, &target)
                    .map_err(|e| RootfsError::io(format!("symlink {}", target.display()), e))?;
                lchown(&target, meta.uid, meta.gid)?;
                for (n, v) in &meta.xattrs {
                    // Most namespaces refuse xattrs on symlinks; that is not worth failing for.
                    let _ = set_xattr(&target, n, v);
                }
                set_mtime(&target, meta.mtime)?;
            }
            T::Link => {
                let link = entry
                    .link_name()
                    .map_err(|e| self.entry_err(&shown, format!("bad link name: {e}")))?
                    .ok_or_else(|| self.entry_err(&shown, "hardlink without target".into()))?
                    .into_owned();
                let source_rel = relative(&link)
                    .filter(|r| !r.as_os_str().is_empty())
                    .ok_or_else(|| {
                        self.entry_err(
                            &shown,
                            format!("hardlink target {} leaves the layer", link.display()),
                        )
                    })?;
                let source = resolve_parent(self.dst, &source_rel, false)
                    .map_err(|why| self.entry_err(&shown, format!("hardlink target: {why}")))?
                    .join(source_rel.file_name().unwrap_or_default());
                match std::fs::symlink_metadata(&source) {
                    Ok(m) if m.is_dir() => {
                        return Err(self.entry_err(&shown, "hardlink to a directory".into()))
                    }
                    Ok(_) => {}
                    Err(e) => {
                        return Err(self.entry_err(
                            &shown,
                            format!("hardlink target {} not in this layer: {e}", link.display()),
                        ))
                    }
                }
                if source == target {
                    return Ok(());
                }
                clear_target(&target, false)?;
                // link(2) without AT_SYMLINK_FOLLOW: a symlink source is linked, not followed.
                std::fs::hard_link(&source, &target)
                    .map_err(|e| RootfsError::io(format!("hardlink {}", target.display()), e))?;
            }
            T::Char | T::Block | T::Fifo => {
                let (ftype, dev) = match kind {
                    T::Fifo => (libc::S_IFIFO, 0),
                    _ => {
                        let major = header.device_major().ok().flatten().unwrap_or(0);
                        let minor = header.device_minor().ok().flatten().unwrap_or(0);
                        let t = if kind == T::Char {
                            libc::S_IFCHR
                        } else {
                            libc::S_IFBLK
                        };
                        (t, libc::makedev(major, minor))
                    }
                };
                clear_target(&target, false)?;
                mknod(&target, ftype | (meta.mode & 0o7777), dev)?;
                lchown(&target, meta.uid, meta.gid)?;
                chmod(&target, meta.mode)?;
                for (n, v) in &meta.xattrs {
                    set_xattr(&target, n, v)?;
                }
                set_mtime(&target, meta.mtime)?;
            }
            other => {
                tracing::warn!(
                    layer = self.diff_id,
                    entry = shown,
                    "skipping tar entry of type {other:?}"
                );
            }
        }
        Ok(())
    }

    /// A regular file: through the object store when there is one, else written in place.
    fn regular<R: Read>(
        &mut self,
        entry: &mut tar::Entry<R>,
        target: &Path,
        meta: &Meta,
    ) -> Result<(), RootfsError> {
        let size = entry.size();
        let Some(objects) = self.objects.filter(|_| size > 0) else {
            return self.write_new(entry, target, meta);
        };
        let tmp = objects.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            TEMP_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let read_err = |e: std::io::Error| {
            RootfsError::io(format!("reading {} from the layer", target.display()), e)
        };
        let key = if size <= SMALL_FILE {
            self.buf.clear();
            entry.read_to_end(&mut self.buf).map_err(read_err)?;
            let key = meta.object_key(&self.buf);
            if link_object(&objects.join(&key), target)? {
                return Ok(());
            }
            let mut f = create_new(&tmp)?;
            f.write_all(&self.buf)
                .map_err(|e| RootfsError::io(format!("writing {}", tmp.display()), e))?;
            meta.apply_to_file(&f, target)?;
            key
        } else {
            // Large: stream to the temp file while hashing, then decide.
            let mut f = create_new(&tmp)?;
            let mut content = Sha256::new();
            self.buf.resize(SMALL_FILE as usize, 0);
            loop {
                let n = entry.read(&mut self.buf).map_err(read_err)?;
                if n == 0 {
                    break;
                }
                content.update(&self.buf[..n]);
                f.write_all(&self.buf[..n])
                    .map_err(|e| RootfsError::io(format!("writing {}", tmp.display()), e))?;
            }
            meta.apply_to_file(&f, target)?;
            meta.object_key(&content.finalize())
        };
        let object = objects.join(&key);
        match std::fs::hard_link(&tmp, &object) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                // Someone made it meanwhile: use theirs, unless its link count is full.
                if link_object(&object, target)? {
                    let _ = std::fs::remove_file(&tmp);
                    return Ok(());
                }
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(RootfsError::io(format!("storing object {key}"), e));
            }
        }
        std::fs::rename(&tmp, target).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            RootfsError::io(format!("placing {}", target.display()), e)
        })
    }

    fn write_new<R: Read>(
        &mut self,
        entry: &mut tar::Entry<R>,
        target: &Path,
        meta: &Meta,
    ) -> Result<(), RootfsError> {
        let mut f = create_new(target)?;
        std::io::copy(entry, &mut f)
            .map_err(|e| RootfsError::io(format!("writing {}", target.display()), e))?;
        meta.apply_to_file(&f, target)
    }

    /// Directory owners, modes and mtimes, deepest first, once their contents are written
    /// (creating children changes a directory's mtime). Parents are re-resolved without
    /// following symlinks, since a later entry may have replaced one with a symlink.
    fn finish_dirs(&mut self) -> Result<(), RootfsError> {
        let mut dirs = std::mem::take(&mut self.dirs);
        dirs.sort_by(|a, b| b.0.cmp(&a.0));
        for (path, meta) in dirs {
            let safe = if path == self.dst {
                true
            } else {
                let rel = path.strip_prefix(self.dst).unwrap_or(&path);
                resolve_parent(self.dst, rel, false).is_ok()
            };
            if !safe || !std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                continue;
            }
            lchown(&path, meta.uid, meta.gid)?;
            chmod(&path, meta.mode)?;
            set_mtime(&path, meta.mtime)?;
        }
        Ok(())
    }
}

/// `SCHILY.xattr.*` PAX records of the entry, without `trusted.overlay.*`.
fn xattrs_of<R: Read>(entry: &mut tar::Entry<R>) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    if let Ok(Some(exts)) = entry.pax_extensions() {
        for ext in exts.flatten() {
            let Ok(key) = ext.key() else { continue };
            if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                if !name.starts_with("trusted.overlay.") {
                    out.push((name.to_string(), ext.value_bytes().to_vec()));
                }
            }
        }
    }
    out
}

fn create_new(p: &Path) -> Result<std::fs::File, RootfsError> {
    // O_EXCL: never opens through a symlink or an existing file.
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(p)
        .map_err(|e| RootfsError::io(format!("creating {}", p.display()), e))
}

/// Links an existing object into the layer. False when there is no such object or its link
/// count is full (EMLINK: ext4 stops at 65000), so the caller writes a copy.
fn link_object(object: &Path, target: &Path) -> Result<bool, RootfsError> {
    match std::fs::hard_link(object, target) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) if e.raw_os_error() == Some(libc::EMLINK) => Ok(false),
        Err(e) => Err(RootfsError::io(
            format!("linking {} to {}", target.display(), object.display()),
            e,
        )),
    }
}

/// `syncfs` on the filesystem holding `dir`.
pub fn syncfs(dir: &Path) -> Result<(), RootfsError> {
    let f = std::fs::File::open(dir)
        .map_err(|e| RootfsError::io(format!("opening {}", dir.display()), e))?;
    // SAFETY: syncfs on an open fd.
    if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
        return Err(last_err(format!("syncfs {}", dir.display())));
    }
    Ok(())
}

/// Removes a tree (no error if absent), never following symlinks.
pub fn remove_tree(p: &Path) -> Result<(), RootfsError> {
    match std::fs::symlink_metadata(p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(RootfsError::io(format!("removing {}", p.display()), e)),
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p)
            .map_err(|e| RootfsError::io(format!("removing {}", p.display()), e)),
        Ok(_) => std::fs::remove_file(p)
            .map_err(|e| RootfsError::io(format!("removing {}", p.display()), e)),
    }
}

/// Calls `f(dev, ino, allocated bytes)` for every inode under a tree (the tree's own dir
/// excluded), never following symlinks.
pub fn walk_inodes(p: &Path, mut f: impl FnMut(u64, u64, u64)) {
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            f(m.dev(), m.ino(), m.blocks() * 512);
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
}

/// Bytes allocated under a tree, each inode once.
pub fn tree_size(p: &Path) -> u64 {
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    walk_inodes(p, |dev, ino, bytes| {
        if seen.insert((dev, ino)) {
            total += bytes;
        }
    });
    total
}
