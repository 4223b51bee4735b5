//! Per-container serialization of the operations that must not interleave: start and remove.
//! Without it a `start` racing `rm -f` could re-register a container whose files are being
//! deleted (an orphan process), and two starts could both talk to the monitor. Stop and kill
//! stay outside it, so `rm -f` or `kill` never queue behind a `stop -t 60`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

/// One async mutex per container id, created on first use and dropped with the container.
#[derive(Default)]
pub struct ContainerOpLocks {
    locks: Mutex<HashMap<String, Arc<AsyncMutex<()>>>>,
}

impl ContainerOpLocks {
    /// Waits until no other start or remove of `id` runs, and holds that until the guard drops.
    pub async fn acquire(&self, id: &str) -> OwnedMutexGuard<()> {
        let lock = self
            .locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.to_string())
            .or_default()
            .clone();
        lock.lock_owned().await
    }

    /// Forgets a removed container's lock (holders keep their guard; later callers find no
    /// record and fail as for any unknown container).
    pub fn forget(&self, id: &str) {
        self.locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn one_holder_per_container_others_independent() {
        let locks = Arc::new(ContainerOpLocks::default());
        let a = locks.acquire("a").await;
        // Another container is not held up.
        let b = tokio::time::timeout(Duration::from_millis(100), locks.acquire("b")).await;
        assert!(b.is_ok());
        // The same container waits until the holder lets go.
        let l2 = locks.clone();
        let waiter = tokio::spawn(async move { l2.acquire("a").await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        drop(a);
        let got = tokio::time::timeout(Duration::from_secs(1), waiter).await;
        assert!(matches!(got, Ok(Ok(_))));
    }
}
