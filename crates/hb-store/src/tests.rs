//! Tests that need the crate's internal seams: a fake chunk hasher (forced
//! xxh3 collisions) and a small pack roll size (many packs, ENOSPC on roll).

use std::path::Path;
use std::sync::Arc;

use redb::{ReadableDatabase, ReadableTable};

use crate::chunk_id::{ChunkHasher, ChunkId, StandardHasher};
use crate::index::CHUNKS;
use crate::options::{HashAlgorithm, StoreOptions};
use crate::store::{OpenConfig, Store};
use crate::StoreError;

fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

fn sha(data: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// xxh3 ids that depend only on the length: equal-length chunks collide.
struct LengthHasher;

impl ChunkHasher for LengthHasher {
    fn chunk_id(&self, alg: HashAlgorithm, data: &[u8]) -> ChunkId {
        match alg {
            HashAlgorithm::Xxhash => {
                let mut d = [0u8; 16];
                d[..8].copy_from_slice(&(data.len() as u64).to_be_bytes());
                ChunkId::from_digest(alg, &d)
            }
            _ => StandardHasher.chunk_id(alg, data),
        }
    }
}

fn open_with(dir: &Path, opts: StoreOptions, hasher: Arc<dyn ChunkHasher>, roll: u64) -> Store {
    Store::open_with(
        dir,
        opts,
        OpenConfig {
            hasher,
            pack_roll_size: roll,
        },
    )
    .unwrap()
}

fn chunk_keys(store: &Store) -> Vec<ChunkId> {
    let txn = store.database().begin_read().unwrap();
    let t = txn.open_table(CHUNKS).unwrap();
    t.iter()
        .unwrap()
        .map(|e| ChunkId::from_key(e.unwrap().0.value()).unwrap())
        .collect()
}

fn xxhash_opts(dedup: bool) -> StoreOptions {
    StoreOptions {
        hash: HashAlgorithm::Xxhash,
        dedup,
        parallel_ops: 2,
        ..StoreOptions::default()
    }
}

#[test]
fn xxhash_collision_is_disambiguated_on_lookup() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with(
        dir.path(),
        xxhash_opts(true),
        Arc::new(LengthHasher),
        1 << 30,
    );
    // Below MIN_CHUNK: each blob is exactly one chunk, all of the same length.
    let a = noise(10_000, 1);
    let b = noise(10_000, 2);
    let ia = store.put_bytes(&a, None).unwrap();
    let ib = store.put_bytes(&b, None).unwrap();
    assert_eq!(
        (ia.new_chunks, ib.new_chunks),
        (1, 1),
        "b must not reuse a's chunk"
    );
    let mut keys = chunk_keys(&store);
    keys.sort();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0].base(), keys[1].base());
    assert_eq!((keys[0].counter(), keys[1].counter()), (0, 1));
    assert_eq!(store.read_blob(&ia.digest).unwrap(), a);
    assert_eq!(store.read_blob(&ib.digest).unwrap(), b);
    // Real duplicates of either still dedup after the byte comparison.
    let mut w = store.writer();
    w.write_inline(b"hdr").unwrap();
    w.write_content(&b).unwrap();
    w.end_content().unwrap();
    w.write_content(&a).unwrap();
    let ic = w.finish(None).unwrap();
    assert_eq!(ic.new_chunks, 0);
    assert_eq!(chunk_keys(&store).len(), 2);
    let mut expect = b"hdr".to_vec();
    expect.extend_from_slice(&b);
    expect.extend_from_slice(&a);
    assert_eq!(store.read_blob(&ic.digest).unwrap(), expect);
    // A third distinct content takes counter 2.
    let c = noise(10_000, 3);
    let id = store.put_bytes(&c, None).unwrap();
    assert_eq!(chunk_keys(&store).len(), 3);
    assert_eq!(store.read_blob(&id.digest).unwrap(), c);
    let report = store.check(false).unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
}

#[test]
fn xxhash_collision_is_disambiguated_at_commit() {
    // With dedup off nothing is looked up before appending, so the collision
    // is only discovered when the batch is indexed (the same path a
    // concurrent writer would take).
    let dir = tempfile::tempdir().unwrap();
    let store = open_with(
        dir.path(),
        xxhash_opts(false),
        Arc::new(LengthHasher),
        1 << 30,
    );
    let a = noise(10_000, 11);
    let b = noise(10_000, 12);
    let mut w = store.writer();
    for part in [&a, &b, &a, &b, &a, &b] {
        w.write_content(part).unwrap();
        w.end_content().unwrap();
    }
    let info = w.finish(None).unwrap();
    assert_eq!(info.new_chunks, 6, "dedup off stores every copy");
    assert_eq!(chunk_keys(&store).len(), 2);
    let expect = [&a[..], &b[..], &a[..], &b[..], &a[..], &b[..]].concat();
    assert_eq!(store.read_blob(&info.digest).unwrap(), expect);
    let report = store.check(false).unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    // The extra copies are garbage (live share 1/3); gc compacts them away.
    let gc = store.gc().unwrap();
    assert_eq!(gc.chunks_removed, 0);
    assert!(gc.bytes_reclaimed > 0, "{gc:?}");
    assert_eq!(store.read_blob(&info.digest).unwrap(), expect);
}

