//! Throughput benchmarks of hb-store's data path, per core unless noted:
//! chunk-id hashes, FastCDC cutting, zstd levels, and the whole
//! `writer → finish` path with 1 and 2 worker threads.
//!
//! Input is a 16 MiB deterministic mix standing in for a container layer,
//! in 256 KiB blocks cycling through:
//! - 50 % pseudo-text: words from a source/config-like vocabulary with
//!   punctuation and newlines (compresses ~3-4×, like /etc, scripts, headers);
//! - 30 % pseudo-binary: little-endian integers with small deltas and
//!   repeated opcode-like byte patterns plus sparse noise (like ELF text/data);
//! - 20 % random bytes (already-compressed files: .gz, .png, .jar).

use std::hint::black_box;
use std::io::Write as _;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use hb_store::{Store, StoreOptions, AVG_CHUNK, MAX_CHUNK, MIN_CHUNK};
use sha2::Digest as _;

const INPUT: usize = 16 * 1024 * 1024;
const BLOCK: usize = 256 * 1024;

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn pseudo_text(rng: &mut XorShift, out: &mut Vec<u8>, len: usize) {
    const WORDS: &[&str] = &[
        "fn",
        "let",
        "return",
        "if",
        "else",
        "for",
        "in",
        "self",
        "config",
        "path",
        "/usr/lib",
        "/etc",
        "value",
        "name",
        "true",
        "false",
        "null",
        "error",
        "import",
        "export",
        "const",
        "static",
        "string",
        "int",
        "=",
        "==",
        "(",
        ")",
        "{",
        "}",
        ";",
        ",",
        ":",
        "\"",
        "0",
        "1",
        "42",
        "version",
        "layer",
        "libc.so.6",
        "#include",
        "<stdio.h>",
        "def",
        "class",
    ];
    let end = out.len() + len;
    let mut col = 0;
    while out.len() < end {
        let r = rng.next();
        let w = WORDS[(r % WORDS.len() as u64) as usize];
        out.extend_from_slice(w.as_bytes());
        col += w.len() + 1;
        if col > 60 + (r >> 60) as usize {
            out.push(b'\n');
            for _ in 0..(r >> 58) % 3 * 4 {
                out.push(b' ');
            }
            col = 0;
        } else {
            out.push(b' ');
        }
    }
    out.truncate(end);
}

fn pseudo_binary(rng: &mut XorShift, out: &mut Vec<u8>, len: usize) {
    const OPS: &[&[u8]] = &[
        &[0x48, 0x89, 0xe5],
        &[0x48, 0x83, 0xec, 0x10],
        &[0xe8, 0, 0, 0, 0],
        &[0xc3],
        &[0x55],
        &[0x0f, 0x1f, 0x44, 0, 0],
        &[0x8b, 0x45, 0xfc],
    ];
    let end = out.len() + len;
    let mut acc: u32 = 0x1000;
    while out.len() < end {
        let r = rng.next();
        match r % 4 {
            0 => {
                acc = acc.wrapping_add((r >> 8) as u32 % 64);
                out.extend_from_slice(&acc.to_le_bytes());
            }
            1 | 2 => out.extend_from_slice(OPS[((r >> 8) % OPS.len() as u64) as usize]),
            _ => out.push((r >> 16) as u8),
        }
    }
    out.truncate(end);
}

fn layer_mix(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = XorShift(seed | 1);
    let mut out = Vec::with_capacity(len);
    let mut i = 0;
    while out.len() < len {
        let n = BLOCK.min(len - out.len());
        match i % 10 {
            0..=4 => pseudo_text(&mut rng, &mut out, n),
            5..=7 => pseudo_binary(&mut rng, &mut out, n),
            _ => out.extend((0..n).map(|_| (rng.next() >> 24) as u8)),
        }
        i += 1;
    }
    out
}

