//! Helpers shared by the integration tests.
#![allow(dead_code)]

use hb_store::{Store, StoreOptions};
use sha2::Digest;

/// Deterministic incompressible bytes.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
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

/// Deterministic compressible bytes (words from a small vocabulary).
pub fn text(len: usize, seed: u64) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "layer",
        "image",
        "config",
        "the",
        "usr",
        "lib",
        "bin",
        "a",
        "of",
        "json",
        "{",
        "}",
        "\"name\":",
        "=",
        "\n",
        "  ",
        "0",
        "42",
        "container",
        "digest",
    ];
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(WORDS[(x % WORDS.len() as u64) as usize].as_bytes());
        out.push(b' ');
    }
    out.truncate(len);
    out
}

/// `sha256:<hex>` of `data`.
pub fn sha(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// Small, quick options: 2 workers, small batches so commits happen mid-blob.
pub fn quick() -> StoreOptions {
    StoreOptions {
        parallel_ops: 2,
        batch_size: 4,
        ..StoreOptions::default()
    }
}

pub fn open(dir: &std::path::Path, opts: StoreOptions) -> Store {
    Store::open(dir, opts).unwrap()
}
