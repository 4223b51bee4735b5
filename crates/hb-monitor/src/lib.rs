//! `hb-monitor`: the process that owns running containers.
//!
//! The daemon is multi-threaded and may restart; containers must neither be forked from it nor
//! die with it. So one single-threaded monitor process per daemon (started by the daemon,
//! detached, surviving it) forks every container through `hb-spawn`, holds their stdio, writes
//! their logs ([`logfile`]), reaps them and releases their cgroups and network namespaces. The
//! daemon talks to it over a unix socket ([`protocol`]).

#![warn(missing_docs)]

mod io;
pub mod logfile;
mod monitor;
mod netpool;
pub mod protocol;

pub use monitor::{Monitor, MonitorConfig};

/// What can stop the monitor from starting.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// A system call failed.
    #[error("{what}: {source}")]
    Os {
        /// Which call.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Preparing the spawner failed.
    #[error("preparing the spawner: {0}")]
    Spawn(String),
}

impl MonitorError {
    fn os(what: &str) -> MonitorError {
        MonitorError::Os {
            what: what.to_string(),
            source: std::io::Error::last_os_error(),
        }
    }
    fn io(what: String, source: std::io::Error) -> MonitorError {
        MonitorError::Os { what, source }
    }
}