fn chunk_id_hashes(c: &mut Criterion) {
    let data = layer_mix(INPUT, 1);
    let mut g = c.benchmark_group("chunk_id_hash");
    g.throughput(Throughput::Bytes(INPUT as u64));
    // Hash per average-size chunk, as the store does.
    g.bench_function("sha256", |b| {
        b.iter(|| {
            for c in data.chunks(AVG_CHUNK) {
                black_box(sha2::Sha256::digest(c));
            }
        })
    });
    g.bench_function("blake3", |b| {
        b.iter(|| {
            for c in data.chunks(AVG_CHUNK) {
                black_box(blake3::hash(c));
            }
        })
    });
    g.bench_function("xxh3_128", |b| {
        b.iter(|| {
            for c in data.chunks(AVG_CHUNK) {
                black_box(xxhash_rust::xxh3::xxh3_128(c));
            }
        })
    });
    g.finish();
}

fn fastcdc_cutting(c: &mut Criterion) {
    let data = layer_mix(INPUT, 2);
    let mut g = c.benchmark_group("fastcdc");
    g.throughput(Throughput::Bytes(INPUT as u64));
    g.bench_function("cut_16k_64k_256k", |b| {
        b.iter(|| {
            fastcdc::v2020::FastCDC::new(&data, MIN_CHUNK, AVG_CHUNK, MAX_CHUNK)
                .map(|c| c.length)
                .sum::<usize>()
        })
    });
    g.finish();
}

fn zstd_levels(c: &mut Criterion) {
    let data = layer_mix(INPUT, 3);
    let mut g = c.benchmark_group("zstd_compress");
    g.throughput(Throughput::Bytes(INPUT as u64));
    for level in [1, 6, 9] {
        let mut comp = zstd::bulk::Compressor::new(level).unwrap();
        let stored: usize = data
            .chunks(AVG_CHUNK)
            .map(|c| comp.compress(c).unwrap().len().min(c.len()))
            .sum();
        eprintln!(
            "zstd level {level}: layer mix compresses to {:.1}% (per 64 KiB chunk, raw fallback)",
            stored as f64 * 100.0 / INPUT as f64
        );
        g.bench_function(format!("level_{level}"), |b| {
            b.iter(|| {
                for c in data.chunks(AVG_CHUNK) {
                    black_box(comp.compress(c).unwrap());
                }
            })
        });
    }
    g.finish();
}

/// Makes every chunk of `base` new to the store for iteration `n`, so each
/// iteration measures storing, not deduplicating.
fn fresh_copy(base: &[u8], n: u64) -> Vec<u8> {
    let mut v = base.to_vec();
    for block in v.chunks_mut(4096) {
        let k = block.len().min(8);
        block[..k].copy_from_slice(&n.to_le_bytes()[..k]);
    }
    v
}

fn write_path(c: &mut Criterion) {
    let base = layer_mix(INPUT, 4);
    let small = layer_mix(4 * 1024 * 1024, 5);
    let mut g = c.benchmark_group("writer_finish");
    let cases = [
        ("batched_p1", 1, true, &base),
        ("batched_p2", 2, true, &base),
        ("unbatched_p2", 2, false, &small),
    ];
    for (name, parallel_ops, batch_writes, input) in cases {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            dir.path(),
            StoreOptions {
                parallel_ops,
                batch_writes,
                ..StoreOptions::default()
            },
        )
        .unwrap();
        let mut n = 0u64;
        g.throughput(Throughput::Bytes(input.len() as u64));
        g.bench_function(name, |b| {
            b.iter_batched(
                || {
                    n += 1;
                    fresh_copy(input, n)
                },
                |data| {
                    let mut w = store.writer();
                    for piece in data.chunks(1024 * 1024) {
                        w.write_all(piece).unwrap();
                    }
                    black_box(w.finish(None).unwrap())
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = chunk_id_hashes, fastcdc_cutting, zstd_levels, write_path
}
criterion_main!(benches);
