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
