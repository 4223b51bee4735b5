//! `hb save` / `hb load` round trips and bad archives.

mod common;

use common::*;
use std::io::Write;

fn docker_archive(name: &str, layers: &[Vec<u8>]) -> (Vec<u8>, String) {
    let diff_ids: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/true"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let id = sha256(&config);
    let mut b = tar::Builder::new(Vec::new());
    let mut put = |path: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, path, data).unwrap();
    };
    put(&format!("{}.json", &id[7..]), &config);
    let mut names = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        // Old docker save layout: one directory per layer, gzip in the newer ones.
        let p = format!("layer{i}/layer.tar");
        if i % 2 == 1 {
            put(&p, &gzip(l));
        } else {
            put(&p, l);
        }
        names.push(p);
    }
    let manifest = serde_json::to_vec(&serde_json::json!([{
        "Config": format!("{}.json", &id[7..]), "RepoTags": [name], "Layers": names,
    }]))
    .unwrap();
    put("manifest.json", &manifest);
    (b.into_inner().unwrap(), id)
}

#[test]
fn load_docker_archive_save_and_load_back() {
    let d = Daemon::start("");
    let l1 = layer_tar(&[("bin/a", noise(1, 300_000)), ("bin/b", noise(2, 10))]);
    let l2 = layer_tar(&[("etc/c", noise(3, 5000))]);
    let (tarball, id) = docker_archive("tiny:1", &[l1.clone(), l2.clone()]);
    let path = d.dir.path().join("in.tar");
    std::fs::write(&path, &tarball).unwrap();
    let out = d.hb_ok(&["load", "-i", path.to_str().unwrap()]);
    assert!(out.contains("Loaded image: tiny:1"), "{out}");
    let imgs = d.images_json();
    assert_eq!(imgs[0]["id"], id.as_str());

    let saved = d.dir.path().join("out.tar");
    d.hb_ok(&["save", "-o", saved.to_str().unwrap(), "tiny:1"]);
    // Saving to a device (here a private null device; `hb save -o /dev/null` is the same) and
    // to a FIFO writes through it: renaming a finished temp file over it would replace the
    // device with a regular file.
    if unsafe { libc::geteuid() } == 0 {
        let dev = d.dir.path().join("null");
        let c = std::ffi::CString::new(dev.to_str().unwrap()).unwrap();
        // SAFETY: mknod on a path in our own temp dir.
        assert_eq!(
            unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) },
            0
        );
        d.hb_ok(&["save", "-o", dev.to_str().unwrap(), "tiny:1"]);
        let ft = std::fs::metadata(&dev).unwrap().file_type();
        assert!(
            std::os::unix::fs::FileTypeExt::is_char_device(&ft),
            "hb save replaced a device with a file"
        );
    }
    let fifo = d.dir.path().join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo on a path in our own temp dir.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(&fifo).unwrap().len())
    };
    d.hb_ok(&["save", "-o", fifo.to_str().unwrap(), "tiny:1"]);
    // Checked before joining: had the FIFO been replaced, the reader would wait forever.
    let ft = std::fs::metadata(&fifo).unwrap().file_type();
    assert!(
        std::os::unix::fs::FileTypeExt::is_fifo(&ft),
        "hb save replaced a FIFO"
    );
    assert_eq!(
        reader.join().unwrap() as u64,
        std::fs::metadata(&saved).unwrap().len()
    );
    // The saved archive carries the layers byte for byte (digest = diff_id).
    let mut a = tar::Archive::new(std::fs::File::open(&saved).unwrap());
    let mut names = Vec::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let p = e.path().unwrap().to_string_lossy().to_string();
        if p == format!("blobs/sha256/{}", &sha256(&l1)[7..]) {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut v).unwrap();
            assert_eq!(v, l1);
        }
        names.push(p);
    }
    for want in ["oci-layout", "index.json", "manifest.json"] {
        assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
    }

    d.hb_ok(&["rmi", "tiny:1"]);
    assert_eq!(d.images_json().as_array().unwrap().len(), 0);
    // Load it back through stdin.
    let out = std::process::Command::new(bin("hb"))
        .args(["-H", &format!("unix://{}", d.socket.display()), "load"])
        .stdin(std::fs::File::open(&saved).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let imgs = d.images_json();
    assert_eq!(imgs[0]["id"], id.as_str(), "image id survives save/load");
    assert_eq!(imgs[0]["repo_tags"][0], "tiny:1");
}

#[test]
fn bad_archives_are_refused_cleanly() {
    let d = Daemon::start("");
    let garbage = d.dir.path().join("garbage.tar");
    std::fs::write(&garbage, noise(9, 10_000)).unwrap();
    let err = d.hb_err(&["load", "-i", garbage.to_str().unwrap()]);
    assert!(err.contains("archive"), "{err}");

    // A layer whose content does not match its diff_id.
    let l1 = layer_tar(&[("bin/a", noise(1, 1000))]);
    let (mut tarball, _) = docker_archive("bad:1", &[l1]);
    // Flip a byte inside the layer's file data (after the first 1 KiB of headers).
    let pos = tarball
        .windows(8)
        .position(|w| w == &noise(1, 1000)[..8])
        .unwrap();
    tarball[pos + 100] ^= 1;
    let p = d.dir.path().join("bad.tar");
    std::fs::File::create(&p)
        .unwrap()
        .write_all(&tarball)
        .unwrap();
    let err = d.hb_err(&["load", "-i", p.to_str().unwrap()]);
    assert!(err.contains("digest mismatch"), "{err}");
    assert_eq!(d.images_json().as_array().unwrap().len(), 0);
    let check = d.hb_ok(&["system", "check"]);
    assert!(check.contains("\"problems\": []"), "{check}");
}
