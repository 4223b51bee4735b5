//! Containers as the daemon sees them: records (persisted), their lifecycle (create, start, stop,
//! kill, remove, wait, exec) carried out through the monitor process, and reconciliation with
//! the monitor after a daemon restart. The HTTP side is `crate::container_api`.

pub mod config;
pub mod monitor_client;
pub mod names;
pub mod op_lock;
pub mod record;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use hb_image::ImageCatalog;
use hb_monitor::protocol::{Event, LogConfig, ProcessState, Request, Response};
use hb_rootfs::{ContainerDirs, DirRecycler, LayerStore};
use serde_json::{json, Value};
use tokio::sync::broadcast;

use self::config::{container_spec, host_settings, merge_config, ContainerPaths};
use self::monitor_client::MonitorClient;
use self::record::{ContainerRecord, ContainerTable, State, Status, ZERO_TIME};

/// A failed container operation: what HTTP status it maps to, Docker's message, and the exit
/// code `docker run` would end with.
#[derive(Debug, Clone)]
pub struct ContainerError {
    /// 400, 404, 409 or 500.
    pub status: u16,
    /// For the user.
    pub message: String,
    /// 125 (engine), 126 (cannot execute), 127 (not found).
    pub exit_code: i32,
}

impl ContainerError {
    fn new(status: u16, message: impl Into<String>) -> Self {
        ContainerError {
            status,
            message: message.into(),
            exit_code: 125,
        }
    }
    fn internal(message: impl Into<String>) -> Self {
        Self::new(500, message)
    }
    /// `No such container: X` (404).
    pub fn no_such(id: &str) -> Self {
        Self::new(404, format!("No such container: {id}"))
    }
}

impl std::error::Error for ContainerError {}

impl std::fmt::Display for ContainerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

type Result<T> = std::result::Result<T, ContainerError>;

/// Every container's json-file log rotates at this many MiB...
pub const LOG_MAX_MIB: u64 = 10;
/// ...keeping this many files (inspect reports them as Docker's `max-size` / `max-file`).
pub const LOG_MAX_FILES: u32 = 3;
/// How many removed containers' dirs wait for reuse (a dozen inodes each, see [`DirRecycler`]).
const RECYCLED_DIRS_MAX: usize = 64;

/// What `POST /containers/{id}/exec` created.
#[derive(Clone, Debug)]
pub struct ExecRecord {
    /// Exec id.
    pub id: String,
    /// Its container.
    pub container: String,
    /// Command line.
    pub args: Vec<String>,
    /// Extra environment.
    pub env: Vec<String>,
    /// User override.
    pub user: String,
    /// Working dir override.
    pub cwd: String,
    /// TTY.
    pub tty: bool,
    /// Stdin attached.
    pub open_stdin: bool,
    /// Running now.
    pub running: bool,
    /// Exit code once done.
    pub exit_code: Option<i32>,
    /// Host pid.
    pub pid: i32,
}

/// Daemon-wide container state.
pub struct Containers {
    table: ContainerTable,
    records: Mutex<HashMap<String, ContainerRecord>>,
    execs: Mutex<HashMap<String, ExecRecord>>,
    monitor: MonitorClient,
    monitor_args: Vec<String>,
    monitor_log: PathBuf,
    layers: LayerStore,
    root: PathBuf,
    /// Makes and removes containers' dirs, reusing those a removed container left untouched.
    dirs: Arc<DirRecycler>,
    catalog: ImageCatalog,
    parallel: usize,
    changed: broadcast::Sender<String>,
    resolv_conf: String,
    cgroup_parent: String,
    /// Exit codes (and errors) of recently removed containers, so a `wait` that arrives after
    /// an auto-remove (`run --rm`) still learns how the container ended. Bounded.
    removed: Mutex<std::collections::VecDeque<(String, i32, String)>>,
    events: Arc<crate::events::EventLog>,
    metrics: Arc<crate::metrics::Metrics>,
    /// Containers created but not started yet: when their create began, and whether their
    /// layers were all unpacked already (a hot-tier hit), for the start metrics.
    pending_starts: Mutex<HashMap<String, (std::time::Instant, bool)>>,
    /// Users' creates and starts in flight: prewarm work yields to them.
    activity: Arc<crate::prewarm::UserActivity>,
    /// Learns every successful start (set once the predictor is open).
    prewarmer: OnceLock<Arc<crate::prewarm::Prewarmer>>,
    /// Start and remove of one container run one at a time.
    op_locks: op_lock::ContainerOpLocks,
    /// `--rm` containers inside a `restart`: their stop is not the end, so no auto-remove.
    restarting: Mutex<std::collections::HashSet<String>>,
}

fn io_err(what: &str, e: impl std::fmt::Display) -> ContainerError {
    ContainerError::internal(format!("{what}: {e}"))
}

/// 64 random hex digits.
pub fn random_id() -> String {
    let mut bytes = [0u8; 32];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .is_err()
    {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        bytes[..16].copy_from_slice(&t.to_le_bytes());
        bytes[16..20].copy_from_slice(&std::process::id().to_le_bytes());
    }
    hex_encode(&bytes)
}

