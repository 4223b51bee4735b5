//! Unpack tests with crafted tars in a real store; overlay checks need root.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;

use super::*;

struct Fixture {
    _dir: tempfile::TempDir,
    layers: LayerStore,
    store: hb_store::Store,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = hb_store::Store::open(&dir.path().join("store"), Default::default()).unwrap();
    let layers = LayerStore::open(&dir.path().join("layers"), store.clone()).unwrap();
    Fixture {
        _dir: dir,
        layers,
        store,
    }
}

fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let r = unsafe { libc::geteuid() } == 0;
    if !r {
        eprintln!("skipping: needs root");
    }
    r
}

/// Tar builder with raw control over names (no path sanitising).
struct Tar(Vec<u8>);

impl Tar {
    fn new() -> Tar {
        Tar(Vec::new())
    }
    fn raw(
        &mut self,
        name: &str,
        kind: u8,
        data: &[u8],
        mode: u32,
        link: &str,
        uid: u64,
    ) -> &mut Tar {
        let mut h = tar::Header::new_gnu();
        {
            let gnu = h.as_gnu_mut().unwrap();
            gnu.name[..name.len()].copy_from_slice(name.as_bytes());
            gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_entry_type(tar::EntryType::new(kind));
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(uid);
        h.set_mtime(1_600_000_000);
        if kind == b'3' || kind == b'4' {
            h.set_device_major(1).unwrap();
            h.set_device_minor(3).unwrap();
        }
        h.set_cksum();
        self.0.extend_from_slice(h.as_bytes());
        self.0.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.0.extend(std::iter::repeat_n(0u8, pad));
        self
    }
    fn file(&mut self, name: &str, data: &[u8]) -> &mut Tar {
        self.raw(name, b'0', data, 0o644, "", 0)
    }
    fn dir(&mut self, name: &str) -> &mut Tar {
        self.raw(name, b'5', b"", 0o755, "", 0)
    }
    fn finish(&mut self) -> Vec<u8> {
        let mut v = self.0.clone();
        v.extend(std::iter::repeat_n(0u8, 1024));
        v
    }
}

fn put(f: &Fixture, tar: &[u8]) -> String {
    f.store.put_bytes(tar, None).unwrap().digest
}

#[test]
fn entries_unpack_exactly() {
    if !root() {
        return;
    }
    let f = fixture();
    let mut t = Tar::new();
    t.dir("etc/")
        .file("etc/hello", b"hi")
        .raw("bin/su", b'0', b"binary", 0o4755, "", 0)
        .raw("home/u/f", b'0', b"owned", 0o600, "", 1000)
        .raw("etc/link", b'2', b"", 0o777, "hello", 0)
        .raw("etc/hard", b'1', b"", 0o644, "etc/hello", 0)
        .raw("dev/null", b'3', b"", 0o666, "", 0)
        .raw("run/fifo", b'6', b"", 0o600, "", 0);
    let id = put(&f, &t.finish());
    let dir = f.layers.ensure(&id).unwrap();
    assert_eq!(std::fs::read(dir.join("etc/hello")).unwrap(), b"hi");
    let su = std::fs::metadata(dir.join("bin/su")).unwrap();
    assert_eq!(su.permissions().mode() & 0o7777, 0o4755, "setuid kept");
    let owned = std::fs::metadata(dir.join("home/u/f")).unwrap();
    assert_eq!((owned.uid(), owned.gid()), (1000, 1000));
    assert_eq!(
        std::fs::read_link(dir.join("etc/link")).unwrap().to_str(),
        Some("hello")
    );
    assert_eq!(
        std::fs::metadata(dir.join("etc/hard")).unwrap().ino(),
        std::fs::metadata(dir.join("etc/hello")).unwrap().ino()
    );
    let null = std::fs::symlink_metadata(dir.join("dev/null")).unwrap();
    assert_eq!(null.mode() & libc::S_IFMT, libc::S_IFCHR);
    assert_eq!(null.rdev(), libc::makedev(1, 3));
    let fifo = std::fs::symlink_metadata(dir.join("run/fifo")).unwrap();
    assert_eq!(fifo.mode() & libc::S_IFMT, libc::S_IFIFO);
    assert_eq!(
        std::fs::metadata(dir.join("etc")).unwrap().mtime(),
        1_600_000_000
    );
    assert!(f.layers.layer_size(&id).unwrap() > 0);
}

#[test]
fn hostile_entries_never_land_outside() {
    let f = fixture();
    let outside = tempfile::tempdir().unwrap();
    let out = outside.path().display().to_string();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("dotdot", Tar::new().file("../../escape", b"x").finish()),
        (
            "symlink dir",
            Tar::new()
                .raw("evil", b'2', b"", 0o777, &out, 0)
                .file("evil/planted", b"x")
                .finish(),
        ),
        (
            "hardlink out",
            Tar::new()
                .raw("h", b'1', b"", 0o644, "../../../etc/passwd", 0)
                .finish(),
        ),
        (
            "device via symlink",
            Tar::new()
                .raw("d", b'2', b"", 0o777, &out, 0)
                .raw("d/null", b'3', b"", 0o666, "", 0)
                .finish(),
        ),
        (
            "whiteout via symlink",
            Tar::new()
                .raw("w", b'2', b"", 0o777, &out, 0)
                .file("w/.wh.victim", b"")
                .finish(),
        ),
    ];
    for (what, tar) in cases {
        let id = put(&f, &tar);
        let err = f.layers.ensure(&id);
        assert!(err.is_err(), "{what}: accepted");
        assert!(!f.layers.is_unpacked(&id), "{what}: half layer visible");
        assert_eq!(
            std::fs::read_dir(outside.path()).unwrap().count(),
            0,
            "{what}: wrote outside"
        );
    }
    // Absolute paths are taken relative to the layer.
    let id = put(&f, &Tar::new().file("/abs/file", b"ok").finish());
    let dir = f.layers.ensure(&id).unwrap();
    assert_eq!(std::fs::read(dir.join("abs/file")).unwrap(), b"ok");
    // A truncated tar fails and leaves nothing.
    let mut bad = Tar::new().file("a", &[7u8; 4000]).finish();
    bad.truncate(1500);
    let id = put(&f, &bad);
    assert!(f.layers.ensure(&id).is_err());
    assert!(!f.layers.is_unpacked(&id));
}

