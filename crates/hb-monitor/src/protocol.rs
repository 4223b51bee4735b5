//! The monitor's wire protocol, shared by the monitor and the daemon.
//!
//! A connection to the monitor's unix socket starts in control mode: one JSON [`Request`] per line,
//! one JSON [`Response`] per line back. Two requests switch the connection to another mode for
//! the rest of its life:
//! - [`Request::Attach`]: after the `Ok` line the connection carries the process's output as
//!   Docker's multiplexed stream (8-byte header `[stream, 0, 0, 0, len u32 BE]` then `len` bytes;
//!   stream 1 = stdout, 2 = stderr) or, for a TTY, raw bytes. Bytes sent the other way are the
//!   process's stdin; shutting down the write side closes its stdin. The monitor closes the
//!   connection when the process has exited and its output is drained.
//! - [`Request::Subscribe`]: after the `Ok` line the monitor sends one JSON [`Event`] per line.

use std::path::PathBuf;

use hb_spawn::{ContainerSpec, ProcessSpec};
use serde::{Deserialize, Serialize};

/// Docker's stream ids in the multiplexed framing.
pub const STREAM_STDOUT: u8 = 1;
/// Docker's stream id for stderr.
pub const STREAM_STDERR: u8 = 2;

/// How a container is networked, as the monitor carries it out.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum Network {
    /// Share the host's network namespace.
    Host,
    /// A private namespace with only `lo`.
    None,
    /// The `hb0` bridge, with these published ports (docker `-p` syntax, already validated).
    Bridge {
        /// Published ports, e.g. `127.0.0.1:8080:80/tcp`.
        ports: Vec<String>,
    },
}

/// Where and how the monitor keeps a container's log (Docker's json-file format).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LogConfig {
    /// The current log file; rotated files get `.1`, `.2`, … appended.
    pub path: PathBuf,
    /// Rotate when the current file reaches this many bytes.
    pub max_size: u64,
    /// Files kept, the current one included.
    pub max_files: u32,
}

/// A request from the daemon.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Request {
    /// Register a container (nothing runs yet).
    Create {
        /// What to run. Its `network` field is filled in by the monitor from `network`.
        spec: Box<ContainerSpec>,
        /// How to network it.
        network: Network,
        /// Keep stdin open (`-i`): a pipe the attach connection writes to; else /dev/null.
        open_stdin: bool,
        /// Log file settings.
        log: LogConfig,
        /// File the monitor writes `/etc/hosts` into once the address is known (bind-mounted by the spec).
        hosts_file: Option<PathBuf>,
        /// With a TTY, the terminal's first size (rows, columns): Docker's `ConsoleSize`, so the
        /// process has the client's size from its first instruction. Absent from older
        /// daemons' requests (24x80 then, until a resize).
        #[serde(default)]
        console_size: Option<(u16, u16)>,
    },
    /// Start a created (or exited) container.
    Start {
        /// Container id.
        id: String,
    },
    /// Start a process in a running container (`docker exec`); attach to it by `exec_id`.
    Exec {
        /// Container id.
        id: String,
        /// Id of the new process entry.
        exec_id: String,
        /// What to run.
        process: ProcessSpec,
        /// Keep its stdin open.
        open_stdin: bool,
        /// Turn this connection into the exec's attach stream once it has started (so no
        /// output is missed).
        attach: bool,
        /// With a TTY, the terminal's first size (rows, columns): Docker's `ConsoleSize`, so the
        /// process has the client's size from its first instruction. Absent from older
        /// daemons' requests (24x80 then, until a resize).
        #[serde(default)]
        console_size: Option<(u16, u16)>,
    },
    /// Stream a container's or exec's stdio over this connection (see the module docs).
    Attach {
        /// Container or exec id.
        id: String,
        /// Forward stdin from this connection.
        stdin: bool,
        /// Close the process's stdin when this client stops sending (Docker's `StdinOnce`, which
        /// `docker run -i` sets). Otherwise stdin stays open for the next attach. Absent in
        /// requests from older daemons, which always closed it.
        #[serde(default = "closes_stdin_by_default")]
        stdin_once: bool,
    },
    /// Send a signal to a container's main process (or an exec's process).
    Signal {
        /// Container or exec id.
        id: String,
        /// Signal number.
        signal: i32,
    },
    /// Set the TTY window size.
    Resize {
        /// Container or exec id.
        id: String,
        /// Rows.
        height: u16,
        /// Columns.
        width: u16,
    },
    /// Forget a container that is not running (and its execs), releasing what it holds.
    Delete {
        /// Container id.
        id: String,
    },
    /// Every container and exec the monitor knows.
    List,
    /// Turn this connection into an event stream.
    Subscribe,
    /// Liveness check.
    Ping,
}

/// The monitor's answer to one request.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Response {
    /// Done.
    Ok,
    /// A start or exec succeeded.
    Started(ProcessState),
    /// The answer to `List`.
    List(Vec<ProcessState>),
    /// Failed; `exit_code` follows Docker's conventions (125 engine, 126 cannot execute, 127 not found).
    Error {
        /// What went wrong, for the user.
        message: String,
        /// Docker's exit code for it.
        exit_code: i32,
        /// The id is unknown.
        not_found: bool,
    },
}

/// What the monitor knows of one container or exec process.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProcessState {
    /// Container or exec id.
    pub id: String,
    /// For an exec, its container's id.
    pub container: Option<String>,
    /// Host pid while running (0 before the first start).
    pub pid: i32,
    /// Running now.
    pub running: bool,
    /// Exit code of the last run (128+signal when killed by a signal).
    pub exit_code: Option<i32>,
    /// The kernel's OOM killer ended it.
    pub oom_killed: bool,
    /// Unix time (ns) of the last start.
    pub started_at_ns: u64,
    /// Unix time (ns) of the last exit.
    pub finished_at_ns: u64,
    /// Bridge address, when it has one.
    pub ip: Option<String>,
    /// Published ports with the host ports chosen (docker `-p` syntax).
    pub ports: Vec<String>,
}

/// Something that happened, sent to subscribers.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum Event {
    /// A container or exec process exited (its output is drained).
    Exited(ProcessState),
}

fn closes_stdin_by_default() -> bool {
    true
}
