//! Integration tests of the public API.

mod common;

use std::io::{Read, Write};
use std::sync::{Arc, Barrier};

use common::{noise, open, quick, sha, text};
use hb_store::{CheckProblem, HashAlgorithm, Store, StoreError, StoreOptions};

#[test]
fn store_is_shareable() {
    fn assert_traits<T: Send + Sync + Clone + 'static>() {}
    assert_traits::<Store>();
    fn assert_send<T: Send>() {}
    assert_send::<hb_store::BlobWriter>();
    assert_send::<hb_store::BlobReader>();
}

#[test]
fn round_trip_every_hash_and_compression() {
    let blobs: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"x".to_vec(),
        noise(1000, 1),
        noise(16 * 1024 - 1, 2),
        noise(300_000, 3),
        noise(2_500_000, 4),
        text(1_000_000, 5),
        vec![0u8; 700_000],
    ];
    for hash in [
        HashAlgorithm::Sha256,
        HashAlgorithm::Blake3,
        HashAlgorithm::Xxhash,
    ] {
        for compression in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let opts = StoreOptions {
                hash,
                compression,
                compression_level: 3,
                use_mmap: compression,
                ..quick()
            };
            let store = open(dir.path(), opts.clone());
            let mut digests = Vec::new();
            for (i, data) in blobs.iter().enumerate() {
                let mut w = store.writer();
                // Odd piece sizes so chunk boundaries never line up with writes.
                for piece in data.chunks(7919 + i * 1000) {
                    w.write_all(piece).unwrap();
                }
                assert_eq!(w.bytes_written(), data.len() as u64);
                let info = w.finish(Some(&sha(data))).unwrap();
                assert_eq!(info.digest, sha(data));
                assert_eq!(info.size, data.len() as u64);
                digests.push(info.digest);
            }
            let stats = store.stats().unwrap();
            if compression {
                // Mostly noise; the text and zero blobs must still compress.
                assert!(stats.compression_ratio > 1.2, "{hash:?}: {stats:?}");
            } else {
                assert_eq!(stats.compression_ratio, 1.0, "{hash:?}: {stats:?}");
            }
            drop(store);
            // Everything must survive a reopen, read with the other read path.
            let store = open(
                dir.path(),
                StoreOptions {
                    use_mmap: !compression,
                    ..opts
                },
            );
            for (data, digest) in blobs.iter().zip(&digests) {
                assert!(store.has_blob(digest).unwrap());
                assert_eq!(
                    &store.read_blob(digest).unwrap(),
                    data,
                    "{hash:?} {compression}"
                );
                let mut r = store.open_blob(digest).unwrap();
                assert_eq!(r.size(), data.len() as u64);
                let mut got = Vec::new();
                let mut buf = [0u8; 1000];
                loop {
                    let n = r.read(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                assert_eq!(&got, data);
                let info = store.blob_info(digest).unwrap().unwrap();
                assert_eq!(info.size, data.len() as u64);
            }
            assert_eq!(store.list_blobs().unwrap().len(), blobs.len());
            let report = store.check(false).unwrap();
            assert!(report.is_clean(), "{:?}", report.problems);
            assert_eq!(report.blobs_checked, blobs.len() as u64);
        }
    }
}

/// Writes a tar-like stream: each file is an inline header then its content.
fn write_files(store: &Store, files: &[(&str, &[u8])]) -> (hb_store::BlobInfo, Vec<u8>) {
    let mut w = store.writer();
    let mut stream = Vec::new();
    for (name, content) in files {
        let header = format!("HEADER {name} {}\0", content.len()).into_bytes();
        w.write_inline(&header).unwrap();
        stream.extend_from_slice(&header);
        for piece in content.chunks(50_000) {
            w.write_content(piece).unwrap();
        }
        w.end_content().unwrap();
        stream.extend_from_slice(content);
    }
    let info = w.finish(Some(&sha(&stream))).unwrap();
    (info, stream)
}