#[test]
fn whiteouts_hide_lower_files_in_an_overlay() {
    if !root() {
        return;
    }
    let f = fixture();
    let lower = put(
        &f,
        &Tar::new()
            .file("keep", b"k")
            .file("gone", b"g")
            .dir("opq/")
            .file("opq/old", b"o")
            .finish(),
    );
    let upper = put(
        &f,
        &Tar::new()
            .file(".wh.gone", b"")
            .dir("opq/")
            .file("opq/.wh..wh..opq", b"")
            .file("opq/new", b"n")
            .finish(),
    );
    let lowers = f
        .layers
        .ensure_image(&[lower.clone(), upper.clone()], 2)
        .unwrap();
    assert_eq!(lowers[0], f.layers.path(&upper), "top layer first");
    let wh = std::fs::symlink_metadata(lowers[0].join("gone")).unwrap();
    assert_eq!(wh.mode() & libc::S_IFMT, libc::S_IFCHR);
    assert_eq!(wh.rdev(), 0);
    let mnt = tempfile::tempdir().unwrap();
    let dirs = ContainerDirs::create(mnt.path(), "c1").unwrap();
    let data = format!(
        "lowerdir={}:{},upperdir={},workdir={}",
        lowers[0].display(),
        lowers[1].display(),
        dirs.upper.display(),
        dirs.work.display()
    );
    let st = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &data])
        .arg(&dirs.merged)
        .status()
        .unwrap();
    assert!(st.success());
    let names = |p: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let top = names(&dirs.merged);
    let opq = names(&dirs.merged.join("opq"));
    let _ = Command::new("umount").arg(&dirs.merged).status();
    assert_eq!(top, vec!["keep", "opq"]);
    assert_eq!(opq, vec!["new"]);
    dirs.remove().unwrap();
    assert!(!dirs.root.exists());
}

