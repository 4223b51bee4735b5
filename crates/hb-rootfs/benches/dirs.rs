//! What a spare set of container dirs saves a create: `DirRecycler::create` taking a set that
//! `DirRecycler::stock` made beforehand (untimed, as the predictor does it off the start path)
//! against making the dirs itself (a recycler that keeps none). The dirs live under
//! `$HB_BENCH_DIR` (default `/var/tmp`), on the filesystem the daemon's data dir is on here;
//! each created set is removed, untimed, before the next.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use hb_rootfs::DirRecycler;

fn bench_root() -> tempfile::TempDir {
    let base =
        std::env::var_os("HB_BENCH_DIR").map_or_else(|| PathBuf::from("/var/tmp"), PathBuf::from);
    tempfile::tempdir_in(&base).expect("a temp dir under HB_BENCH_DIR")
}

fn creates(c: &mut Criterion) {
    let mut group = c.benchmark_group("container dirs: create");
    for (label, capacity) in [("made by the create", 0), ("taken from stock", 8)] {
        let root = bench_root();
        let recycler = DirRecycler::new(root.path(), capacity).expect("a recycler");
        let mut n = 0u64;
        group.bench_function(label, |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    recycler.stock(1).expect("stocking");
                    n += 1;
                    let id = format!("c{n}");
                    let began = Instant::now();
                    let dirs = black_box(recycler.create(&id).expect("creating"));
                    timed += began.elapsed();
                    dirs.remove().expect("removing");
                }
                timed
            })
        });
    }
    group.finish();
}

criterion_group!(benches, creates);
criterion_main!(benches);