#[test]
fn many_packs_compact_and_drop() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        parallel_ops: 2,
        ..StoreOptions::default()
    };
    let store = open_with(
        dir.path(),
        opts.clone(),
        Arc::new(StandardHasher),
        512 * 1024,
    );
    let blobs: Vec<Vec<u8>> = (0..12).map(|i| noise(300_000, 100 + i)).collect();
    let infos: Vec<_> = blobs
        .iter()
        .map(|b| store.put_bytes(b, Some(&sha(b))).unwrap())
        .collect();
    let before = store.stats().unwrap();
    assert!(before.pack_files >= 6, "{before:?}");
    for info in infos.iter().step_by(2) {
        assert!(store.delete_blob(&info.digest).unwrap());
    }
    let gc = store.gc().unwrap();
    assert!(gc.chunks_removed > 0);
    assert!(gc.packs_deleted + gc.packs_compacted > 0, "{gc:?}");
    assert!(gc.bytes_reclaimed > 1_000_000, "{gc:?}");
    for (i, info) in infos.iter().enumerate() {
        assert_eq!(store.has_blob(&info.digest).unwrap(), i % 2 == 1);
        if i % 2 == 1 {
            assert_eq!(store.read_blob(&info.digest).unwrap(), blobs[i]);
        }
    }
    assert!(store.check(false).unwrap().is_clean());
    drop(store);
    let store = open_with(dir.path(), opts, Arc::new(StandardHasher), 512 * 1024);
    for i in (1..12).step_by(2) {
        assert_eq!(store.read_blob(&infos[i].digest).unwrap(), blobs[i]);
    }
    assert!(store.check(false).unwrap().is_clean());
}

#[test]
fn disk_full_on_pack_write_leaves_store_consistent() {
    if !Path::new("/dev/full").exists() {
        eprintln!("skipping: no /dev/full");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let roll = 256 * 1024;
    let opts = StoreOptions {
        parallel_ops: 2,
        batch_size: 2,
        ..StoreOptions::default()
    };
    let store = open_with(dir.path(), opts.clone(), Arc::new(StandardHasher), roll);
    let old: Vec<Vec<u8>> = (0..3).map(|i| noise(200_000, 500 + i)).collect();
    let old_infos: Vec<_> = old
        .iter()
        .map(|b| store.put_bytes(b, None).unwrap())
        .collect();
    let last_pack = std::fs::read_dir(dir.path().join("packs"))
        .unwrap()
        .filter_map(|e| crate::pack::parse_pack_file_name(e.unwrap().file_name().to_str()?))
        .max()
        .unwrap();
    // The next pack the appender creates is really /dev/full: every write
    // to it fails with ENOSPC from the kernel.
    let next = dir.path().join(format!("packs/{:08}.pack", last_pack + 1));
    std::os::unix::fs::symlink("/dev/full", &next).unwrap();

    let big = noise(2_000_000, 999);
    let mut w = store.writer();
    let err = w
        .write_content(&big)
        .and_then(|()| w.finish(Some(&sha(&big))).map(|_| ()))
        .unwrap_err();
    assert!(err.is_storage_full(), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("packs/{:08}.pack", last_pack + 1)),
        "{err}"
    );
    assert!(!store.has_blob(&sha(&big)).unwrap());
    for (b, info) in old.iter().zip(&old_infos) {
        assert_eq!(&store.read_blob(&info.digest).unwrap(), b);
    }
    // A later writer hits the same full disk and fails cleanly too.
    let err2 = store.put_bytes(&noise(600_000, 5), None).unwrap_err();
    assert!(err2.is_storage_full(), "{err2}");
    assert!(store.check(false).unwrap().is_clean());
    drop(store);

    // "Space freed": recovery drops the never-committed pack (our symlink).
    let store = open_with(dir.path(), opts, Arc::new(StandardHasher), roll);
    assert!(
        std::fs::symlink_metadata(&next).is_err(),
        "unknown pack must be removed"
    );
    for (b, info) in old.iter().zip(&old_infos) {
        assert_eq!(&store.read_blob(&info.digest).unwrap(), b);
    }
    let info = store.put_bytes(&big, Some(&sha(&big))).unwrap();
    assert_eq!(store.read_blob(&info.digest).unwrap(), big);
    assert!(store.check(false).unwrap().is_clean());
}

#[test]
fn writer_fails_once_then_reports_first_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with(
        dir.path(),
        StoreOptions::default(),
        Arc::new(StandardHasher),
        64 * 1024,
    );
    store.put_bytes(&noise(100_000, 1), None).unwrap();
    let next = dir.path().join("packs/00000003.pack");
    std::os::unix::fs::symlink("/dev/full", &next).unwrap();
    let mut w = store.writer();
    let mut first = None;
    for i in 0..20 {
        if let Err(e) = w.write_content(&noise(100_000, 50 + i)) {
            first = Some(e);
            break;
        }
    }
    let first = first.expect("a write into /dev/full must fail");
    assert!(first.is_storage_full(), "{first}");
    match w.write_content(b"more") {
        Err(StoreError::WriterFailed { first_error }) => {
            assert!(first_error.contains("00000003.pack"), "{first_error}")
        }
        other => panic!("expected WriterFailed, got {other:?}"),
    }
}