#[test]
fn shared_file_segment_is_stored_once() {
    let x = noise(1_500_000, 10);
    let y = noise(700_000, 11);
    let z = noise(900_000, 12);
    let mut pack_bytes = Vec::new();
    for dedup in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), StoreOptions { dedup, ..quick() });
        let (a, sa) = write_files(&store, &[("x", &x), ("y", &y)]);
        // X sits at a different offset in b, behind another file.
        let (b, sb) = write_files(&store, &[("z", &z), ("x", &x)]);
        assert_eq!(store.read_blob(&a.digest).unwrap(), sa);
        assert_eq!(store.read_blob(&b.digest).unwrap(), sb);
        let stats = store.stats().unwrap();
        let files = (x.len() + y.len() + z.len()) as u64;
        assert_eq!(stats.unique_raw_bytes, files, "dedup={dedup}");
        if dedup {
            assert!(b.new_chunks < b.chunks, "{b:?}");
            assert!(stats.dedup_ratio > 1.3, "{stats:?}");
        } else {
            assert_eq!(b.new_chunks, b.chunks, "dedup off writes every chunk");
        }
        pack_bytes.push(stats.pack_bytes);
    }
    assert!(
        pack_bytes[1] > pack_bytes[0] + x.len() as u64 - 100_000,
        "dedup off must store X twice: {pack_bytes:?}"
    );
}

#[test]
fn identical_small_files_dedup_as_whole_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), quick());
    let content = text(3000, 77);
    let names: Vec<String> = (0..50).map(|i| format!("file{i}")).collect();
    let files: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &content[..])).collect();
    let (info, stream) = write_files(&store, &files);
    assert_eq!(info.chunks, 50);
    assert_eq!(info.new_chunks, 1);
    let stats = store.stats().unwrap();
    assert_eq!(stats.chunks, 1);
    assert_eq!(stats.unique_raw_bytes, 3000);
    assert_eq!(store.read_blob(&info.digest).unwrap(), stream);
}

#[test]
fn mismatched_digest_commits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), quick());
    let data = noise(2_000_000, 20);
    let wrong = sha(b"something else");
    let mut w = store.writer();
    w.write_content(&data).unwrap();
    match w.finish(Some(&wrong)) {
        Err(StoreError::DigestMismatch { expected, actual }) => {
            assert_eq!(expected, wrong);
            assert_eq!(actual, sha(&data));
        }
        other => panic!("expected DigestMismatch, got {other:?}"),
    }
    assert!(!store.has_blob(&sha(&data)).unwrap());
    assert!(!store.has_blob(&wrong).unwrap());
    assert!(store.list_blobs().unwrap().is_empty());
    assert!(matches!(
        store.put_bytes(b"{}", Some(&wrong)),
        Err(StoreError::DigestMismatch { .. })
    ));
    // Batches committed while streaming leave only unreferenced chunks.
    store.gc().unwrap();
    let stats = store.stats().unwrap();
    assert_eq!((stats.blobs, stats.chunks), (0, 0), "{stats:?}");
    assert!(store.check(false).unwrap().is_clean());
}

#[test]
fn bad_input_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    for (opts, field) in [
        (
            StoreOptions {
                compression_level: 0,
                ..quick()
            },
            "compression_level",
        ),
        (
            StoreOptions {
                compression_level: 10,
                ..quick()
            },
            "compression_level",
        ),
        (
            StoreOptions {
                batch_size: 0,
                ..quick()
            },
            "batch_size",
        ),
        (
            StoreOptions {
                batch_size: 1001,
                ..quick()
            },
            "batch_size",
        ),
        (
            StoreOptions {
                parallel_ops: 0,
                ..quick()
            },
            "parallel_ops",
        ),
        (
            StoreOptions {
                parallel_ops: 65,
                ..quick()
            },
            "parallel_ops",
        ),
    ] {
        match Store::open(dir.path(), opts) {
            Err(StoreError::InvalidOptions { field: f, .. }) => assert_eq!(f, field),
            other => panic!("expected InvalidOptions({field}), got {other:?}"),
        }
    }
    let store = open(dir.path(), quick());
    for bad in [
        "",
        "sha256:",
        "sha256:ABC",
        "md5:00",
        &format!("sha256:{}", "G".repeat(64)),
    ] {
        assert!(
            matches!(store.has_blob(bad), Err(StoreError::InvalidDigest { .. })),
            "{bad}"
        );
        let w = store.writer();
        assert!(matches!(
            w.finish(Some(bad)),
            Err(StoreError::InvalidDigest { .. })
        ));
    }
    let missing = sha(b"nope");
    assert!(matches!(
        store.open_blob(&missing),
        Err(StoreError::BlobNotFound { .. })
    ));
    assert_eq!(store.blob_info(&missing).unwrap(), None);
    assert!(!store.delete_blob(&missing).unwrap());
}