#[test]
fn concurrent_ensures_unpack_once_and_pins_block_removal() {
    let f = fixture();
    let id = put(&f, &Tar::new().file("a", &[1u8; 100_000]).finish());
    let paths: Vec<PathBuf> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|_| s.spawn(|| f.layers.ensure(&id).unwrap()))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(paths.windows(2).all(|w| w[0] == w[1]));
    f.layers.pin("c1", std::slice::from_ref(&id)).unwrap();
    assert!(matches!(
        f.layers.remove(&id),
        Err(RootfsError::Busy { .. })
    ));
    f.layers.unpin("c1").unwrap();
    f.layers.remove(&id).unwrap();
    assert!(!f.layers.is_unpacked(&id));
    // Unpacked again on demand.
    assert!(f.layers.ensure(&id).is_ok());
    assert_eq!(f.layers.usage().unwrap().layers.len(), 1);
}

#[test]
fn a_crash_leftover_is_cleaned_at_open() {
    let f = fixture();
    let leftover = f.layers.root().join(".tmp-deadbeef-1");
    std::fs::create_dir_all(leftover.join("x")).unwrap();
    let again = LayerStore::open(f.layers.root(), f.store.clone()).unwrap();
    assert!(!leftover.exists());
    assert!(again.ensure("sha256:nothex").is_err());
    assert!(again.ensure(&format!("sha256:{}", "0".repeat(64))).is_err());
}

fn getxattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let c = crate::unpack::cpath(p).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: lgetxattr into a buffer we own.
    let r = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (r >= 0).then(|| buf[..r as usize].to_vec())
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_500_000_000);
    h
}