fn hex_encode(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// RFC 3339 (nanoseconds) of a unix-ns time; Docker's zero time for 0.
pub fn time_ns(ns: u64) -> String {
    if ns == 0 {
        return ZERO_TIME.to_string();
    }
    hb_monitor::logfile::rfc3339_nanos(std::time::UNIX_EPOCH + Duration::from_nanos(ns))
}

/// How containers are set up, from the daemon's config.
pub struct ContainersConfig {
    /// `<data_dir>/containers`.
    pub root: PathBuf,
    /// `<data_dir>/layers`.
    pub layers_root: PathBuf,
    /// The monitor's socket.
    pub monitor_socket: PathBuf,
    /// Arguments after `hyperboxd --monitor`.
    pub monitor_args: Vec<String>,
    /// The monitor's log file.
    pub monitor_log: PathBuf,
    /// Layers unpacked at once.
    pub parallel: usize,
    /// resolv.conf for containers.
    pub resolv_conf: String,
    /// `[daemon] cgroup_parent`.
    pub cgroup_parent: String,
    /// Where lifecycle events go (`/events`).
    pub events: Arc<crate::events::EventLog>,
    /// Start counts and latencies, hot-tier hits.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Users' requests in flight, which prewarming yields to.
    pub activity: Arc<crate::prewarm::UserActivity>,
}

impl Containers {
    /// Opens the records, starts (or finds) the monitor and reconciles the two.
    pub async fn open(
        catalog: ImageCatalog,
        cfg: ContainersConfig,
    ) -> anyhow::Result<Arc<Containers>> {
        use anyhow::Context;
        std::fs::create_dir_all(&cfg.root)
            .with_context(|| format!("creating {}", cfg.root.display()))?;
        let table = ContainerTable::open(catalog.store().clone()).map_err(anyhow::Error::msg)?;
        let layers = LayerStore::open(&cfg.layers_root, catalog.store().clone())
            .with_context(|| format!("opening unpacked layers in {}", cfg.layers_root.display()))?;
        let records: HashMap<String, ContainerRecord> = table
            .list()
            .map_err(anyhow::Error::msg)?
            .into_iter()
            .map(|r| (r.id.clone(), r))
            .collect();
        // Pins live in memory: every container there is holds its layers again.
        for r in records.values() {
            layers
                .pin(&r.id, &r.layers)
                .map_err(|e| anyhow::anyhow!("pinning the layers of {}: {e}", r.id))?;
        }
        let dirs = DirRecycler::new(&cfg.root, RECYCLED_DIRS_MAX)
            .with_context(|| format!("preparing {}", cfg.root.display()))?;
        let (changed, _) = broadcast::channel(1024);
        let c = Arc::new(Containers {
            dirs: Arc::new(dirs),
            table,
            records: Mutex::new(records),
            execs: Mutex::new(HashMap::new()),
            restarting: Mutex::new(std::collections::HashSet::new()),
            monitor: MonitorClient::new(cfg.monitor_socket),
            monitor_args: cfg.monitor_args,
            monitor_log: cfg.monitor_log,
            layers,
            root: cfg.root,
            catalog,
            parallel: cfg.parallel.max(1),
            changed,
            resolv_conf: cfg.resolv_conf,
            cgroup_parent: cfg.cgroup_parent,
            removed: Mutex::new(std::collections::VecDeque::new()),
            events: cfg.events,
            metrics: cfg.metrics,
            pending_starts: Mutex::new(HashMap::new()),
            activity: cfg.activity,
            prewarmer: OnceLock::new(),
            op_locks: op_lock::ContainerOpLocks::default(),
        });
        // Without a monitor (not root, no cgroups) images still work; container requests say why.
        if let Err(e) = c.connect_monitor().await {
            tracing::error!("container monitor unavailable: {e:#}");
        }
        let watcher = c.clone();
        tokio::spawn(async move { watcher.watch_monitor().await });
        Ok(c)
    }

    /// The unpacked-layer store (hot tier).
    pub fn layers(&self) -> &LayerStore {
        &self.layers
    }

    /// The dir recycler creates take their dirs from (the predictor stocks it).
    pub fn dir_recycler(&self) -> &Arc<DirRecycler> {
        &self.dirs
    }

    /// Connects the predictor: from now on every successful start is reported to it.
    pub fn set_prewarmer(&self, prewarmer: Arc<crate::prewarm::Prewarmer>) {
        if self.prewarmer.set(prewarmer).is_err() {
            tracing::warn!("the predictor was already connected");
        }
    }

    /// The cgroup under which containers live.
    pub fn cgroup_parent(&self) -> &str {
        &self.cgroup_parent
    }

    /// The monitor client.
    pub fn monitor(&self) -> &MonitorClient {
        &self.monitor
    }

    async fn connect_monitor(&self) -> anyhow::Result<()> {
        self.monitor
            .ensure_running(&self.monitor_args, &self.monitor_log)
            .await?;
        self.reconcile().await
    }

    /// Brings records in line with what the monitor knows (after either of them restarted).
    async fn reconcile(&self) -> anyhow::Result<()> {
        let known = match self.monitor.request(&Request::List).await? {
            Response::List(l) => l,
            other => anyhow::bail!("monitor answered List with {other:?}"),
        };
        let known: HashMap<String, ProcessState> =
            known.into_iter().map(|s| (s.id.clone(), s)).collect();
        let records: Vec<ContainerRecord> = self.snapshot();
        let mut to_remove = Vec::new();
        for mut r in records {
            match known.get(&r.id) {
                Some(s) => {
                    let before = r.state.clone();
                    apply_process_state(&mut r.state, s);
                    if r.state != before {
                        self.save(&r)?;
                    }
                    if r.state.status == Status::Exited && r.auto_remove() {
                        to_remove.push(r.id.clone());
                    }
                }
                None if r.state.status == Status::Running || r.state.status == Status::Removing => {
                    // The monitor that ran it is gone: so is the container's pid namespace
                    // unless it was orphaned; kill whatever is left in its cgroup.
                    if let Ok(cg) = hb_spawn::Cgroup::open(&self.cgroup_parent, &r.id) {
                        let _ = cg.kill_all(libc::SIGKILL);
                        let _ = cg.remove();
                    }
                    r.state.status = Status::Exited;
                    r.state.exit_code = 255;
                    r.state.pid = 0;
                    r.state.finished_at = time_ns(now_ns());
                    r.state.error = "the container monitor was restarted".into();
                    self.save(&r)?;
                    if r.auto_remove() {
                        to_remove.push(r.id.clone());
                    }
                }
                // A `--rm` container whose removal a crash lost (its records are not fsynced).
                None if r.auto_remove() && r.state.status == Status::Exited => {
                    to_remove.push(r.id.clone());
                }
                None => {}
            }
        }
        for id in to_remove {
            if let Err(e) = self.remove(&id, true).await {
                tracing::warn!(container = %id, "auto-removing: {e}");
            }
        }
        // Containers with no record (the in-memory map also holds creates in flight): left by
        // a crash between mkdir (or the monitor's registration) and the record write. The
        // monitor forgets them (killing what runs), then their files go.
        let live: std::collections::HashSet<String> = self.records_lock().keys().cloned().collect();
        let mut still_registered = std::collections::HashSet::new();
        for (id, s) in &known {
            if s.container.is_some() || live.contains(id) {
                continue;
            }
            if s.running {
                let _ = self
                    .monitor
                    .request(&Request::Signal {
                        id: id.clone(),
                        signal: libc::SIGKILL,
                    })
                    .await;
            }
            let mut forgotten = false;
            for _ in 0..50 {
                match self
                    .monitor
                    .request(&Request::Delete { id: id.clone() })
                    .await
                {
                    Ok(Response::Ok)
                    | Ok(Response::Error {
                        not_found: true, ..
                    }) => {
                        forgotten = true;
                        break;
                    }
                    // Still running (the kill is on its way) or a transient failure.
                    _ => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
            if forgotten {
                tracing::info!(container = %id, "removed a container whose create a crash cut short");
            } else {
                tracing::warn!(container = %id, "the monitor keeps a container without a record");
                still_registered.insert(id.clone());
            }
        }
        if let Ok(entries) = std::fs::read_dir(&self.root) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name != hb_rootfs::RECYCLED_DIR
                    && !live.contains(&name)
                    && !still_registered.contains(&name)
                {
                    let _ = ContainerDirs::open(&self.root, &name).remove();
                    let _ = self.layers.unpin(&name);
                }
            }
        }
        let _ = hb_spawn::remove_stale_cgroups(
            &self.cgroup_parent,
            &live.iter().cloned().collect::<Vec<_>>(),
        );
        Ok(())
    }

    /// Follows monitor events; restarts the monitor (and reconciles) if it goes away.
    async fn watch_monitor(self: Arc<Self>) {
        loop {
            match self.monitor.subscribe().await {
                Ok(mut rx) => {
                    // Exits that happened between the last List and the subscription.
                    if let Err(e) = self.reconcile().await {
                        tracing::warn!("reconciling with the monitor: {e}");
                    }
                    while let Some(ev) = rx.recv().await {
                        let Event::Exited(state) = ev;
                        self.on_exited(state).await;
                    }
                    tracing::warn!("lost the container monitor; restarting it");
                }
                Err(e) => tracing::warn!("subscribing to the monitor: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            if let Err(e) = self.connect_monitor().await {
                tracing::error!("restarting the container monitor: {e}");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }

    /// Records an exit. A `--rm` removal runs in its own task, so the next exit event (and the
    /// clients waiting on it) never queue behind another container's teardown.
    async fn on_exited(self: &Arc<Self>, state: ProcessState) {
        if state.container.is_some() {
            if let Some(e) = self.execs_lock().get_mut(&state.id) {
                e.running = false;
                e.exit_code = state.exit_code;
            }
            let _ = self.changed.send(state.id.clone());
            return;
        }
        let r = match self.update_state(&state.id, &state, false) {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(container = %state.id, "saving state: {e}");
                return;
            }
        };
        tracing::info!(container = %r.id, code = r.state.exit_code, oom = r.state.oom_killed, auto_remove = r.auto_remove(), "container exited");
        if r.state.oom_killed {
            self.publish(&r, "oom", &[]);
        }
        self.publish(&r, "die", &[("exitCode", r.state.exit_code.to_string())]);
        if r.auto_remove() && !self.is_restarting(&r.id) {
            let this = self.clone();
            tokio::spawn(async move {
                if let Err(e) = this.auto_remove_exited(&r.id).await {
                    tracing::warn!(container = %r.id, "auto-removing: {e}");
                }
            });
        }
    }

    fn records_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ContainerRecord>> {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn execs_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ExecRecord>> {
        self.execs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A container event, with Docker's actor attributes (name, image).
    fn publish(&self, r: &ContainerRecord, action: &str, extra: &[(&str, String)]) {
        let mut attrs = vec![("name", r.name.clone()), ("image", r.image.clone())];
        attrs.extend(extra.iter().map(|(k, v)| (*k, v.clone())));
        self.events.publish("container", action, &r.id, &attrs);
    }

    /// All records.
    pub fn snapshot(&self) -> Vec<ContainerRecord> {
        self.records_lock().values().cloned().collect()
    }

    fn get(&self, id: &str) -> Option<ContainerRecord> {
        self.records_lock().get(id).cloned()
    }

    /// Finds a container by full id, unique id prefix or name (with or without `/`).
    pub fn find(&self, key: &str) -> Result<ContainerRecord> {
        let key = key.strip_prefix('/').unwrap_or(key);
        let records = self.records_lock();
        if let Some(r) = records.get(key) {
            return Ok(r.clone());
        }
        if let Some(r) = records.values().find(|r| r.name == key) {
            return Ok(r.clone());
        }
        let matches: Vec<&ContainerRecord> = if key.is_empty() {
            Vec::new()
        } else {
            records.values().filter(|r| r.id.starts_with(key)).collect()
        };
        match matches.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(ContainerError::no_such(key)),
            _ => Err(ContainerError::new(
                400,
                format!("multiple IDs found with provided prefix: {key}"),
            )),
        }
    }

    /// Records runtime state (not fsynced: after a crash the monitor tells it again).
    fn save(&self, r: &ContainerRecord) -> Result<()> {
        self.store_record(r, false)
    }

    /// Applies a process state from the monitor (a start's answer or an exit event) to the
    /// record, unless the record is gone or already holds this run's exit (an exit event can
    /// overtake the start's own answer), and publishes the run's `start` event the first time
    /// either of them arrives.
    fn update_state(
        &self,
        id: &str,
        s: &ProcessState,
        clear_error: bool,
    ) -> Result<Option<ContainerRecord>> {
        let mut records = self.records_lock();
        let Some(cur) = records.get(id) else {
            return Ok(None);
        };
        if s.running
            && cur.state.status == Status::Exited
            && cur.state.started_at == time_ns(s.started_at_ns)
        {
            return Ok(Some(cur.clone()));
        }
        // The start event of this run, here under the records lock so that it always comes
        // before its die: the monitor's answer to the start and its exit event travel on
        // different connections, and a quick process's exit can be handled first.
        let this_run_started =
            cur.state.status == Status::Running && cur.state.started_at == time_ns(s.started_at_ns);
        let mut r = cur.clone();
        apply_process_state(&mut r.state, s);
        if clear_error {
            r.state.error.clear();
        }
        self.table
            .put(&r, false)
            .map_err(ContainerError::internal)?;
        if !this_run_started {
            self.publish(&r, "start", &[]);
        }
        records.insert(r.id.clone(), r.clone());
        drop(records);
        let _ = self.changed.send(r.id.clone());
        Ok(Some(r))
    }

    fn store_record(&self, r: &ContainerRecord, durable: bool) -> Result<()> {
        self.table
            .put(r, durable)
            .map_err(ContainerError::internal)?;
        self.records_lock().insert(r.id.clone(), r.clone());
        let _ = self.changed.send(r.id.clone());
        Ok(())
    }

    /// `POST /containers/create`.
    pub async fn create(&self, body: Value, name: Option<String>) -> Result<ContainerRecord> {
        let began = std::time::Instant::now();
        let _user = self.activity.begin();
        let image = body["Image"].as_str().unwrap_or("").to_string();
        if image.is_empty() {
            return Err(ContainerError::new(400, "config: an image is required"));
        }
        let catalog = self.catalog.clone();
        let lookup = image.clone();
        let found = tokio::task::spawn_blocking(move || {
            let rec = catalog.lookup(&lookup)?;
            match rec {
                Some(r) => {
                    let cfg = catalog.store().read_blob(&r.id)?;
                    Ok::<_, hb_image::ImageError>(Some((r, cfg)))
                }
                None => Ok(None),
            }
        })
        .await
        .map_err(|e| io_err("image lookup", e))?
        .map_err(|e| io_err("image lookup", e))?;
        let Some((image_record, image_config)) = found else {
            return Err(ContainerError::new(404, format!("No such image: {image}")));
        };
        let image_config: Value = serde_json::from_slice(&image_config)
            .map_err(|e| io_err("reading the image config", e))?;
        let config = merge_config(&body, &image_config, &image);
        config::command(&config).map_err(|e| ContainerError::new(400, e))?;
        let host = body["HostConfig"].clone();
        let host = if host.is_null() { json!({}) } else { host };
        host_settings(&host).map_err(|e| ContainerError::new(400, e))?;
        let id = random_id();
        let generated = name.as_deref().is_none_or(str::is_empty);
        let name = match name.filter(|n| !n.is_empty()) {
            Some(n) => {
                let n = n.strip_prefix('/').unwrap_or(&n).to_string();
                names::validate(&n).map_err(|e| ContainerError::new(400, e))?;
                n
            }
            None => {
                let taken: std::collections::HashSet<String> = self
                    .records_lock()
                    .values()
                    .map(|r| r.name.clone())
                    .collect();
                names::generate(&taken)
            }
        };
        let mut args = config::command(&config).map_err(|e| ContainerError::new(400, e))?;
        let path = args.remove(0);
        let now = now_ns();
        let mut record = ContainerRecord {
            id: id.clone(),
            name: name.clone(),
            created: time_ns(now),
            created_unix: now / 1_000_000_000,
            image,
            image_id: image_record.id.clone(),
            layers: image_record
                .layers
                .iter()
                .map(|l| l.diff_id.clone())
                .collect(),
            path,
            args,
            config,
            host_config: host,
            state: State {
                status: Status::Created,
                pid: 0,
                exit_code: 0,
                started_at: ZERO_TIME.into(),
                finished_at: ZERO_TIME.into(),
                oom_killed: false,
                error: String::new(),
                ip: None,
                ports: Vec::new(),
            },
        };
        {
            // Reserve the name in memory first, so two creates cannot both take it.
            let mut records = self.records_lock();
            if generated && records.values().any(|r| r.name == record.name) {
                // Another create took the generated name meanwhile: pick again, under the lock.
                let taken = records.values().map(|r| r.name.clone()).collect();
                record.name = names::generate(&taken);
            }
            let name = record.name.clone();
            if let Some(other) = records.values().find(|r| r.name == name) {
                return Err(ContainerError::new(
                    409,
                    format!(
                        "Conflict. The container name \"/{name}\" is already in use by container \"{}\". You have to remove (or rename) that container to be able to reuse that name.",
                        other.id
                    ),
                ));
            }
            records.insert(id.clone(), record.clone());
        }
        let hot = record.layers.iter().all(|d| self.layers.is_unpacked(d));
        match self.prepare(&record).await {
            Ok(()) => {}
            Err(e) => {
                self.records_lock().remove(&id);
                let _ = ContainerDirs::open(&self.root, &id).remove();
                let _ = self.layers.unpin(&id);
                return Err(e);
            }
        }
        // A `--rm` container is ephemeral: no fsync for its record (after a crash the monitor
        // knows it, or its leftovers are swept as stale).
        if let Err(e) = self.store_record(&record, !record.auto_remove()) {
            self.records_lock().remove(&id);
            return Err(e);
        }
        self.publish(&record, "create", &[]);
        {
            let mut pending = self
                .pending_starts
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            // Created-but-never-started containers must not pile up here.
            if pending.len() >= 4096 {
                pending.retain(|_, (t, _)| t.elapsed() < Duration::from_secs(600));
            }
            pending.insert(record.id.clone(), (began, hot));
        }
        Ok(record)
    }

    /// Unpacks the image's layers (the hot tier), makes the container's dirs and registers it
    /// with the monitor.
    async fn prepare(&self, r: &ContainerRecord) -> Result<()> {
        let layers = self.layers.clone();
        let recycler = self.dirs.clone();
        let id = r.id.clone();
        let diff_ids = r.layers.clone();
        let parallel = self.parallel;
        let hostname = r.config["Hostname"]
            .as_str()
            .filter(|h| !h.is_empty())
            .map_or_else(|| id[..12].to_string(), str::to_string);
        let resolv = self.resolv_conf.clone();
        let paths = tokio::task::spawn_blocking(move || -> Result<ContainerPaths> {
            layers
                .pin(&id, &diff_ids)
                .map_err(|e| io_err("pinning layers", e))?;
            let lowers = image_lowers(&layers, &diff_ids, parallel)?;
            let dirs = recycler
                .create(&id)
                .map_err(|e| io_err("container dirs", e))?;
            let paths = ContainerPaths::new(&dirs, lowers);
            dirs.write_mounted_files(&format!("{hostname}\n"), "127.0.0.1\tlocalhost\n", &resolv)
                .map_err(|e| io_err("the container's files", e))?;
            Ok(paths)
        })
        .await
        .map_err(|e| io_err("preparing the rootfs", e))??;
        self.register(r, &paths).await
    }

    async fn register(&self, r: &ContainerRecord, paths: &ContainerPaths) -> Result<()> {
        let host = host_settings(&r.host_config).map_err(|e| ContainerError::new(400, e))?;
        let spec = container_spec(&r.id, &r.config, &host, paths, &self.cgroup_parent)
            .map_err(|e| ContainerError::new(400, e))?;
        let request = Request::Create {
            spec: Box::new(spec),
            network: host.network.clone(),
            open_stdin: r.config["OpenStdin"].as_bool().unwrap_or(false),
            log: LogConfig {
                path: self.log_path(&r.id),
                max_size: LOG_MAX_MIB << 20,
                max_files: LOG_MAX_FILES,
            },
            hosts_file: Some(paths.hosts_file.clone()),
            console_size: console_size(&r.host_config["ConsoleSize"]),
        };
        match self.monitor.request(&request).await {
            Ok(Response::Ok) => Ok(()),
            Ok(other) => Err(monitor_refusal(other)),
            Err(e) => Err(io_err("the container monitor", e)),
        }
    }

    /// Paths of an existing container (for re-registering after a monitor restart).
    fn paths_of(&self, r: &ContainerRecord) -> Result<ContainerPaths> {
        let dirs = ContainerDirs::open(&self.root, &r.id);
        let lowers = image_lowers(&self.layers, &r.layers, self.parallel)?;
        Ok(ContainerPaths::new(&dirs, lowers))
    }

    /// The container's json-file log.
    pub fn log_path(&self, id: &str) -> PathBuf {
        ContainerDirs::open(&self.root, id).log
    }

    /// `POST /containers/{id}/start`: the started container, or `None` when it was already
    /// running (Docker answers 304 then).
    pub async fn start(&self, key: &str) -> Result<Option<ContainerRecord>> {
        let began = std::time::Instant::now();
        let _user = self.activity.begin();
        let id = self.find(key)?.id;
        let op = self.op_locks.acquire(&id).await;
        // Read again under the lock: a remove or another start may have finished meanwhile.
        let mut r = self.find(&id)?;
        if r.state.status == Status::Running {
            return Ok(None);
        }
        let mut answer = self
            .monitor
            .request(&Request::Start { id: r.id.clone() })
            .await
            .map_err(|e| io_err("the container monitor", e))?;
        if matches!(
            answer,
            Response::Error {
                not_found: true,
                ..
            }
        ) {
            // A new monitor does not know it yet.
            let paths = self.paths_of(&r)?;
            self.register(&r, &paths).await?;
            answer = self
                .monitor
                .request(&Request::Start { id: r.id.clone() })
                .await
                .map_err(|e| io_err("the container monitor", e))?;
        }
        match answer {
            Response::Started(s) => match self.update_state(&r.id, &s, true)? {
                Some(r) => {
                    // A first start counts from its create (create + start is `docker run`);
                    // a restart is hot by definition (its layers are unpacked).
                    let first = self
                        .pending_starts
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&r.id);
                    let (latency, hot) = match first {
                        Some((created, hot)) => (created.elapsed(), hot),
                        None => (began.elapsed(), true),
                    };
                    self.metrics.record_start(latency, hot);
                    if let Some(p) = self.prewarmer.get() {
                        p.record_start(crate::prewarm::StartNotice {
                            image: r.image.clone(),
                            image_id: r.image_id.clone(),
                            project: crate::prewarm::StartNotice::project_of(&r.config),
                            hot,
                        });
                    }
                    Ok(Some(r))
                }
                None => Err(ContainerError::no_such(&r.id)),
            },
            other => {
                // Docker leaves a failed container "created" with the error recorded.
                let e = monitor_refusal(other);
                r.state.error = e.message.clone();
                r.state.exit_code = e.exit_code;
                let _ = self.save(&r);
                drop(op);
                if r.auto_remove() {
                    // As Docker: a --rm container that failed to start is removed, so a
                    // client waiting for its removal is answered.
                    if let Err(re) = self.remove(&r.id, true).await {
                        tracing::warn!(container = %r.id, "auto-removing after a failed start: {re}");
                    }
                }
                Err(e)
            }
        }
    }

    /// Waits until the container is no longer running (or removed, with `removed`).
    /// Returns the record as it was when the condition held (None when removed).
    pub async fn wait(&self, key: &str, condition: &str) -> Result<Option<ContainerRecord>> {
        let id = self.find(key)?.id;
        let rx = self.changed.subscribe();
        let first_finish = self.get(&id).map(|r| r.state.finished_at);
        self.wait_changes(&id, condition, rx, first_finish).await
    }

    /// [`Containers::wait`] split in two: the watch starts now (so a start that follows this
    /// call is seen), and the returned future finishes when the condition holds. The API
    /// answers a wait's headers at once and its body later: the docker CLI waits for those
    /// headers before it starts the container.
    /// `id` is a full id the caller found: if the container is removed meanwhile (an
    /// auto-remove runs in its own task and can win), the future answers `None` at once rather
    /// than the watch failing.
    pub fn watch(
        self: &Arc<Self>,
        id: &str,
        condition: &str,
    ) -> impl std::future::Future<Output = Result<Option<ContainerRecord>>> + Send + 'static {
        let rx = self.changed.subscribe();
        let first_finish = self.get(id).map(|r| r.state.finished_at);
        let me = self.clone();
        let (id, condition) = (id.to_string(), condition.to_string());
        async move { me.wait_changes(&id, &condition, rx, first_finish).await }
    }

    async fn wait_changes(
        &self,
        id: &str,
        condition: &str,
        mut rx: broadcast::Receiver<String>,
        // next-exit: an exit after the request (a finish time other than this one).
        first_finish: Option<String>,
    ) -> Result<Option<ContainerRecord>> {
        loop {
            let current = self.get(id);
            let done = match (&current, condition) {
                (None, _) => true,
                (Some(_), "removed") => false,
                (Some(r), "next-exit") => {
                    r.state.status != Status::Running
                        && r.state.status != Status::Removing
                        && Some(&r.state.finished_at) != first_finish.as_ref()
                }
                (Some(r), _) => r.state.status != Status::Running,
            };
            if done {
                return Ok(current);
            }
            loop {
                match rx.recv().await {
                    Ok(changed) if changed == id => break,
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(_)) => break,
                    Err(broadcast::error::RecvError::Closed) => {
                        return Err(ContainerError::internal("daemon shutting down"))
                    }
                }
            }
        }
    }

    /// `POST /containers/{id}/kill`.
    pub async fn kill(&self, key: &str, signal: i32) -> Result<()> {
        let r = self.find(key)?;
        if r.state.status != Status::Running {
            return Err(ContainerError::new(
                409,
                format!(
                    "Cannot kill container: {key}: Container {} is not running",
                    r.id
                ),
            ));
        }
        match self
            .monitor
            .request(&Request::Signal {
                id: r.id.clone(),
                signal,
            })
            .await
            .map_err(|e| io_err("the container monitor", e))?
        {
            Response::Ok => {
                self.publish(&r, "kill", &[("signal", signal.to_string())]);
                Ok(())
            }
            other => Err(monitor_refusal(other)),
        }
    }

    /// `POST /containers/{id}/stop`: the stop signal, then SIGKILL after `timeout`.
    pub async fn stop(&self, key: &str, timeout: Option<i64>) -> Result<bool> {
        let r = self.find(key)?;
        if r.state.status != Status::Running {
            return Ok(false);
        }
        let signal = r.config["StopSignal"]
            .as_str()
            .and_then(signal_number)
            .unwrap_or(libc::SIGTERM);
        let timeout = timeout
            .or_else(|| r.config["StopTimeout"].as_i64())
            .unwrap_or(10);
        // As dockerd: a negative timeout waits for the process however long it takes.
        let timeout = u64::try_from(timeout)
            .map(Duration::from_secs)
            .unwrap_or(Duration::MAX);
        let _ = self
            .monitor
            .request(&Request::Signal {
                id: r.id.clone(),
                signal,
            })
            .await;
        let waited = tokio::time::timeout(timeout, self.wait(&r.id, "not-running")).await;
        if waited.is_err() {
            let _ = self
                .monitor
                .request(&Request::Signal {
                    id: r.id.clone(),
                    signal: libc::SIGKILL,
                })
                .await;
            let _ = self.wait(&r.id, "not-running").await;
        }
        Ok(true)
    }

    /// `POST /containers/{id}/restart`: stop, then start. As dockerd, a `--rm` container
    /// survives its restart: only an exit that is not part of one removes it.
    pub async fn restart(&self, key: &str, timeout: Option<i64>) -> Result<()> {
        let id = self.find(key)?.id;
        self.restarting_lock().insert(id.clone());
        let stopped = self.stop(&id, timeout).await;
        let started = match stopped {
            Ok(_) => self.start(&id).await,
            Err(e) => Err(e),
        };
        self.restarting_lock().remove(&id);
        if started.is_err() {
            // Left exited: a `--rm` container goes, as any other exit of it would.
            if let Ok(r) = self.find(&id) {
                if r.auto_remove() && r.state.status == Status::Exited {
                    if let Err(e) = self.auto_remove_exited(&id).await {
                        tracing::warn!(container = %id, "auto-removing: {e}");
                    }
                }
            }
        }
        started.map(|_| ())
    }

    fn restarting_lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.restarting.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_restarting(&self, id: &str) -> bool {
        self.restarting_lock().contains(id)
    }

    /// `DELETE /containers/{id}`.
    pub async fn remove(&self, key: &str, force: bool) -> Result<()> {
        let id = self.find(key)?.id;
        let _op = self.op_locks.acquire(&id).await;
        let r = self.find(&id)?;
        if r.state.status == Status::Running {
            if !force {
                return Err(ContainerError::new(
                    409,
                    format!("You cannot remove a running container {}. Stop the container before attempting removal or force remove", r.id),
                ));
            }
            let _ = self
                .monitor
                .request(&Request::Signal {
                    id: r.id.clone(),
                    signal: libc::SIGKILL,
                })
                .await;
            let _ = tokio::time::timeout(Duration::from_secs(10), self.wait(&r.id, "not-running"))
                .await;
        }
        let release = self.layer_release(&r);
        self.tear_down(&r).await?;
        if let Some(release) = release {
            release.pins_released();
        }
        self.forget(&r);
        Ok(())
    }

    /// The `--rm` removal after an exit: the container leaves the API first (a `wait
    /// condition=removed` answers and its name is free at once, so `run --rm` returns without
    /// waiting for the unmount and file removal), then its files and mounts go. The record stays
    /// in the table until they are gone, so a crash in between leaves a `--rm` record that the
    /// next start removes (as any lost `--rm` removal).
    async fn auto_remove_exited(&self, id: &str) -> Result<()> {
        let _op = self.op_locks.acquire(id).await;
        let r = self.find(id)?;
        if r.state.status == Status::Running {
            // Started again meanwhile (`docker start` of a --rm container): not ours to remove.
            return Ok(());
        }
        // Before the container leaves the API: whoever sees it gone and no eviction in
        // progress sees its unkept layers gone too.
        let release = self.layer_release(&r);
        self.forget(&r);
        self.tear_down(&r).await?;
        if let Some(release) = release {
            release.pins_released();
        }
        Ok(())
    }

    /// What removes a removed container's layers the hot tier does not keep, once its pins
    /// are released (`None` before the predictor is connected).
    fn layer_release(&self, r: &ContainerRecord) -> Option<crate::prewarm::LayerRelease> {
        self.prewarmer.get().map(|p| p.layers_leaving(&r.image_id))
    }

    /// Releases what a stopped container holds: the monitor's entry, its directories (the
    /// overlay is unmounted there), its layer pins, and its record in the table.
    async fn tear_down(&self, r: &ContainerRecord) -> Result<()> {
        match self
            .monitor
            .request(&Request::Delete { id: r.id.clone() })
            .await
        {
            Ok(Response::Ok)
            | Ok(Response::Error {
                not_found: true, ..
            }) => {}
            Ok(other) => return Err(monitor_refusal(other)),
            Err(e) => return Err(io_err("the container monitor", e)),
        }
        let layers = self.layers.clone();
        let recycler = self.dirs.clone();
        let dirs = ContainerDirs::open(&self.root, &r.id);
        let id = r.id.clone();
        tokio::task::spawn_blocking(move || -> Result<()> {
            recycler
                .remove(&dirs)
                .map_err(|e| io_err("removing the container's files", e))?;
            layers
                .unpin(&id)
                .map_err(|e| io_err("unpinning layers", e))?;
            Ok(())
        })
        .await
        .map_err(|e| io_err("removing", e))??;
        self.table
            .delete(&r.id, !r.auto_remove())
            .map_err(ContainerError::internal)
    }

    /// The container leaves the API: records, execs, its lock; `destroy` is published and
    /// waiters for its removal are answered.
    fn forget(&self, r: &ContainerRecord) {
        {
            let mut removed = self.removed.lock().unwrap_or_else(|p| p.into_inner());
            if removed.len() >= 1024 {
                removed.pop_front();
            }
            removed.push_back((r.id.clone(), r.state.exit_code, r.state.error.clone()));
        }
        self.records_lock().remove(&r.id);
        self.execs_lock().retain(|_, e| e.container != r.id);
        self.op_locks.forget(&r.id);
        self.publish(r, "destroy", &[]);
        self.pending_starts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&r.id);
        let _ = self.changed.send(r.id.clone());
    }

    /// How a recently removed container ended: (exit code, error), by full id or unique prefix.
    pub fn removed_exit(&self, key: &str) -> Option<(i32, String)> {
        let removed = self.removed.lock().unwrap_or_else(|p| p.into_inner());
        removed
            .iter()
            .rev()
            .find(|(id, _, _)| !key.is_empty() && id.starts_with(key))
            .map(|(_, code, err)| (*code, err.clone()))
    }

    /// `POST /containers/{id}/exec`.
    pub fn exec_create(&self, key: &str, body: &Value) -> Result<String> {
        let r = self.find(key)?;
        if r.state.status != Status::Running {
            return Err(ContainerError::new(
                409,
                format!("Container {} is not running", r.id),
            ));
        }
        let args: Vec<String> = body["Cmd"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if args.is_empty() {
            return Err(ContainerError::new(400, "No exec command specified"));
        }
        let id = random_id();
        let exec = ExecRecord {
            id: id.clone(),
            container: r.id.clone(),
            args,
            env: body["Env"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            user: body["User"].as_str().unwrap_or("").to_string(),
            cwd: body["WorkingDir"].as_str().unwrap_or("").to_string(),
            tty: body["Tty"].as_bool().unwrap_or(false),
            open_stdin: body["AttachStdin"].as_bool().unwrap_or(false),
            running: false,
            exit_code: None,
            pid: 0,
        };
        self.execs_lock().insert(id.clone(), exec);
        Ok(id)
    }

    /// An exec record.
    pub fn exec_get(&self, id: &str) -> Result<ExecRecord> {
        self.execs_lock()
            .get(id)
            .cloned()
            .ok_or_else(|| ContainerError::new(404, format!("No such exec instance: {id}")))
    }

    /// `GET /exec/{id}/json`: the exec as the monitor knows it now. A client reads the exit
    /// code right after its stream ends, which can be before the exit event reached us; the
    /// monitor marked the process exited before it closed the stream, so ask it.
    pub async fn exec_current(&self, id: &str) -> Result<ExecRecord> {
        let e = self.exec_get(id)?;
        if !e.running {
            return Ok(e);
        }
        if let Ok(Response::List(all)) = self.monitor.request(&Request::List).await {
            if let Some(s) = all.iter().find(|s| s.id == id && !s.running) {
                if let Some(e) = self.execs_lock().get_mut(id) {
                    e.running = false;
                    e.exit_code = s.exit_code;
                }
            }
        }
        self.exec_get(id)
    }

    /// Whether exec `id` can start now (not run yet, its container running): the checks an
    /// upgraded start makes before it answers 101.
    pub fn exec_startable(&self, id: &str) -> Result<ExecRecord> {
        let e = self.exec_get(id)?;
        if e.running || e.exit_code.is_some() {
            return Err(ContainerError::new(
                409,
                format!("exec {id} has already run"),
            ));
        }
        let r = self.find(&e.container)?;
        if r.state.status != Status::Running {
            return Err(ContainerError::new(
                409,
                format!("Container {} is not running", r.id),
            ));
        }
        Ok(e)
    }

    /// `POST /exec/{id}/start`: starts it and returns the attach stream.
    /// `POST /exec/{id}/start`: `tty` and `console_size` (Docker's `ConsoleSize`, [rows,
    /// columns]) as the start request gives them.
    pub async fn exec_start(
        &self,
        id: &str,
        tty: Option<bool>,
        console_size: Option<(u16, u16)>,
    ) -> Result<tokio::net::UnixStream> {
        let mut e = self.exec_get(id)?;
        if e.running || e.exit_code.is_some() {
            return Err(ContainerError::new(
                409,
                format!("exec {id} has already run"),
            ));
        }
        let r = self.find(&e.container)?;
        if let Some(t) = tty {
            e.tty = t;
        }
        let mut env: Vec<String> = r.config["Env"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        for kv in &e.env {
            let k = kv.split_once('=').map_or(kv.as_str(), |(k, _)| k);
            env.retain(|x| x.split_once('=').map_or(x.as_str(), |(k, _)| k) != k);
            env.push(kv.clone());
        }
        let process = hb_spawn::ProcessSpec {
            args: e.args.clone(),
            env,
            cwd: if e.cwd.is_empty() {
                r.config["WorkingDir"]
                    .as_str()
                    .filter(|w| !w.is_empty())
                    .unwrap_or("/")
                    .to_string()
            } else {
                e.cwd.clone()
            },
            user: if e.user.is_empty() {
                r.config["User"].as_str().unwrap_or("").to_string()
            } else {
                e.user.clone()
            },
            tty: e.tty,
        };
        let (answer, stream) = self
            .monitor
            .attach(&Request::Exec {
                id: r.id.clone(),
                exec_id: e.id.clone(),
                process,
                open_stdin: e.open_stdin,
                attach: true,
                console_size,
            })
            .await
            .map_err(|err| io_err("the container monitor", err))?;
        match answer {
            Response::Started(s) => {
                // Its exit event may already have been handled: keep that.
                let mut execs = self.execs_lock();
                let entry = execs.entry(e.id.clone()).or_insert(e);
                entry.pid = s.pid;
                entry.running = entry.exit_code.is_none();
                Ok(stream)
            }
            other => {
                let err = monitor_refusal(other);
                e.exit_code = Some(err.exit_code);
                self.execs_lock().insert(e.id.clone(), e);
                Err(err)
            }
        }
    }

    /// Attach stream of a container.
    pub async fn attach(
        &self,
        key: &str,
        stdin: bool,
    ) -> Result<(ContainerRecord, tokio::net::UnixStream)> {
        let r = self.find(key)?;
        let (answer, stream) = self
            .monitor
            .attach(&Request::Attach {
                id: r.id.clone(),
                stdin,
                stdin_once: r.config["StdinOnce"].as_bool().unwrap_or(false),
            })
            .await
            .map_err(|e| io_err("the container monitor", e))?;
        match answer {
            Response::Ok => Ok((r, stream)),
            other => Err(monitor_refusal(other)),
        }
    }

    /// `POST /containers/{id}/resize` and `/exec/{id}/resize`.
    pub async fn resize(&self, id: &str, height: u16, width: u16) -> Result<()> {
        match self
            .monitor
            .request(&Request::Resize {
                id: id.to_string(),
                height,
                width,
            })
            .await
            .map_err(|e| io_err("the container monitor", e))?
        {
            Response::Ok => Ok(()),
            other => Err(monitor_refusal(other)),
        }
    }
}

/// The overlay's lower dirs for an image, top first: its layers (unpacked if missing), then
/// the shared mount-points layer at the bottom.
fn image_lowers(layers: &LayerStore, diff_ids: &[String], parallel: usize) -> Result<Vec<PathBuf>> {
    let mut lowers = dedup_lowers(
        layers
            .ensure_image(diff_ids, parallel)
            .map_err(|e| io_err("unpacking the image", e))?,
    );
    lowers.push(layers.mount_points_layer());
    Ok(lowers)
}

/// An image may list the same layer twice (empty layers often repeat); overlayfs refuses a
/// lower dir given twice (ELOOP). The topmost copy already shows everything the lower one does.
fn dedup_lowers(top_first: Vec<PathBuf>) -> Vec<PathBuf> {
    let mut seen = std::collections::HashSet::new();
    top_first
        .into_iter()
        .filter(|p| seen.insert(p.clone()))
        .collect()
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn monitor_refusal(r: Response) -> ContainerError {
    match r {
        Response::Error {
            message,
            exit_code,
            not_found,
        } => ContainerError {
            status: if not_found {
                404
            } else if exit_code == 126 || exit_code == 127 {
                400
            } else {
                500
            },
            message,
            exit_code,
        },
        other => ContainerError::internal(format!("unexpected monitor answer {other:?}")),
    }
}

fn apply_process_state(state: &mut State, s: &ProcessState) {
    state.pid = if s.running { s.pid } else { 0 };
    if s.running {
        state.status = Status::Running;
        state.ip = s.ip.clone();
        state.ports = s.ports.clone();
    } else if s.exit_code.is_some() {
        state.status = Status::Exited;
        state.ip = None;
        state.ports.clear();
    }
    if let Some(code) = s.exit_code.filter(|_| !s.running) {
        state.exit_code = code;
    }
    state.oom_killed = s.oom_killed;
    if s.started_at_ns != 0 {
        state.started_at = time_ns(s.started_at_ns);
    }
    if s.finished_at_ns != 0 {
        state.finished_at = time_ns(s.finished_at_ns);
    }
}

/// `SIGTERM`, `TERM`, `15` → 15.
pub fn signal_number(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let name = s.trim().to_ascii_uppercase();
    let name = name.strip_prefix("SIG").unwrap_or(&name);
    Some(match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "ILL" => libc::SIGILL,
        "TRAP" => libc::SIGTRAP,
        "ABRT" | "IOT" => libc::SIGABRT,
        "BUS" => libc::SIGBUS,
        "FPE" => libc::SIGFPE,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "SEGV" => libc::SIGSEGV,
        "USR2" => libc::SIGUSR2,
        "PIPE" => libc::SIGPIPE,
        "ALRM" => libc::SIGALRM,
        "TERM" => libc::SIGTERM,
        "CHLD" => libc::SIGCHLD,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "TSTP" => libc::SIGTSTP,
        "TTIN" => libc::SIGTTIN,
        "TTOU" => libc::SIGTTOU,
        "URG" => libc::SIGURG,
        "XCPU" => libc::SIGXCPU,
        "XFSZ" => libc::SIGXFSZ,
        "VTALRM" => libc::SIGVTALRM,
        "PROF" => libc::SIGPROF,
        "WINCH" => libc::SIGWINCH,
        "IO" | "POLL" => libc::SIGIO,
        "PWR" => libc::SIGPWR,
        "SYS" => libc::SIGSYS,
        _ => return None,
    })
}

/// Docker's `ConsoleSize` ([rows, columns], in a create's HostConfig or an exec start): the
/// first size of a TTY process's terminal. `[0, 0]` (Docker's default), absent or malformed
/// values give none.
pub fn console_size(v: &Value) -> Option<(u16, u16)> {
    let a = v.as_array().filter(|a| a.len() == 2)?;
    let rows = u16::try_from(a[0].as_u64()?).ok().filter(|&r| r > 0)?;
    let cols = u16::try_from(a[1].as_u64()?).ok().filter(|&c| c > 0)?;
    Some((rows, cols))
}