#[test]
fn existing_blob_is_not_stored_twice() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), quick());
    let data = noise(400_000, 30);
    let first = store.put_bytes(&data, None).unwrap();
    assert!(first.new_chunks > 0);
    let again = store.put_bytes(&data, Some(&first.digest)).unwrap();
    assert_eq!((again.new_chunks, again.size), (0, first.size));
    let mut w = store.writer();
    w.write_content(&data).unwrap();
    let third = w.finish(None).unwrap();
    assert_eq!(third.digest, first.digest);
    assert_eq!(store.list_blobs().unwrap().len(), 1);
    assert!(store.delete_blob(&first.digest).unwrap());
    assert!(!store.has_blob(&first.digest).unwrap());
}

#[test]
fn recovery_truncates_garbage_and_removes_unknown_packs() {
    let dir = tempfile::tempdir().unwrap();
    let blobs: Vec<Vec<u8>> = (0..4).map(|i| noise(500_000, 40 + i)).collect();
    let store = open(dir.path(), quick());
    let digests: Vec<String> = blobs
        .iter()
        .map(|b| store.put_bytes(b, None).unwrap().digest)
        .collect();
    drop(store);
    let pack = dir.path().join("packs/00000001.pack");
    let committed_len = std::fs::metadata(&pack).unwrap().len();
    // Bytes that were appended but never acknowledged...
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&pack)
        .unwrap();
    f.write_all(&noise(123_457, 1)).unwrap();
    drop(f);
    // ...and a pack no committed transaction ever named.
    let stray = dir.path().join("packs/00000042.pack");
    std::fs::write(&stray, noise(10_000, 2)).unwrap();

    let store = open(dir.path(), quick());
    assert_eq!(std::fs::metadata(&pack).unwrap().len(), committed_len);
    assert!(!stray.exists());
    for (b, d) in blobs.iter().zip(&digests) {
        assert_eq!(&store.read_blob(d).unwrap(), b);
    }
    assert!(store.check(false).unwrap().is_clean());
    // New writes land after the committed end and everything still reads.
    let more = noise(300_000, 99);
    let info = store.put_bytes(&more, None).unwrap();
    assert_eq!(store.read_blob(&info.digest).unwrap(), more);
    for (b, d) in blobs.iter().zip(&digests) {
        assert_eq!(&store.read_blob(d).unwrap(), b);
    }
}

#[test]
fn dropped_writer_leaves_store_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        batch_size: 2,
        ..quick()
    };
    let store = open(dir.path(), opts.clone());
    let kept = noise(600_000, 50);
    let kept_info = store.put_bytes(&kept, None).unwrap();
    let chunks_before = store.stats().unwrap().chunks;
    {
        let mut w = store.writer();
        w.write_inline(b"header").unwrap();
        w.write_content(&noise(3_000_000, 51)).unwrap();
        // Dropped mid-blob: several batches are already committed.
    }
    let stats = store.stats().unwrap();
    assert!(
        stats.chunks > chunks_before,
        "batches were committed mid-stream"
    );
    assert_eq!(stats.blobs, 1);
    assert!(store.check(false).unwrap().is_clean());
    assert_eq!(store.read_blob(&kept_info.digest).unwrap(), kept);
    let gc = store.gc().unwrap();
    assert_eq!(gc.chunks_removed, stats.chunks - chunks_before);
    assert_eq!(store.stats().unwrap().chunks, chunks_before);
    drop(store);
    let store = open(dir.path(), opts);
    assert_eq!(store.read_blob(&kept_info.digest).unwrap(), kept);
    assert!(store.check(false).unwrap().is_clean());
}