#[test]
fn pax_xattrs_long_names_symlink_times_and_dir_modes() {
    if !root() {
        return;
    }
    let f = fixture();
    let mut b = tar::Builder::new(Vec::new());
    // ping's file capability (cap_net_raw+ep, VFS v2).
    let cap: Vec<u8> = vec![
        1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    b.append_pax_extensions([
        ("SCHILY.xattr.security.capability", cap.as_slice()),
        ("SCHILY.xattr.user.note", b"n".as_slice()),
        ("SCHILY.xattr.trusted.overlay.redirect", b"/etc".as_slice()),
    ])
    .unwrap();
    let mut h = header(tar::EntryType::Regular, 0o4755, 4);
    b.append_data(&mut h, "bin/ping", &b"ping"[..]).unwrap();
    let long = format!("deep/{}/file", "x".repeat(150));
    let mut h = header(tar::EntryType::Regular, 0o644, 2);
    b.append_data(&mut h, &long, &b"ln"[..]).unwrap(); // GNU long name
    let pax_long = format!("pax/{}", "y".repeat(200));
    b.append_pax_extensions([("path", pax_long.as_bytes())])
        .unwrap();
    let mut h = header(tar::EntryType::Regular, 0o644, 2);
    h.set_path("pax/short").unwrap();
    h.set_cksum();
    b.append(&h, &b"px"[..]).unwrap();
    let mut h = header(tar::EntryType::Symlink, 0o777, 0);
    b.append_link(&mut h, "bin/sh", "ping").unwrap();
    // A read-only dir whose mode and mtime must be applied after its child is written.
    let mut h = header(tar::EntryType::Directory, 0o555, 0);
    b.append_data(&mut h, "ro/", std::io::empty()).unwrap();
    let mut h = header(tar::EntryType::Regular, 0o644, 1);
    b.append_data(&mut h, "ro/child", &b"c"[..]).unwrap();
    let id = put(&f, &b.into_inner().unwrap());
    let dir = f.layers.ensure(&id).unwrap();
    let ping = dir.join("bin/ping");
    assert_eq!(
        getxattr(&ping, "security.capability").as_deref(),
        Some(cap.as_slice())
    );
    assert_eq!(getxattr(&ping, "user.note").as_deref(), Some(&b"n"[..]));
    assert_eq!(
        getxattr(&ping, "trusted.overlay.redirect"),
        None,
        "overlay xattrs dropped"
    );
    assert_eq!(std::fs::metadata(&ping).unwrap().mode() & 0o7777, 0o4755);
    assert_eq!(std::fs::read(dir.join(&long)).unwrap(), b"ln");
    assert_eq!(std::fs::read(dir.join(&pax_long)).unwrap(), b"px");
    let sh = std::fs::symlink_metadata(dir.join("bin/sh")).unwrap();
    assert!(sh.file_type().is_symlink());
    assert_eq!(
        sh.mtime(),
        1_500_000_000,
        "symlink mtime set without following"
    );
    let ro = std::fs::metadata(dir.join("ro")).unwrap();
    assert_eq!(ro.mode() & 0o7777, 0o555);
    assert_eq!(ro.mtime(), 1_500_000_000);
    assert_eq!(std::fs::read(dir.join("ro/child")).unwrap(), b"c");
}

#[test]
fn a_huge_sparse_file_unpacks_sparse() {
    let f = fixture();
    let real: u64 = 5 << 30; // > 4 GiB: the size needs GNU base-256/large octal
    let mut h = tar::Header::new_gnu();
    h.set_path("big.img").unwrap();
    h.set_entry_type(tar::EntryType::GNUSparse);
    h.set_mode(0o644);
    h.set_size(512);
    h.set_mtime(1);
    h.set_uid(0);
    h.set_gid(0);
    {
        let g = h.as_gnu_mut().unwrap();
        g.set_real_size(real);
        g.sparse[0].set_offset(real - 512);
        g.sparse[0].set_length(512);
    }
    h.set_cksum();
    let mut tar = h.as_bytes().to_vec();
    tar.extend_from_slice(&[0xAB; 512]);
    tar.extend_from_slice(&[0; 1024]);
    let id = put(&f, &tar);
    let dir = f.layers.ensure(&id).unwrap();
    let m = std::fs::metadata(dir.join("big.img")).unwrap();
    assert_eq!(m.len(), real);
    assert!(
        m.blocks() * 512 < 1 << 20,
        "written sparse, not 5 GiB of zeros"
    );
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(dir.join("big.img")).unwrap();
    file.seek(SeekFrom::Start(real - 512)).unwrap();
    let mut tail = Vec::new();
    file.read_to_end(&mut tail).unwrap();
    assert_eq!(tail, vec![0xAB; 512]);
}

#[test]
fn identical_files_share_one_object_across_layers() {
    if !root() {
        return;
    }
    let f = fixture();
    let big = vec![9u8; 3 << 20]; // the streaming path
    let a = put(
        &f,
        &Tar::new()
            .file("lib/libc.so", &big)
            .file("etc/a", b"same")
            .finish(),
    );
    let b = put(
        &f,
        &Tar::new()
            .file("usr/lib/libc.so", &big)
            .file("etc/b", b"same")
            .raw("etc/c", b'0', b"same", 0o600, "", 0) // other mode: other object
            .finish(),
    );
    let (da, db) = (f.layers.ensure(&a).unwrap(), f.layers.ensure(&b).unwrap());
    let ino = |p: PathBuf| std::fs::metadata(p).unwrap().ino();
    assert_eq!(ino(da.join("lib/libc.so")), ino(db.join("usr/lib/libc.so")));
    assert_eq!(ino(da.join("etc/a")), ino(db.join("etc/b")));
    assert_ne!(ino(db.join("etc/b")), ino(db.join("etc/c")));
    let u = f.layers.usage().unwrap();
    assert!(u.shared_bytes >= 3 << 20, "{u:?}");
    let sum: u64 = u.layers.iter().map(|l| l.1).sum();
    assert!(
        u.total_bytes + (3 << 20) <= sum,
        "shared counted once: {u:?}"
    );
    // Removing one layer keeps the other's files; removing both frees the objects.
    f.layers.remove(&a).unwrap();
    assert_eq!(std::fs::read(db.join("usr/lib/libc.so")).unwrap(), big);
    f.layers.remove(&b).unwrap();
    let left = std::fs::read_dir(f.layers.root().join("objects"))
        .unwrap()
        .count();
    assert_eq!(left, 0, "unused objects collected");
}

#[test]
fn hardlink_to_a_symlink_links_the_symlink() {
    let f = fixture();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), b"s").unwrap();
    let target = outside.path().join("secret").display().to_string();
    let id = put(
        &f,
        &Tar::new()
            .raw("sym", b'2', b"", 0o777, &target, 0)
            .raw("hard", b'1', b"", 0o644, "sym", 0)
            .finish(),
    );
    let dir = f.layers.ensure(&id).unwrap();
    let m = std::fs::symlink_metadata(dir.join("hard")).unwrap();
    assert!(
        m.file_type().is_symlink(),
        "the link is the symlink, not the file it names"
    );
    assert_eq!(
        std::fs::metadata(outside.path().join("secret"))
            .unwrap()
            .nlink(),
        1
    );
}

