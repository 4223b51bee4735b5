//! Lock helpers and the [`MaintenanceGate`] that keeps gc/repair from running
//! while blob writers hold chunk references not yet in any committed recipe.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

/// Locks a mutex, ignoring poisoning: every structure behind our mutexes
/// stays valid when a holder panics (state only advances after success).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug, Default)]
struct GateState {
    writers: usize,
    maintenance: bool,
}

/// Writers share the gate; maintenance (gc, check) takes it alone.
///
/// A writer dedups against committed chunks and only references them from a
/// recipe at `finish`, so a gc in between would see them as garbage.
#[derive(Debug, Default)]
pub(crate) struct MaintenanceGate {
    state: Mutex<GateState>,
    changed: Condvar,
}

impl MaintenanceGate {
    /// Registers a writer, waiting for running maintenance to end.
    pub(crate) fn enter_writer(self: &Arc<Self>) -> WriterPass {
        let mut st = lock(&self.state);
        while st.maintenance {
            st = self
                .changed
                .wait(st)
                .unwrap_or_else(PoisonError::into_inner);
        }
        st.writers += 1;
        WriterPass {
            gate: Arc::clone(self),
        }
    }

    /// Takes the gate exclusively, waiting for open writers to finish or drop.
    pub(crate) fn enter_maintenance(self: &Arc<Self>) -> MaintenancePass {
        let mut st = lock(&self.state);
        while st.maintenance {
            st = self
                .changed
                .wait(st)
                .unwrap_or_else(PoisonError::into_inner);
        }
        // Claim first so no new writer slips in while we wait for the old ones.
        st.maintenance = true;
        while st.writers > 0 {
            st = self
                .changed
                .wait(st)
                .unwrap_or_else(PoisonError::into_inner);
        }
        MaintenancePass {
            gate: Arc::clone(self),
        }
    }
}

impl MaintenanceGate {
    /// Whether a maintenance (gc, check) is waiting for or holding the gate:
    /// long-running writer-side work checks it to step aside early.
    pub(crate) fn maintenance_wanted(&self) -> bool {
        lock(&self.state).maintenance
    }

    /// Turns `pass` into exclusive maintenance once it is the only writer,
    /// waiting for the others to finish. `None` when another maintenance has
    /// claimed the gate: it waits for `pass` to go, so the caller must drop it.
    pub(crate) fn upgrade(self: &Arc<Self>, pass: &WriterPass) -> Option<MaintenancePass> {
        debug_assert!(Arc::ptr_eq(self, &pass.gate));
        let mut st = lock(&self.state);
        loop {
            if st.maintenance {
                return None;
            }
            if st.writers <= 1 {
                st.maintenance = true;
                return Some(MaintenancePass {
                    gate: Arc::clone(self),
                });
            }
            st = self
                .changed
                .wait(st)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// Held by a live [`crate::BlobWriter`].
#[derive(Debug)]
pub(crate) struct WriterPass {
    gate: Arc<MaintenanceGate>,
}

impl Drop for WriterPass {
    fn drop(&mut self) {
        let mut st = lock(&self.gate.state);
        st.writers = st.writers.saturating_sub(1);
        drop(st);
        self.gate.changed.notify_all();
    }
}

/// Held while gc or check runs.
#[derive(Debug)]
pub(crate) struct MaintenancePass {
    gate: Arc<MaintenanceGate>,
}

impl Drop for MaintenancePass {
    fn drop(&mut self) {
        let mut st = lock(&self.gate.state);
        st.maintenance = false;
        drop(st);
        self.gate.changed.notify_all();
    }
}