#[test]
fn gc_removes_only_unreferenced_chunks_and_compacts() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), quick());
    let x = noise(1_000_000, 60);
    let y = noise(4_000_000, 61);
    let z = noise(1_000_000, 62);
    let (a, _) = write_files(&store, &[("x", &x), ("y", &y)]);
    let (b, sb) = write_files(&store, &[("x", &x), ("z", &z)]);
    let c = store.put_bytes(b"{\"config\":true}", None).unwrap();
    let before = store.stats().unwrap();

    // Nothing is garbage yet.
    let gc0 = store.gc().unwrap();
    assert_eq!((gc0.chunks_removed, gc0.bytes_reclaimed), (0, 0), "{gc0:?}");

    assert!(store.delete_blob(&a.digest).unwrap());
    let gc = store.gc().unwrap();
    let after = store.stats().unwrap();
    assert_eq!(after.unique_raw_bytes, (x.len() + z.len() + 15) as u64);
    assert_eq!(gc.chunks_removed, before.chunks - after.chunks);
    // Y was 2/3 of the only pack: it is compacted and the space comes back.
    assert_eq!(gc.packs_compacted, 1, "{gc:?}");
    assert!(gc.bytes_reclaimed >= y.len() as u64, "{gc:?}");
    assert!(after.pack_bytes < before.pack_bytes - y.len() as u64 + 1);
    assert_eq!(store.read_blob(&b.digest).unwrap(), sb);
    assert_eq!(store.read_blob(&c.digest).unwrap(), b"{\"config\":true}");
    assert!(!store.has_blob(&a.digest).unwrap());
    assert!(store.check(false).unwrap().is_clean());
    // New writes after compaction, and a reopen, still work.
    let (d, sd) = write_files(&store, &[("y", &y)]);
    drop(store);
    let store = open(dir.path(), quick());
    assert_eq!(store.read_blob(&b.digest).unwrap(), sb);
    assert_eq!(store.read_blob(&d.digest).unwrap(), sd);
    assert!(store.check(false).unwrap().is_clean());
}

#[test]
fn check_detects_flipped_byte_and_repair_removes_broken_blob() {
    for use_mmap in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions {
            use_mmap,
            ..quick()
        };
        let store = open(dir.path(), opts.clone());
        let a = noise(200_000, 70);
        let b = text(300_000, 71);
        let ia = store.put_bytes(&a, None).unwrap();
        let ib = store.put_bytes(&b, None).unwrap();
        assert!(store.check(false).unwrap().is_clean());
        drop(store);
        // a's first chunk is the first record: flip a payload byte.
        let pack = dir.path().join("packs/00000001.pack");
        let mut bytes = std::fs::read(&pack).unwrap();
        bytes[8 + 16 + 33 + 1000] ^= 0x40;
        std::fs::write(&pack, &bytes).unwrap();

        let store = open(dir.path(), opts.clone());
        // Reads never hand out the damaged bytes.
        match store.read_blob(&ia.digest) {
            Err(StoreError::CorruptChunk { .. }) => {}
            other => panic!("expected CorruptChunk, got {other:?}"),
        }
        let report = store.check(false).unwrap();
        assert!(!report.is_clean());
        assert!(!report.repaired);
        assert!(
            report
                .problems
                .iter()
                .any(|p| matches!(p, CheckProblem::ChunkCorrupt { .. })),
            "{report:?}"
        );
        assert!(report
            .problems
            .iter()
            .any(|p| matches!(p, CheckProblem::BlobBroken { digest, .. } if *digest == ia.digest)));
        assert!(report.lost_blobs.is_empty());
        // Check alone changes nothing.
        assert!(store.has_blob(&ia.digest).unwrap());

        let repaired = store.check(true).unwrap();
        assert!(repaired.repaired);
        assert_eq!(repaired.lost_blobs, vec![ia.digest.clone()]);
        assert_eq!(repaired.removed_chunks, 1);
        assert!(!store.has_blob(&ia.digest).unwrap());
        assert_eq!(store.read_blob(&ib.digest).unwrap(), b);
        let again = store.check(false).unwrap();
        assert!(again.is_clean(), "{:?}", again.problems);
        // The blob can be stored again, and gc/reopen keep things consistent.
        store.put_bytes(&a, Some(&ia.digest)).unwrap();
        store.gc().unwrap();
        drop(store);
        let store = open(dir.path(), opts);
        assert_eq!(store.read_blob(&ia.digest).unwrap(), a);
        assert_eq!(store.read_blob(&ib.digest).unwrap(), b);
        assert!(store.check(false).unwrap().is_clean());
    }
}