#[test]
fn mount_data_uses_short_links_when_long() {
    let f = fixture();
    let lowers: Vec<PathBuf> = (0..60)
        .map(|i| f.layers.root().join(format!("{i:064x}")))
        .collect();
    let (up, work) = (Path::new("/u"), Path::new("/w"));
    let few = overlay_mount_data(&f.layers, &lowers[..3], up, work).unwrap();
    assert!(few.starts_with(&format!("lowerdir={}:", lowers[0].display())));
    let many = overlay_mount_data(&f.layers, &lowers, up, work).unwrap();
    assert!(many.len() <= MOUNT_DATA_MAX, "{}", many.len());
    let first = many
        .strip_prefix("lowerdir=")
        .unwrap()
        .split(':')
        .next()
        .unwrap();
    assert_eq!(std::fs::read_link(first).unwrap(), lowers[0]);
    assert!(many.ends_with(",upperdir=/u,workdir=/w"));
    let too_many: Vec<PathBuf> = (0..400)
        .map(|i| f.layers.root().join(format!("{i:064x}")))
        .collect();
    assert!(matches!(
        overlay_mount_data(&f.layers, &too_many, up, work),
        Err(RootfsError::TooManyLayers { .. })
    ));
}

#[test]
fn the_mount_points_layer_is_made_once_and_listed_nowhere() {
    let f = fixture();
    let base = f.layers.mount_points_layer();
    for d in ["etc", "proc", "sys", "dev"] {
        assert!(base.join(d).is_dir(), "{d}");
    }
    for p in ["etc/hostname", "etc/hosts", "etc/resolv.conf"] {
        let m = std::fs::metadata(base.join(p)).unwrap();
        assert!(m.is_file() && m.len() == 0, "{p}");
        assert_eq!(m.mode() & 0o7777, 0o644, "{p}");
    }
    // Not an image layer: usage and listings skip it.
    assert!(f.layers.usage().unwrap().layers.is_empty());
    // A crash while making it leaves a temp dir; the next open cleans that and keeps the layer.
    let leftover = f.layers.root().join(".tmp-mount-points-v1-1");
    std::fs::create_dir(&leftover).unwrap();
    let again = LayerStore::open(f.layers.root(), f.store.clone()).unwrap();
    assert!(!leftover.exists());
    assert_eq!(again.mount_points_layer(), base);
    assert!(base.join("etc/hosts").is_file());
}

/// Makes dirs for `id` through `r` and writes the mounted files, as the daemon does.
fn made(r: &DirRecycler, id: &str) -> ContainerDirs {
    let d = r.create(id).unwrap();
    let text = format!("{id}\n");
    d.write_mounted_files(&text, &text, &text).unwrap();
    std::fs::write(&d.log, "a log line\n").unwrap();
    d
}

fn recycled(r: &DirRecycler, root: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root.join(RECYCLED_DIR))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    assert_eq!(v.len(), r.available());
    v
}

