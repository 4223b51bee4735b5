//! Unpacking one layer tar into a directory, exactly and safely.
//!
//! Regular files, directories, symlinks and hardlinks go through the `tar` crate's
//! `unpack_in` (ownership, modes incl. setuid, mtimes, PAX xattrs such as security.capability;
//! it refuses `..`, strips leading `/`, and canonicalizes every parent to keep it inside the
//! layer dir, so a symlink planted earlier cannot redirect a later entry). Device nodes and
//! fifos (which `tar` would write as plain files) and OCI whiteouts are done here, resolving
//! parents component by component without following any symlink. Whiteouts become overlayfs's
//! format: `.wh.NAME` a 0/0 character device `NAME`, `.wh..wh..opq` the xattr
//! `trusted.overlay.opaque=y` on its directory.

use std::ffi::CString;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use crate::RootfsError;

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

fn cpath(p: &Path) -> Result<CString, RootfsError> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| {
        RootfsError::io(
            format!("path {} has a NUL byte", p.display()),
            std::io::Error::from(std::io::ErrorKind::InvalidInput),
        )
    })
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

/// Creates (as 0755 root dirs) and returns `dst/parent-of-rel`, refusing symlinks on the way.
fn safe_parent(dst: &Path, rel: &Path) -> std::io::Result<PathBuf> {
    let mut cur = dst.to_path_buf();
    if let Some(parent) = rel.parent() {
        for c in parent.components() {
            cur.push(c);
            match std::fs::symlink_metadata(&cur) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(std::io::Error::other(format!(
                        "{} is not a directory (a symlink or file on the way)",
                        cur.display()
                    )))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir(&cur)?,
                Err(e) => return Err(e),
            }
        }
    }
    Ok(cur)
}

fn mknod(path: &Path, mode: u32, dev: libc::dev_t) -> Result<(), RootfsError> {
    let _ = std::fs::remove_file(path);
    let c = cpath(path)?;
    // SAFETY: mknod with a valid C path.
    if unsafe { libc::mknod(c.as_ptr(), mode, dev) } != 0 {
        return Err(RootfsError::io(
            format!("mknod {}", path.display()),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

fn lchown(path: &Path, uid: u64, gid: u64) -> Result<(), RootfsError> {
    let c = cpath(path)?;
    // SAFETY: lchown with a valid C path.
    if unsafe { libc::lchown(c.as_ptr(), uid as libc::uid_t, gid as libc::gid_t) } != 0 {
        return Err(RootfsError::io(
            format!("chown {}", path.display()),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) -> Result<(), RootfsError> {
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
        return Err(RootfsError::io(
            format!("setting {name} on {}", path.display()),
            std::io::Error::last_os_error(),
        ));
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
    // SAFETY: utimensat on a valid C path without following symlinks.
    if unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    } != 0
    {
        return Err(RootfsError::io(
            format!("setting mtime of {}", path.display()),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Unpacks the tar stream into `dst` (an empty directory).
pub fn unpack_layer(reader: impl Read, dst: &Path, diff_id: &str) -> Result<(), RootfsError> {
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(true);
    archive.set_overwrite(true);
    let entry_err = |entry: &str, why: String| RootfsError::Entry {
        diff_id: diff_id.to_string(),
        entry: entry.to_string(),
        why,
    };
    let mut dir_mtimes: Vec<(PathBuf, u64)> = Vec::new();
    let entries = archive
        .entries()
        .map_err(|e| entry_err("", format!("not a tar stream: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| entry_err("", format!("malformed tar: {e}")))?;
        let raw = entry
            .path()
            .map_err(|e| entry_err("", format!("bad path: {e}")))?
            .into_owned();
        let shown = raw.display().to_string();
        let Some(rel) = relative(&raw) else {
            return Err(entry_err(&shown, "path leaves the layer (`..`)".into()));
        };
        if rel.as_os_str().is_empty() {
            continue;
        }
        let name = rel
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let header = entry.header();
        let kind = header.entry_type();
        let uid = header.uid().unwrap_or(0);
        let gid = header.gid().unwrap_or(0);
        let mode = header.mode().unwrap_or(0o644);
        let mtime = header.mtime().unwrap_or(0);
        if name == OPAQUE {
            let dir = safe_parent(dst, &rel).map_err(|e| entry_err(&shown, e.to_string()))?;
            set_xattr(&dir, "trusted.overlay.opaque", b"y")?;
            continue;
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
            if hidden.is_empty() || hidden.contains('/') {
                return Err(entry_err(&shown, "malformed whiteout".into()));
            }
            let parent = safe_parent(dst, &rel).map_err(|e| entry_err(&shown, e.to_string()))?;
            let target = parent.join(hidden);
            if std::fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir()) {
                remove_tree(&target)?;
            }
            mknod(&target, libc::S_IFCHR, 0)?;
            continue;
        }
        if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
            let parent = safe_parent(dst, &rel).map_err(|e| entry_err(&shown, e.to_string()))?;
            let target = parent.join(rel.file_name().unwrap_or_default());
            let (ftype, dev) = if kind.is_fifo() {
                (libc::S_IFIFO, 0)
            } else {
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                let t = if kind.is_character_special() {
                    libc::S_IFCHR
                } else {
                    libc::S_IFBLK
                };
                (t, libc::makedev(major, minor))
            };
            mknod(&target, ftype | (mode & 0o7777), dev)?;
            lchown(&target, uid, gid)?;
            // chown clears setuid bits: set the mode again after it.
            let c = cpath(&target)?;
            // SAFETY: chmod with a valid C path (device nodes are never symlinks).
            unsafe { libc::chmod(c.as_ptr(), mode & 0o7777) };
            set_mtime(&target, mtime)?;
            continue;
        }
        if kind.is_dir() {
            dir_mtimes.push((dst.join(&rel), mtime));
        }
        match entry.unpack_in(dst) {
            Ok(true) => {}
            Ok(false) => return Err(entry_err(&shown, "path leaves the layer".into())),
            Err(e) => {
                // tar's error says where; its source says why.
                let mut why = e.to_string();
                let mut cur: Option<&dyn std::error::Error> = e.get_ref().map(|r| r as _);
                while let Some(inner) = cur.and_then(std::error::Error::source) {
                    why.push_str(&format!(": {inner}"));
                    cur = Some(inner);
                }
                return Err(entry_err(&shown, why));
            }
        }
    }
    // Creating children changed the directories' mtimes: put the layer's back, deepest first.
    dir_mtimes.sort_by(|a, b| b.0.cmp(&a.0));
    for (p, t) in dir_mtimes {
        if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
            set_mtime(&p, t)?;
        }
    }
    Ok(())
}

/// `syncfs` on the filesystem holding `dir`.
pub fn syncfs(dir: &Path) -> Result<(), RootfsError> {
    let f = std::fs::File::open(dir)
        .map_err(|e| RootfsError::io(format!("opening {}", dir.display()), e))?;
    use std::os::fd::AsRawFd;
    // SAFETY: syncfs on an open fd.
    if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
        return Err(RootfsError::io(
            format!("syncfs {}", dir.display()),
            std::io::Error::last_os_error(),
        ));
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

/// Bytes allocated under a tree, each inode once.
pub fn tree_size(p: &Path) -> u64 {
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            if !seen.insert((m.dev(), m.ino())) {
                continue;
            }
            total += m.blocks() * 512;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    total
}