#[test]
fn check_repairs_a_damaged_record_header() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), quick());
    let a = noise(100_000, 80);
    let b = noise(100_000, 81);
    let ia = store.put_bytes(&a, None).unwrap();
    let ib = store.put_bytes(&b, None).unwrap();
    drop(store);
    let pack = dir.path().join("packs/00000001.pack");
    let mut bytes = std::fs::read(&pack).unwrap();
    bytes[8] ^= 0xff; // magic of a's first record
    std::fs::write(&pack, &bytes).unwrap();
    let store = open(dir.path(), quick());
    let report = store.check(true).unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| matches!(p, CheckProblem::PackChainBroken { offset: 8, .. })),
        "{report:?}"
    );
    assert_eq!(report.lost_blobs, vec![ia.digest.clone()]);
    assert_eq!(store.read_blob(&ib.digest).unwrap(), b);
    let again = store.check(false).unwrap();
    assert!(again.is_clean(), "{:?}", again.problems);
}

#[test]
fn usage_splits_shared_and_unique() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), quick());
    let base = noise(1_000_000, 90);
    let app1 = noise(300_000, 91);
    let app2 = noise(500_000, 92);
    let (l1, _) = write_files(&store, &[("base", &base), ("app", &app1)]);
    let (l2, _) = write_files(&store, &[("base", &base), ("app", &app2)]);
    let c1 = store.put_bytes(b"{\"image\":1}", None).unwrap();
    let c2 = store.put_bytes(b"{\"image\":2}", None).unwrap();
    let missing = sha(b"missing");
    let groups = vec![
        (
            "one".to_string(),
            vec![l1.digest.clone(), c1.digest.clone()],
        ),
        (
            "two".to_string(),
            vec![l2.digest.clone(), c2.digest.clone(), missing.clone()],
        ),
    ];
    let usage = store.usage(&groups).unwrap();
    assert_eq!(usage.len(), 2);
    let (one, two) = (&usage[0], &usage[1]);
    assert_eq!(one.logical_bytes, l1.size + c1.size);
    assert_eq!(two.missing_blobs, vec![missing]);
    assert_eq!(two.blobs, 2);
    // Incompressible content is stored raw: shared is exactly the base file.
    assert_eq!(one.shared_bytes, base.len() as u64);
    assert_eq!(two.shared_bytes, base.len() as u64);
    assert!(one.unique_bytes >= app1.len() as u64 && one.unique_bytes < app1.len() as u64 + 2000);
    assert!(two.unique_bytes >= app2.len() as u64 && two.unique_bytes < app2.len() as u64 + 2000);
    assert_eq!(one.stored_bytes, one.shared_bytes + one.unique_bytes);
    // Alone, nothing is shared.
    let alone = store.usage(&groups[..1]).unwrap();
    assert_eq!(alone[0].shared_bytes, 0);
    assert_eq!(alone[0].unique_bytes, one.stored_bytes);
}