#[test]
fn untouched_dirs_go_to_the_next_container() {
    let t = tempfile::tempdir().unwrap();
    let r = DirRecycler::new(t.path(), 4).unwrap();
    let a = made(&r, "a1");
    let upper_ino = a.upper.metadata().unwrap().ino();
    // What a volatile overlay leaves in the work dir.
    std::fs::create_dir_all(a.work.join("work/incompat/volatile")).unwrap();
    std::fs::write(a.work.join("work/incompat/volatile/dirty"), "").unwrap();
    if root() {
        // What overlayfs 6.6+ writes on the upper dir at mount: not the container's doing.
        crate::unpack::set_xattr(&a.upper, "trusted.overlay.uuid", &[7u8; 16]).unwrap();
    }
    r.remove(&a).unwrap();
    assert!(!a.root.exists());
    assert_eq!(recycled(&r, t.path()), ["a1"]);

    let b = r.create("b2").unwrap();
    assert_eq!(
        b.upper.metadata().unwrap().ino(),
        upper_ino,
        "the same dirs"
    );
    assert_eq!(b.log, t.path().join("b2/b2-json.log"));
    assert!(!b.log.exists(), "the log is the monitor's to make");
    assert!(!t.path().join("b2/a1-json.log").exists());
    // Shorter files over the old ones leave nothing of them.
    b.write_mounted_files("h\n", "127.0.0.1\tlocalhost\n", "")
        .unwrap();
    assert_eq!(std::fs::read_to_string(&b.hostname).unwrap(), "h\n");
    assert_eq!(std::fs::read_to_string(&b.resolv).unwrap(), "");
    assert!(
        !b.work.join("work/incompat").exists(),
        "a volatile marker would make the next mount fail"
    );
    assert!(recycled(&r, t.path()).is_empty());
    // Nothing waits: the next create makes new dirs.
    let c = r.create("c3").unwrap();
    assert!(c.upper.is_dir() && c.work.is_dir() && c.merged.is_dir());
    assert_ne!(c.upper.metadata().unwrap().ino(), upper_ino);
}

#[test]
fn dirs_a_container_changed_are_removed() {
    let t = tempfile::tempdir().unwrap();
    let r = DirRecycler::new(t.path(), 16).unwrap();
    type Change = Box<dyn Fn(&ContainerDirs)>;
    let changes: Vec<(&str, Change)> = vec![
        (
            "a file in upper",
            Box::new(|d| std::fs::write(d.upper.join("f"), "x").unwrap()),
        ),
        (
            "a dir in upper",
            Box::new(|d| std::fs::create_dir(d.upper.join("etc")).unwrap()),
        ),
        (
            "chmod of the rootfs",
            Box::new(|d| {
                std::fs::set_permissions(&d.upper, std::fs::Permissions::from_mode(0o777)).unwrap()
            }),
        ),
        (
            "chmod of /etc/hosts",
            Box::new(|d| {
                std::fs::set_permissions(&d.hosts, std::fs::Permissions::from_mode(0o666)).unwrap()
            }),
        ),
        (
            "chown of /etc/hostname",
            Box::new(|d| std::os::unix::fs::lchown(&d.hostname, Some(1), Some(1)).unwrap()),
        ),
        (
            "an xattr on the rootfs",
            Box::new(|d| crate::unpack::set_xattr(&d.upper, "user.mark", b"1").unwrap()),
        ),
        (
            "a trusted xattr on the rootfs",
            Box::new(|d| {
                if crate::unpack::set_xattr(&d.upper, "trusted.overlay.opaque", b"y").is_err() {
                    // Not root: trusted.* needs CAP_SYS_ADMIN; any change will do.
                    std::fs::write(d.upper.join("f"), "x").unwrap();
                }
            }),
        ),
        (
            "a rotated log",
            Box::new(|d| std::fs::write(d.root.join("x-json.log.1"), "old").unwrap()),
        ),
        (
            "a resolv.conf replaced by a dir",
            Box::new(|d| {
                std::fs::remove_file(&d.resolv).unwrap();
                std::fs::create_dir(&d.resolv).unwrap();
            }),
        ),
    ];
    for (i, (what, change)) in changes.iter().enumerate() {
        let d = made(&r, &format!("c{i}"));
        change(&d);
        r.remove(&d).unwrap();
        assert!(!d.root.exists(), "{what}");
        assert!(recycled(&r, t.path()).is_empty(), "{what}: recycled");
    }
    // The same steps without a change recycle: the check itself lets good dirs through.
    let d = made(&r, "good");
    r.remove(&d).unwrap();
    assert_eq!(recycled(&r, t.path()), ["good"]);
}

