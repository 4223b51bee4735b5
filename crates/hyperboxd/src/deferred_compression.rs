//! Compresses in the background what pulls and loads stored raw. With `[cache] compression`
//! on, the store's writers defer zstd (hb-store's `defer_compression`): a pull is acknowledged
//! once its content is verified and durable, and this thread compresses it afterwards. zstd was
//! about 40% of a cold pull's CPU on this 2-core machine (BENCHMARKS.md).
//!
//! One dedicated thread at nice 19, so it only takes CPU nobody else wants and never competes
//! with a user's pull or start. It wakes every [`POLL_INTERVAL`], and compresses once the
//! store's written-chunk counter has stopped moving for one interval (a pull has finished or
//! paused); at start it compresses whatever an earlier run left raw.

use std::time::Duration;

use hb_store::Store;

/// How often the thread looks for new writes.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Starts the compressing thread (it lives as long as the process).
pub fn spawn(store: Store) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("hb-deferred-zstd".into())
        .spawn(move || run(&store))
}

fn run(store: &Store) {
    lower_priority();
    // `None` until the first pass: leftovers of an earlier run are compressed at start.
    let mut compressed_at: Option<u64> = None;
    let mut last_seen = store.counters().chunks_written;
    loop {
        let written = store.counters().chunks_written;
        let quiet = written == last_seen;
        last_seen = written;
        if quiet && compressed_at != Some(written) {
            match store.compress_deferred() {
                // gc claimed the store: try again once it is done.
                Ok(report) if report.yielded_to_gc => {}
                Ok(report) => {
                    if report.chunks_compressed > 0 {
                        tracing::debug!(?report, "compressed deferred chunks");
                    }
                    compressed_at = Some(written);
                }
                Err(e) => {
                    // Retried after the next write rather than in a loop (a full disk stays
                    // full); the chunks stay readable raw meanwhile.
                    tracing::warn!(error = %e, "background compression failed");
                    compressed_at = Some(written);
                }
            }
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Makes this thread the machine's lowest-priority work (Linux nice applies per thread).
fn lower_priority() {
    // SAFETY: plain syscalls on the calling thread's own id.
    let r = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19)
    };
    if r != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "could not lower the background compression's priority");
    }
}
