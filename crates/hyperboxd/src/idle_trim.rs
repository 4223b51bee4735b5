//! Gives memory back while the daemon is idle. A pull or an unpack leaves two kinds of RSS
//! behind that nothing else returns: heap the allocator keeps after the pipeline's buffers are
//! freed (glibc returns it only on `malloc_trim`), and pages of pack files touched through the
//! store's memory maps (they count in RSS for as long as the maps live). Every
//! [`TRIM_INTERVAL`] with no user request in flight, both are let go; the next read maps again.

use std::sync::Arc;
use std::time::Duration;

use hb_store::Store;

use crate::prewarm::UserActivity;

/// How often an idle daemon gives memory back.
pub const TRIM_INTERVAL: Duration = Duration::from_secs(15);

/// Runs the trimming loop until the runtime stops.
pub fn spawn(store: Store, activity: Arc<UserActivity>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(TRIM_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // the first tick is immediate: nothing to give back yet
        loop {
            tick.tick().await;
            if activity.in_flight() > 0 {
                continue;
            }
            let store = store.clone();
            let _ = tokio::task::spawn_blocking(move || trim(&store)).await;
        }
    })
}

/// Releases the store's read maps and the allocator's free heap.
pub fn trim(store: &Store) {
    store.release_read_maps();
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free memory of glibc's arenas to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}