#[test]
fn the_recycler_keeps_at_most_its_capacity_and_forgets_a_previous_daemons_dirs() {
    let t = tempfile::tempdir().unwrap();
    let r = DirRecycler::new(t.path(), 2).unwrap();
    let all: Vec<ContainerDirs> = (0..4).map(|i| made(&r, &format!("k{i}"))).collect();
    for d in &all {
        r.remove(d).unwrap();
        assert!(!d.root.exists());
    }
    assert_eq!(recycled(&r, t.path()), ["k0", "k1"]);
    // Removing again is harmless.
    r.remove(&all[0]).unwrap();
    assert_eq!(r.available(), 2);

    let again = DirRecycler::new(t.path(), 2).unwrap();
    assert_eq!(again.available(), 0);
    assert!(recycled(&again, t.path()).is_empty());
    assert!(matches!(again.create("../x"), Err(RootfsError::BadId(_))));
}

#[test]
fn stocked_dirs_wait_in_the_bin_and_go_to_the_next_creates() {
    let t = tempfile::tempdir().unwrap();
    let r = DirRecycler::new(t.path(), 3).unwrap();
    assert_eq!(r.stock(2).unwrap(), 2);
    assert_eq!(recycled(&r, t.path()).len(), 2);
    // Nothing is left beside the bin in the containers root.
    let beside: Vec<_> = std::fs::read_dir(t.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != RECYCLED_DIR)
        .collect();
    assert!(beside.is_empty(), "{beside:?}");
    // Already stocked: nothing more to make; more than the capacity is never made.
    assert_eq!(r.stock(2).unwrap(), 0);
    assert_eq!(r.stock(10).unwrap(), 1);
    assert_eq!(r.available(), 3);

    let a = r.create("a1").unwrap();
    assert!(a.upper.is_dir() && a.work.is_dir() && a.merged.is_dir());
    assert_eq!(a.root, t.path().join("a1"));
    assert_eq!(r.available(), 2);
    a.write_mounted_files("a1\n", "127.0.0.1\tlocalhost\n", "")
        .unwrap();
    assert_eq!(std::fs::read_to_string(&a.hostname).unwrap(), "a1\n");
    // Used and untouched, it goes back like any other.
    r.remove(&a).unwrap();
    assert_eq!(r.available(), 3);
    assert!(recycled(&r, t.path()).contains(&"a1".to_string()));
}

#[test]
fn the_containers_root_spreads_its_dirs_over_block_groups_on_ext4() {
    let t = tempfile::tempdir().unwrap();
    let c = crate::unpack::cpath(t.path()).unwrap();
    // SAFETY: statfs fills the zeroed struct from a valid C path.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statfs(c.as_ptr(), &mut fs) }, 0);
    let _r = DirRecycler::new(t.path(), 2).unwrap();
    if fs.f_type != libc::EXT4_SUPER_MAGIC {
        eprintln!("skipped: {} is not on ext4", t.path().display());
        return;
    }
    let out = Command::new("lsattr")
        .arg("-d")
        .arg(t.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let attrs = String::from_utf8_lossy(&out.stdout);
    let attrs = attrs.split_whitespace().next().unwrap();
    assert!(attrs.contains('T'), "no +T on the containers root: {attrs}");
    // Idempotent: a second daemon start over the same root is fine.
    DirRecycler::new(t.path(), 2).unwrap();
}