#[test]
fn concurrent_writers_of_the_same_content() {
    for hash in [HashAlgorithm::Blake3, HashAlgorithm::Xxhash] {
        let dir = tempfile::tempdir().unwrap();
        let store = open(
            dir.path(),
            StoreOptions {
                hash,
                batch_size: 1,
                ..quick()
            },
        );
        let shared = noise(2_000_000, 100);
        let threads = 4;
        let barrier = Arc::new(Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let store = store.clone();
                let shared = shared.clone();
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    barrier.wait();
                    // Everyone writes the same blob, and a blob of its own
                    // that also contains the shared file.
                    let same = store.put_bytes(&shared, Some(&sha(&shared))).unwrap();
                    let own = noise(200_000, 200 + t as u64);
                    let (mine, stream) = write_files(&store, &[("own", &own), ("shared", &shared)]);
                    (same, mine, stream)
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        for (same, mine, stream) in &results {
            assert_eq!(same.digest, sha(&shared));
            assert_eq!(store.read_blob(&same.digest).unwrap(), shared);
            assert_eq!(&store.read_blob(&mine.digest).unwrap(), stream);
        }
        let stats = store.stats().unwrap();
        assert_eq!(
            stats.unique_raw_bytes,
            shared.len() as u64 + 4 * 200_000,
            "{hash:?}"
        );
        assert_eq!(stats.blobs, 5);
        assert!(store.check(false).unwrap().is_clean());
        // Duplicate copies written in the race are reclaimed by gc.
        store.gc().unwrap();
        for (same, mine, stream) in &results {
            assert_eq!(store.read_blob(&same.digest).unwrap(), shared);
            assert_eq!(&store.read_blob(&mine.digest).unwrap(), stream);
        }
        assert!(store.check(false).unwrap().is_clean());
    }
}

#[test]
fn unbatched_writes_commit_every_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(
        dir.path(),
        StoreOptions {
            batch_writes: false,
            ..quick()
        },
    );
    let data = text(1_500_000, 110);
    let info = store.put_bytes(&data, Some(&sha(&data))).unwrap();
    assert!(info.chunks > 5);
    assert_eq!(store.read_blob(&info.digest).unwrap(), data);
    assert!(store.check(false).unwrap().is_clean());
}

#[test]
fn other_crates_can_share_the_database() {
    use redb::{ReadableDatabase, TableDefinition};
    const MINE: TableDefinition<&str, u64> = TableDefinition::new("hb_image.refs");
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), quick());
    let txn = store.database().begin_write().unwrap();
    txn.open_table(MINE).unwrap().insert("busybox", 1).unwrap();
    txn.commit().unwrap();
    let info = store.put_bytes(b"hello", None).unwrap();
    let txn = store.database().begin_read().unwrap();
    assert_eq!(
        txn.open_table(MINE)
            .unwrap()
            .get("busybox")
            .unwrap()
            .unwrap()
            .value(),
        1
    );
    assert!(store.has_blob(&info.digest).unwrap());
}

#[test]
fn reads_work_across_released_maps_and_new_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(
        dir.path(),
        StoreOptions {
            use_mmap: true,
            ..quick()
        },
    );
    let a = noise(300_000, 90);
    let ia = store.put_bytes(&a, None).unwrap();
    // A record read before the release stays valid after it (its map lives while borrowed).
    let held = store.read_blob(&ia.digest).unwrap();
    store.release_read_maps();
    assert_eq!(held, a);
    assert_eq!(store.read_blob(&ia.digest).unwrap(), a);
    // A pack that grew after a release is mapped again to its new length.
    store.release_read_maps();
    let b = text(200_000, 91);
    let ib = store.put_bytes(&b, None).unwrap();
    assert_eq!(store.read_blob(&ib.digest).unwrap(), b);
    store.release_read_maps();
    assert_eq!(store.read_blob(&ia.digest).unwrap(), a);
}

