//! Times `LayerStore::ensure` on a synthetic layer shaped like hb/deb (~116 MiB, ~5,000 files)
//! put into a fresh store in a temp dir: a cold unpack, then a second layer with the same files
//! (every file found in the object store: links only). Run with
//! `cargo run --release -p hb-rootfs --example unpack_timing`.

use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = hb_store::Store::open(&dir.path().join("store"), Default::default())?;
    let layers = hb_rootfs::LayerStore::open(&dir.path().join("layers"), store.clone())?;
    let make = |salt: &str| -> Result<Vec<u8>, Box<dyn std::error::Error>> {
        let mut b = tar::Builder::new(Vec::new());
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut total = 0usize;
        for i in 0..5000 {
            // Sizes skewed like a distro: many small files, a few large ones.
            let size = if i % 500 == 0 {
                4 << 20
            } else {
                14_000 + (i * 37) % 9000
            };
            let data: Vec<u8> = (0..size)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    (seed % 64) as u8 // compressible-ish text-like bytes
                })
                .collect();
            total += size;
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            h.set_size(size as u64);
            h.set_mtime(1_700_000_000);
            b.append_data(
                &mut h,
                format!("usr/{}/d{}/f{i}", salt, i % 97),
                data.as_slice(),
            )?;
        }
        eprintln!("layer: {} files, {} MiB", 5000, total >> 20);
        Ok(b.into_inner()?)
    };
    let tar = make("share")?;
    let id = store.put_bytes(&tar, None)?.digest;
    let t = Instant::now();
    let mut r = std::io::BufReader::with_capacity(1 << 20, store.open_blob(&id)?);
    let n = std::io::copy(&mut r, &mut std::io::sink())?;
    println!(
        "reading the blob from the store alone: {:?} ({} MiB)",
        t.elapsed(),
        n >> 20
    );
    let t = Instant::now();
    std::fs::File::open(dir.path())?.sync_all()?;
    // SAFETY: sync has no preconditions; flushes earlier writes so they do not count below.
    unsafe { libc::sync() };
    println!("sync before: {:?}", t.elapsed());
    let t = Instant::now();
    layers.ensure(&id)?;
    println!(
        "cold unpack (write + sha256 + objects + syncfs): {:?}",
        t.elapsed()
    );
    // Same files under the same paths in another layer (one extra file so the digest differs).
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(1);
    b.append_data(&mut h, "marker", &b"m"[..])?;
    let mut again = b.into_inner()?;
    again.truncate(again.len() - 1024); // drop the end-of-archive blocks
    again.extend_from_slice(&tar);
    let id2 = store.put_bytes(&again, None)?.digest;
    let t = Instant::now();
    layers.ensure(&id2)?;
    println!("second layer, all files already objects: {:?}", t.elapsed());
    let u = layers.usage()?;
    println!(
        "usage: total {} MiB, shared {} MiB, layers {:?}",
        u.total_bytes >> 20,
        u.shared_bytes >> 20,
        u.layers.iter().map(|l| l.1 >> 20).collect::<Vec<_>>()
    );
    Ok(())
}
