//! Container records: what the daemon remembers of each container, persisted in the store's redb
//! database (table `containers`, id → JSON), so containers are listed and inspected across daemon
//! restarts. `config` and `host_config` keep Docker's JSON shapes (as sent to
//! `POST /containers/create`, completed from the image), which is what inspect returns.

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// id → JSON [`ContainerRecord`].
const CONTAINERS: TableDefinition<&str, &[u8]> = TableDefinition::new("containers");

/// Lifecycle status, as Docker names it.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Created, never started.
    Created,
    /// Its main process runs.
    Running,
    /// Its main process ended.
    Exited,
    /// Being removed.
    Removing,
    /// Could not be cleaned up.
    Dead,
}

impl Status {
    /// Docker's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Exited => "exited",
            Status::Removing => "removing",
            Status::Dead => "dead",
        }
    }
}

/// Runtime state of a container.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct State {
    /// Where it is in its life.
    pub status: Status,
    /// Host pid while running.
    pub pid: i32,
    /// Exit code of the last run.
    pub exit_code: i32,
    /// RFC 3339 time of the last start ("0001-01-01T00:00:00Z" if never).
    pub started_at: String,
    /// RFC 3339 time of the last exit.
    pub finished_at: String,
    /// The OOM killer ended the last run.
    pub oom_killed: bool,
    /// Why the last start failed.
    pub error: String,
    /// Bridge address while running.
    pub ip: Option<String>,
    /// Published ports with the host ports chosen.
    pub ports: Vec<String>,
}

/// Docker's zero time.
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// Everything the daemon remembers of one container.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ContainerRecord {
    /// 64 hex digits.
    pub id: String,
    /// Name without the leading slash.
    pub name: String,
    /// RFC 3339 creation time.
    pub created: String,
    /// Unix seconds of creation (for listings).
    pub created_unix: u64,
    /// The image as the user named it.
    pub image: String,
    /// The image id (config digest).
    pub image_id: String,
    /// Layer diff_ids, bottom first.
    pub layers: Vec<String>,
    /// The process: entrypoint + cmd, resolved.
    pub path: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Docker's `Config` (image defaults merged in).
    pub config: Value,
    /// Docker's `HostConfig` as sent.
    pub host_config: Value,
    /// Runtime state.
    pub state: State,
}

impl ContainerRecord {
    /// `Tty` from the config.
    pub fn tty(&self) -> bool {
        self.config["Tty"].as_bool().unwrap_or(false)
    }
    /// `HostConfig.AutoRemove` (`--rm`).
    pub fn auto_remove(&self) -> bool {
        self.host_config["AutoRemove"].as_bool().unwrap_or(false)
    }
}

/// The `containers` table.
#[derive(Clone)]
pub struct ContainerTable {
    store: hb_store::Store,
}

fn db_err(e: impl std::fmt::Display) -> String {
    format!("container table: {e}")
}

impl ContainerTable {
    /// Opens (creating) the table in the store's database.
    pub fn open(store: hb_store::Store) -> Result<ContainerTable, String> {
        let txn = store.database().begin_write().map_err(db_err)?;
        txn.open_table(CONTAINERS).map_err(db_err)?;
        txn.commit().map_err(db_err)?;
        Ok(ContainerTable { store })
    }

    /// Writes a record. `durable: false` skips the fsync: for runtime state the monitor can
    /// tell again after a crash (running, exited), which is most writes on the start path.
    pub fn put(&self, record: &ContainerRecord, durable: bool) -> Result<(), String> {
        let bytes = serde_json::to_vec(record).map_err(db_err)?;
        let mut txn = self.store.database().begin_write().map_err(db_err)?;
        if !durable {
            txn.set_durability(redb::Durability::None).map_err(db_err)?;
        }
        {
            let mut t = txn.open_table(CONTAINERS).map_err(db_err)?;
            t.insert(record.id.as_str(), bytes.as_slice())
                .map_err(db_err)?;
        }
        txn.commit().map_err(db_err)
    }

    /// Deletes a record (no error if absent); `durable: false` skips the fsync.
    pub fn delete(&self, id: &str, durable: bool) -> Result<(), String> {
        let mut txn = self.store.database().begin_write().map_err(db_err)?;
        if !durable {
            txn.set_durability(redb::Durability::None).map_err(db_err)?;
        }
        {
            let mut t = txn.open_table(CONTAINERS).map_err(db_err)?;
            t.remove(id).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)
    }

    /// Every record.
    pub fn list(&self) -> Result<Vec<ContainerRecord>, String> {
        let txn = self.store.database().begin_read().map_err(db_err)?;
        let t = txn.open_table(CONTAINERS).map_err(db_err)?;
        let mut out = Vec::new();
        for row in t.iter().map_err(db_err)? {
            let (_, v) = row.map_err(db_err)?;
            match serde_json::from_slice::<ContainerRecord>(v.value()) {
                Ok(r) => out.push(r),
                Err(e) => tracing::warn!("skipping an unreadable container record: {e}"),
            }
        }
        Ok(out)
    }
}
