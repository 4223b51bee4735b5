//! [`PackSyncer`]: fdatasyncs pack files on a thread of its own, so a writer
//! goes on chunking while its previous batch reaches the disk (the syncs were
//! about a fifth of a cold pull's writer-thread time, BENCHMARKS.md). The
//! writer still indexes a batch only after its sync has succeeded.

use std::fs::File;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::counters::StoreCounters;
use crate::error::StoreError;
use crate::pack::pack_label;

/// Packs to sync and where to say how it went.
struct SyncJob {
    files: Vec<(u32, File)>,
    done: SyncSender<Result<(), StoreError>>,
}

/// The store's one sync thread. Dropping it finishes queued jobs and joins.
pub(crate) struct PackSyncer {
    jobs: Option<Sender<SyncJob>>,
    thread: Option<JoinHandle<()>>,
}

/// The outcome of a [`PackSyncer::submit`], to wait for.
pub(crate) struct PendingSync(Receiver<Result<(), StoreError>>);

impl PendingSync {
    /// Blocks until every pack of the job is synced (or one failed).
    pub(crate) fn wait(self) -> Result<(), StoreError> {
        self.0.recv().unwrap_or_else(|_| {
            Err(StoreError::WorkersUnavailable {
                detail: "the pack sync thread stopped".into(),
            })
        })
    }
}

impl PackSyncer {
    /// Starts the thread; sync times go to `counters.pack_syncs`.
    pub(crate) fn start(counters: Arc<StoreCounters>) -> Result<Self, StoreError> {
        let (tx, rx) = mpsc::channel::<SyncJob>();
        let thread = std::thread::Builder::new()
            .name("hb-store-sync".into())
            .spawn(move || {
                for job in rx {
                    let mut result = Ok(());
                    for (pack, file) in &job.files {
                        if let Err(e) = counters.pack_syncs.time(|| file.sync_data()) {
                            result =
                                Err(StoreError::io(format!("syncing {}", pack_label(*pack)), e));
                            break;
                        }
                    }
                    // The writer may have given up meanwhile; then nobody waits.
                    let _ = job.done.send(result);
                }
            })
            .map_err(|e| StoreError::io("starting the pack sync thread", e))?;
        Ok(PackSyncer {
            jobs: Some(tx),
            thread: Some(thread),
        })
    }

    /// Queues a sync of `files` (pack number, a descriptor of it).
    pub(crate) fn submit(&self, files: Vec<(u32, File)>) -> Result<PendingSync, StoreError> {
        let (done, rx) = mpsc::sync_channel(1);
        self.jobs
            .as_ref()
            .and_then(|jobs| jobs.send(SyncJob { files, done }).ok())
            .ok_or_else(|| StoreError::WorkersUnavailable {
                detail: "the pack sync thread stopped".into(),
            })?;
        Ok(PendingSync(rx))
    }
}

impl Drop for PackSyncer {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