fn deferring() -> StoreOptions {
    StoreOptions {
        defer_compression: true,
        ..quick()
    }
}

#[test]
fn deferred_chunks_are_compressed_later_and_read_back_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), deferring());
    let words = text(3_000_000, 70);
    let random = noise(500_000, 71);
    let (a, sa) = write_files(&store, &[("words", &words), ("random", &random)]);
    let before = store.stats().unwrap();
    // Stored raw at first: nothing was compressed on the write path.
    assert_eq!(before.deferred_bytes, (words.len() + random.len()) as u64);
    assert!(before.compression_ratio < 1.01, "{before:?}");
    assert_eq!(store.read_blob(&a.digest).unwrap(), sa);

    let report = store.compress_deferred().unwrap();
    assert!(!report.yielded_to_gc);
    assert_eq!(report.raw_bytes, before.deferred_bytes, "{report:?}");
    assert!(report.packs_retired >= 1, "{report:?}");
    let after = store.stats().unwrap();
    assert_eq!(after.deferred_bytes, 0);
    assert!(after.compression_ratio > 2.0, "{after:?}");
    assert!(
        after.pack_bytes < before.pack_bytes / 2,
        "{before:?} {after:?}"
    );
    assert_eq!(store.read_blob(&a.digest).unwrap(), sa);
    assert!(store.check(false).unwrap().is_clean());
    // Nothing left to do; and a reopen (crash recovery) keeps it all.
    assert_eq!(store.compress_deferred().unwrap().chunks_compressed, 0);
    drop(store);
    let store = open(dir.path(), deferring());
    assert_eq!(store.read_blob(&a.digest).unwrap(), sa);
    assert!(store.check(false).unwrap().is_clean());
}

#[test]
fn deferred_compression_waits_for_open_writers_before_switching() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), deferring());
    let (a, sa) = write_files(&store, &[("one", &text(2_000_000, 80))]);
    // An open writer may hold uncommitted records in the pack being retired.
    let mut open_writer = store.writer();
    let late = text(1_500_000, 81);
    open_writer.write_content(&late).unwrap();
    let background = {
        let store = store.clone();
        std::thread::spawn(move || store.compress_deferred())
    };
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        !background.is_finished(),
        "switched over while a writer was open"
    );
    let b = open_writer.finish(Some(&sha(&late))).unwrap();
    let report = background.join().unwrap().unwrap();
    assert!(report.chunks_compressed > 0, "{report:?}");
    assert_eq!(store.read_blob(&a.digest).unwrap(), sa);
    assert_eq!(store.read_blob(&b.digest).unwrap(), late);
    assert!(store.check(false).unwrap().is_clean());
    // The late writer's chunks were committed after the scan: a second round
    // gets them.
    store.compress_deferred().unwrap();
    assert_eq!(store.stats().unwrap().deferred_bytes, 0);
    assert_eq!(store.read_blob(&b.digest).unwrap(), late);
    assert!(store.check(false).unwrap().is_clean());
}

#[test]
fn deferred_chunks_are_rewritten_raw_once_compression_is_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), deferring());
    let words = text(1_000_000, 90);
    let (a, sa) = write_files(&store, &[("words", &words)]);
    drop(store);
    // The config changed before the background pass reached them.
    let store = open(
        dir.path(),
        StoreOptions {
            compression: false,
            ..deferring()
        },
    );
    assert_eq!(store.stats().unwrap().deferred_bytes, words.len() as u64);
    let report = store.compress_deferred().unwrap();
    assert!(report.chunks_compressed > 0, "{report:?}");
    let stats = store.stats().unwrap();
    assert_eq!(stats.deferred_bytes, 0);
    assert!(stats.compression_ratio < 1.01, "{stats:?}");
    assert_eq!(store.read_blob(&a.digest).unwrap(), sa);
    assert!(store.check(false).unwrap().is_clean());
}
