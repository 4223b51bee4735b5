//! The monitor process's event loop: one thread, one `poll(2)` over the control socket, the
//! signalfd (SIGCHLD, SIGTERM, SIGINT), client connections and every container's stdio.
//!
//! It is the parent (and child subreaper) of every container, so containers keep running when
//! the daemon dies; it holds their stdio, writes their logs, reaps them, releases their cgroups
//! and networks when they exit, and keeps their exit status until the daemon deletes them.
//! Being single-threaded is what makes forking a container from it safe.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hb_spawn::{ContainerSpec, NetworkMode, ProcessSpec, Spawned, Spawner, Stdio, WindowSize};

use crate::io::{self as fdio, Transfer};
use crate::logfile::LogWriter;
use crate::netpool::NetPool;
use crate::protocol::{
    Event, LogConfig, Network, ProcessState, Request, Response, STREAM_STDERR, STREAM_STDOUT,
};
use crate::MonitorError;

/// How the monitor is run.
#[derive(Clone, Debug)]
pub struct MonitorConfig {
    /// The control socket.
    pub socket: PathBuf,
    /// cgroup parent for containers (`hyperbox`).
    pub cgroup_parent: String,
    /// Networking: where netns files, IPAM leases and the bridge live.
    pub net: hb_net::NetConfig,
    /// Ready `--network none` namespaces kept in advance.
    pub netns_pool: usize,
}

/// Attached clients are not allowed to queue more than this; past it the container's output
/// is not read (it blocks on a full pipe), as Docker's attach does.
const MAX_PENDING: usize = 1 << 20;
/// After a process exits, how long its output may take to reach end-of-file (children that kept
/// the pipe open) before the monitor stops waiting for it.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

enum Mode {
    Control,
    /// `stdin_once`: the client's end of input closes the process's stdin.
    Attach {
        id: String,
        stdin: bool,
        stdin_once: bool,
    },
    Events,
}

struct Conn {
    stream: UnixStream,
    mode: Mode,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    read_closed: bool,
    close_after_flush: bool,
    dead: bool,
}

struct Io {
    /// stdout and stderr read ends (with a TTY only [0], a dup of the master).
    out: [Option<OwnedFd>; 2],
    /// Where stdin bytes go (pipe write end or the pty master).
    stdin: Option<OwnedFd>,
    stdin_buf: Vec<u8>,
    stdin_close: bool,
    master: Option<OwnedFd>,
    tty: bool,
}

struct Container {
    spec: ContainerSpec,
    network: Network,
    open_stdin: bool,
    log: LogConfig,
    hosts_file: Option<PathBuf>,
    /// With a TTY, the terminal's size at start (rows, columns); 24x80 when not given.
    console_size: Option<(u16, u16)>,
    spawned: Option<Spawned>,
    /// A bridge container's namespace file.
    netns: Option<PathBuf>,
    /// A `--network none` container's namespace, held by this descriptor only.
    netns_held: Option<OwnedFd>,
}

impl Container {
    /// Gives up the held namespace and returns the namespace file to release, if any.
    fn take_net(&mut self) -> Option<PathBuf> {
        self.netns_held = None;
        self.netns.take()
    }
}

struct Proc {
    state: ProcessState,
    /// None for an exec.
    container: Option<Box<Container>>,
    tty: bool,
    open_stdin: bool,
    io: Option<Io>,
    log: Option<LogWriter>,
    /// The process was reaped; waiting for its output to drain until this instant.
    draining_until: Option<Instant>,
    /// stdin that arrived on an attach before the start (docker attaches, then starts).
    early_stdin: Vec<u8>,
    /// ... and whether that attach already closed its stdin.
    early_close: bool,
}

/// The monitor's state.
pub struct Monitor {
    config: MonitorConfig,
    spawner: Spawner,
    net: Option<NetPool>,
    listener: UnixListener,
    signals: OwnedFd,
    conns: Vec<Option<Conn>>,
    procs: HashMap<String, Proc>,
    by_pid: HashMap<i32, String>,
    stopping: bool,
    /// What exited containers still hold, released at the end of the poll round, after the
    /// round's `Exited` events went out: a waiting `run --rm` then does not also wait for
    /// seven cgroup rmdirs and a namespace's unmount. Any later request (a `Delete`, a
    /// `Start` again) is read in a later round, so it never sees them held.
    exit_releases: Vec<ExitRelease>,
}

/// A cgroup and network namespace an exited container leaves to release.
struct ExitRelease {
    id: String,
    cgroup: Option<hb_spawn::Cgroup>,
    netns: Option<PathBuf>,
    netns_held: Option<OwnedFd>,
    /// The held namespace may serve another `--network none` container if left untouched:
    /// this container could not change its settings.
    netns_reusable: bool,
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn error(message: impl Into<String>, exit_code: i32) -> Response {
    Response::Error {
        message: message.into(),
        exit_code,
        not_found: false,
    }
}

fn not_found(id: &str) -> Response {
    Response::Error {
        message: format!("No such container: {id}"),
        exit_code: 125,
        not_found: true,
    }
}

impl Monitor {
    /// Prepares the spawner, the socket and the signal handling.
    pub fn new(config: MonitorConfig) -> Result<Monitor, MonitorError> {
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
            return Err(MonitorError::os("prctl(PR_SET_CHILD_SUBREAPER)"));
        }
        let signals = signalfd()?;
        let spawner = Spawner::new().map_err(|e| MonitorError::Spawn(e.to_string()))?;
        let net = match NetPool::open(config.net.clone(), config.netns_pool) {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::warn!("container networking unavailable: {e}");
                None
            }
        };
        if let Some(dir) = config.socket.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| MonitorError::io(format!("creating {}", dir.display()), e))?;
        }
        let _ = std::fs::remove_file(&config.socket);
        let listener = UnixListener::bind(&config.socket)
            .map_err(|e| MonitorError::io(format!("binding {}", config.socket.display()), e))?;
        fdio::set_nonblocking(&listener).map_err(|e| MonitorError::io("socket".to_string(), e))?;
        let pid_file = config.socket.with_extension("pid");
        std::fs::write(&pid_file, format!("{}\n", std::process::id()))
            .map_err(|e| MonitorError::io(format!("writing {}", pid_file.display()), e))?;
        Ok(Monitor {
            config,
            spawner,
            net,
            listener,
            signals,
            conns: Vec::new(),
            procs: HashMap::new(),
            by_pid: HashMap::new(),
            stopping: false,
            exit_releases: Vec::new(),
        })
    }

    /// Serves until SIGTERM or SIGINT, then stops every container and releases what they hold.
    pub fn run(mut self) -> Result<(), MonitorError> {
        tracing::info!(socket = %self.config.socket.display(), "monitor ready");
        loop {
            if self.stopping {
                self.shutdown();
                return Ok(());
            }
            self.poll_once();
        }
    }

    fn poll_once(&mut self) {
        #[derive(Clone, Copy)]
        enum Slot {
            Listener,
            Signals,
            Conn(usize),
            Out(usize, usize),
            In(usize),
        }
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(16);
        let mut slots: Vec<Slot> = Vec::with_capacity(16);
        let mut push = |fd: RawFd, events: i16, slot: Slot| {
            fds.push(libc::pollfd {
                fd,
                events,
                revents: 0,
            });
            slots.push(slot);
        };
        push(self.listener.as_raw_fd(), libc::POLLIN, Slot::Listener);
        push(self.signals.as_raw_fd(), libc::POLLIN, Slot::Signals);
        for (i, c) in self.conns.iter().enumerate() {
            let Some(c) = c else { continue };
            let mut ev = 0;
            if !c.read_closed && !self.stdin_backlogged(c) {
                ev |= libc::POLLIN;
            }
            if !c.out.is_empty() {
                ev |= libc::POLLOUT;
            }
            push(c.stream.as_raw_fd(), ev, Slot::Conn(i));
        }
        // Procs are visited in a fixed order for this round (the map is not touched until the
        // events are handled).
        let ids: Vec<String> = self.procs.keys().cloned().collect();
        let mut deadline: Option<Instant> = None;
        for (pi, id) in ids.iter().enumerate() {
            let Some(p) = self.procs.get(id) else {
                continue;
            };
            if let Some(d) = p.draining_until {
                deadline = Some(deadline.map_or(d, |x: Instant| x.min(d)));
            }
            let Some(io) = &p.io else { continue };
            // A slow attach client holds a running container's output back (as Docker's
            // attach does), but once the process has exited what is left in its pipes is read
            // into the log and the client's buffer, so the last lines are never dropped.
            let backlogged = p.draining_until.is_none() && self.output_backlogged(id);
            for (k, fd) in io.out.iter().enumerate() {
                if let (Some(fd), false) = (fd, backlogged) {
                    push(fd.as_raw_fd(), libc::POLLIN, Slot::Out(pi, k));
                }
            }
            if let Some(fd) = &io.stdin {
                if !io.stdin_buf.is_empty() {
                    push(fd.as_raw_fd(), libc::POLLOUT, Slot::In(pi));
                }
            }
        }
        let timeout = match deadline {
            Some(d) => d
                .saturating_duration_since(Instant::now())
                .as_millis()
                .min(60_000) as i32,
            None => self.net.as_ref().map_or(-1, |n| n.idle_timeout_ms()),
        };
        // SAFETY: fds is a valid array of pollfd.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                tracing::error!("poll: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
            return;
        }
        if n == 0 {
            if let Some(net) = self.net.as_mut() {
                net.refill_one();
            }
        }
        for (pfd, slot) in fds.iter().zip(slots.iter()) {
            if pfd.revents == 0 {
                continue;
            }
            let readable = pfd.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0;
            match *slot {
                Slot::Listener => self.accept(),
                Slot::Signals => self.on_signals(),
                Slot::Conn(i) => {
                    if pfd.revents & libc::POLLOUT != 0 {
                        self.flush_conn(i);
                    }
                    let gone = pfd.revents & (libc::POLLHUP | libc::POLLERR) != 0;
                    match self.conns[i].as_mut() {
                        // Fully closed by the peer (a half-close would not raise POLLHUP):
                        // drop it, or poll would report the hang-up forever.
                        Some(c) if c.read_closed && gone => c.dead = true,
                        _ if readable => self.read_conn(i),
                        _ => {}
                    }
                }
                Slot::Out(pi, k) if readable => self.read_output(&ids[pi], k),
                Slot::In(pi) => self.write_stdin(&ids[pi]),
                Slot::Out(..) => {}
            }
        }
        self.finish_drained();
        self.release_exited();
        self.conns.iter_mut().for_each(|c| {
            if c.as_ref().is_some_and(|c| c.dead) {
                *c = None;
            }
        });
    }

    fn stdin_backlogged(&self, c: &Conn) -> bool {
        match &c.mode {
            Mode::Attach {
                id, stdin: true, ..
            } => self
                .procs
                .get(id)
                .and_then(|p| p.io.as_ref())
                .is_some_and(|io| io.stdin_buf.len() > MAX_PENDING),
            _ => false,
        }
    }

    fn output_backlogged(&self, id: &str) -> bool {
        self.conns.iter().flatten().any(|c| {
            matches!(&c.mode, Mode::Attach { id: a, .. } if a == id) && c.out.len() > MAX_PENDING
        })
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if let Err(e) = fdio::set_nonblocking(&stream) {
                        tracing::warn!("client socket: {e}");
                        continue;
                    }
                    let conn = Conn {
                        stream,
                        mode: Mode::Control,
                        inbuf: Vec::new(),
                        out: Vec::new(),
                        read_closed: false,
                        close_after_flush: false,
                        dead: false,
                    };
                    match self.conns.iter().position(Option::is_none) {
                        Some(i) => self.conns[i] = Some(conn),
                        None => self.conns.push(Some(conn)),
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    return;
                }
            }
        }
    }

    fn read_conn(&mut self, i: usize) {
        let mut buf = [0u8; 64 * 1024];
        let Some(c) = self.conns[i].as_mut() else {
            return;
        };
        match fdio::read(c.stream.as_raw_fd(), &mut buf) {
            Transfer::Bytes(n) => match &c.mode {
                Mode::Control => {
                    c.inbuf.extend_from_slice(&buf[..n]);
                    self.handle_control(i);
                }
                Mode::Attach {
                    id, stdin: true, ..
                } => {
                    let id = id.clone();
                    if let Some(p) = self.procs.get_mut(&id) {
                        match p.io.as_mut() {
                            Some(io) => io.stdin_buf.extend_from_slice(&buf[..n]),
                            None if p.early_stdin.len() < MAX_PENDING => {
                                p.early_stdin.extend_from_slice(&buf[..n])
                            }
                            None => {}
                        }
                    }
                    self.write_stdin(&id);
                }
                _ => {}
            },
            Transfer::WouldBlock => {}
            Transfer::Closed => {
                c.read_closed = true;
                match &c.mode {
                    Mode::Attach {
                        id,
                        stdin: true,
                        stdin_once: true,
                    } => {
                        let id = id.clone();
                        if let Some(p) = self.procs.get_mut(&id) {
                            match p.io.as_mut() {
                                Some(io) => io.stdin_close = true,
                                None => p.early_close = true,
                            }
                        }
                        self.write_stdin(&id);
                    }
                    // A control or event client that stops sending has gone away.
                    Mode::Control | Mode::Events => c.dead = true,
                    // An attach without stdin (or without StdinOnce) may half-close; it is gone
                    // when a write fails, and the process's stdin stays open for the next one.
                    Mode::Attach { .. } => {}
                }
            }
        }
    }

    fn flush_conn(&mut self, i: usize) {
        let Some(c) = self.conns[i].as_mut() else {
            return;
        };
        while !c.out.is_empty() {
            match fdio::write(c.stream.as_raw_fd(), &c.out) {
                Transfer::Bytes(n) => {
                    c.out.drain(..n);
                }
                Transfer::WouldBlock => return,
                Transfer::Closed => {
                    c.dead = true;
                    return;
                }
            }
        }
        if c.close_after_flush {
            c.dead = true;
        }
    }

    fn send(&mut self, i: usize, bytes: &[u8]) {
        if let Some(c) = self.conns[i].as_mut() {
            c.out.extend_from_slice(bytes);
        }
        self.flush_conn(i);
    }

    fn respond(&mut self, i: usize, response: &Response) {
        let mut line = serde_json::to_vec(response).unwrap_or_else(|e| {
            format!("{{\"Error\":{{\"message\":\"encoding: {e}\",\"exit_code\":125,\"not_found\":false}}}}").into_bytes()
        });
        line.push(b'\n');
        self.send(i, &line);
    }

    fn handle_control(&mut self, i: usize) {
        loop {
            let Some(c) = self.conns[i].as_mut() else {
                return;
            };
            if !matches!(c.mode, Mode::Control) {
                return;
            }
            let Some(nl) = c.inbuf.iter().position(|&b| b == b'\n') else {
                if c.inbuf.len() > 16 << 20 {
                    c.dead = true;
                }
                return;
            };
            let line: Vec<u8> = c.inbuf.drain(..=nl).collect();
            let request: Request = match serde_json::from_slice(&line) {
                Ok(r) => r,
                Err(e) => {
                    self.respond(i, &error(format!("malformed request: {e}"), 125));
                    continue;
                }
            };
            let response = self.handle(i, request);
            if let Some(r) = response {
                self.respond(i, &r);
            }
            // Attach leftovers: bytes after the request line are stdin.
            let leftover = self.conns[i].as_mut().and_then(|c| match &c.mode {
                Mode::Attach {
                    id, stdin: true, ..
                } if !c.inbuf.is_empty() => Some((id.clone(), std::mem::take(&mut c.inbuf))),
                _ => None,
            });
            if let Some((id, bytes)) = leftover {
                if let Some(p) = self.procs.get_mut(&id) {
                    match p.io.as_mut() {
                        Some(io) => io.stdin_buf.extend_from_slice(&bytes),
                        None => p.early_stdin.extend_from_slice(&bytes),
                    }
                }
                self.write_stdin(&id);
            }
        }
    }

    /// Handles one request; `None` when the response was already sent.
    fn handle(&mut self, conn: usize, request: Request) -> Option<Response> {
        Some(match request {
            Request::Ping => Response::Ok,
            Request::List => Response::List(self.procs.values().map(|p| p.state.clone()).collect()),
            Request::Create {
                spec,
                network,
                open_stdin,
                log,
                hosts_file,
                console_size,
            } => self.create(*spec, network, open_stdin, log, hosts_file, console_size),
            Request::Start { id } => {
                let r = self.start(&id);
                // stdin that arrived before the start (and its EOF) goes in now.
                self.write_stdin(&id);
                r
            }
            Request::Exec {
                id,
                exec_id,
                process,
                open_stdin,
                attach,
                console_size,
            } => {
                let response = self.exec(&id, exec_id.clone(), process, open_stdin, console_size);
                if attach && matches!(response, Response::Started(_)) {
                    self.respond(conn, &response);
                    if let Some(c) = self.conns[conn].as_mut() {
                        // As dockerd's exec: the client's end of input is the process's.
                        c.mode = Mode::Attach {
                            id: exec_id,
                            stdin: open_stdin,
                            stdin_once: true,
                        };
                    }
                    return None;
                }
                response
            }
            Request::Attach {
                id,
                stdin,
                stdin_once,
            } => {
                let Some(p) = self.procs.get(&id) else {
                    return Some(not_found(&id));
                };
                let finished = !p.state.running && p.state.exit_code.is_some() && p.io.is_none();
                let stdin = stdin && p.open_stdin;
                self.respond(conn, &Response::Ok);
                if let Some(c) = self.conns[conn].as_mut() {
                    c.mode = Mode::Attach {
                        id,
                        stdin,
                        stdin_once,
                    };
                    if finished {
                        c.close_after_flush = true;
                        c.read_closed = true;
                    }
                }
                self.flush_conn(conn);
                return None;
            }
            Request::Subscribe => {
                self.respond(conn, &Response::Ok);
                if let Some(c) = self.conns[conn].as_mut() {
                    c.mode = Mode::Events;
                }
                return None;
            }
            Request::Signal { id, signal } => match self.procs.get(&id) {
                None => not_found(&id),
                Some(p) if !p.state.running || p.draining_until.is_some() => {
                    error(format!("container {id} is not running"), 125)
                }
                Some(p) => {
                    // SAFETY: kill with a pid we reaped-tracked and a signal number.
                    if unsafe { libc::kill(p.state.pid, signal) } != 0 {
                        error(
                            format!("signalling {id}: {}", std::io::Error::last_os_error()),
                            125,
                        )
                    } else {
                        Response::Ok
                    }
                }
            },
            Request::Resize { id, height, width } => match self.procs.get(&id) {
                None => not_found(&id),
                Some(p) => match p.io.as_ref().and_then(|io| io.master.as_ref()) {
                    Some(m) => match fdio::resize(m, height, width) {
                        Ok(()) => Response::Ok,
                        Err(e) => error(format!("resizing the tty of {id}: {e}"), 125),
                    },
                    None => Response::Ok,
                },
            },
            Request::Delete { id } => self.delete(&id),
        })
    }

    fn create(
        &mut self,
        spec: ContainerSpec,
        network: Network,
        open_stdin: bool,
        log: LogConfig,
        hosts_file: Option<PathBuf>,
        console_size: Option<(u16, u16)>,
    ) -> Response {
        let id = spec.id.clone();
        if self.procs.contains_key(&id) {
            return error(format!("container {id} already exists"), 125);
        }
        let tty = spec.process.tty;
        let state = ProcessState {
            id: id.clone(),
            container: None,
            pid: 0,
            running: false,
            exit_code: None,
            oom_killed: false,
            started_at_ns: 0,
            finished_at_ns: 0,
            ip: None,
            ports: Vec::new(),
        };
        self.procs.insert(
            id,
            Proc {
                state,
                container: Some(Box::new(Container {
                    spec,
                    network,
                    open_stdin,
                    log,
                    hosts_file,
                    console_size,
                    spawned: None,
                    netns: None,
                    netns_held: None,
                })),
                tty,
                open_stdin,
                io: None,
                log: None,
                draining_until: None,
                early_stdin: Vec::new(),
                early_close: false,
            },
        );
        Response::Ok
    }

    fn start(&mut self, id: &str) -> Response {
        let Some(p) = self.procs.get_mut(id) else {
            return not_found(id);
        };
        if p.state.running {
            return error(format!("container {id} is already running"), 125);
        }
        if p.io.is_some() {
            return error(format!("container {id} is still stopping"), 125);
        }
        let Some(c) = p.container.as_mut() else {
            return error(format!("{id} is an exec, not a container"), 125);
        };
        // Network first: the spawner joins the namespace file.
        let mut ip = None;
        let mut ports = Vec::new();
        match &c.network {
            Network::Host => c.spec.network = NetworkMode::Host,
            Network::None | Network::Bridge { .. } => {
                let Some(net) = self.net.as_mut() else {
                    return error(
                        "container networking is unavailable on this host (see the monitor log)",
                        125,
                    );
                };
                let made = match &c.network {
                    Network::None => net.take_none().map(|fd| {
                        c.spec.network = NetworkMode::None;
                        c.netns_held = Some(fd);
                    }),
                    Network::Bridge { ports: p } => net.bridge(id, p).map(|(ns, att)| {
                        ip = Some(att.ip.to_string());
                        ports = att.ports;
                        c.spec.network = NetworkMode::Path(ns.clone());
                        c.netns = Some(ns);
                    }),
                    Network::Host => unreachable_host().map(|_| ()),
                };
                if let Err(e) = made {
                    return error(e.to_string(), 125);
                }
            }
        }
        if let Some(hosts) = c.hosts_file.clone() {
            if let Err(e) = write_hosts(&hosts, &c.spec.hostname, ip.as_deref()) {
                release_net(self.net.as_mut(), id, c.take_net());
                return error(format!("writing {}: {e}", hosts.display()), 125);
            }
        }
        let (io, stdio) = match make_stdio(p.tty, c.open_stdin, c.console_size) {
            Ok(v) => v,
            Err(e) => {
                release_net(self.net.as_mut(), id, c.take_net());
                return error(format!("creating stdio for {id}: {e}"), 125);
            }
        };
        let log = match LogWriter::open(c.log.clone()) {
            Ok(l) => l,
            Err(e) => {
                release_net(self.net.as_mut(), id, c.take_net());
                return error(format!("opening log {}: {e}", c.log.path.display()), 125);
            }
        };
        let held = c.netns_held.as_ref().map(|fd| fd.as_fd());
        match self.spawner.spawn_with_netns(&c.spec, stdio, held) {
            Ok(mut spawned) => {
                let pid = spawned.pid;
                let mut io = io;
                if let Some(master) = spawned.terminal.take() {
                    if let Err(e) = terminal_io(&mut io, master, c.open_stdin) {
                        // Started, but its terminal cannot be served: take the start back.
                        let _ = spawned.cgroup.kill_all(libc::SIGKILL);
                        reap_now(pid);
                        if let Err(rm) = spawned.cgroup.remove() {
                            tracing::warn!(container = id, "removing cgroup: {rm}");
                        }
                        release_net(self.net.as_mut(), id, c.take_net());
                        return error(format!("wiring the terminal of {id}: {e}"), 125);
                    }
                }
                c.spawned = Some(spawned);
                io.stdin_buf = std::mem::take(&mut p.early_stdin);
                io.stdin_close = std::mem::take(&mut p.early_close);
                p.io = Some(io);
                p.log = Some(log);
                p.state.pid = pid;
                p.state.running = true;
                p.state.exit_code = None;
                p.state.oom_killed = false;
                p.state.started_at_ns = now_ns();
                p.state.finished_at_ns = 0;
                p.state.ip = ip;
                p.state.ports = ports;
                self.by_pid.insert(pid, id.to_string());
                Response::Started(p.state.clone())
            }
            Err(e) => {
                release_net(self.net.as_mut(), id, c.take_net());
                let code = e.exit_code();
                error(e.to_string(), code)
            }
        }
    }

    fn exec(
        &mut self,
        id: &str,
        exec_id: String,
        process: ProcessSpec,
        open_stdin: bool,
        console_size: Option<(u16, u16)>,
    ) -> Response {
        let Some(p) = self.procs.get(id) else {
            return not_found(id);
        };
        let (Some(c), true) = (p.container.as_ref(), p.state.running) else {
            return error(format!("container {id} is not running"), 125);
        };
        let Some(spawned) = c.spawned.as_ref() else {
            return error(format!("container {id} is not running"), 125);
        };
        if self.procs.contains_key(&exec_id) {
            return error(format!("exec {exec_id} already exists"), 125);
        }
        let tty = process.tty;
        let (io, stdio) = match make_stdio(tty, open_stdin, console_size) {
            Ok(v) => v,
            Err(e) => return error(format!("creating stdio for exec: {e}"), 125),
        };
        match self.spawner.exec(spawned, &c.spec, &process, stdio) {
            Ok(started) => {
                let pid = started.pid;
                let mut io = io;
                if let Some(master) = started.terminal {
                    if let Err(e) = terminal_io(&mut io, master, open_stdin) {
                        // Started, but its terminal cannot be served: take the exec back.
                        // SAFETY: signalling our own child (CLONE_PARENT made it ours).
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                        reap_now(pid);
                        return error(format!("wiring the terminal of exec {exec_id}: {e}"), 125);
                    }
                }
                let state = ProcessState {
                    id: exec_id.clone(),
                    container: Some(id.to_string()),
                    pid,
                    running: true,
                    exit_code: None,
                    oom_killed: false,
                    started_at_ns: now_ns(),
                    finished_at_ns: 0,
                    ip: None,
                    ports: Vec::new(),
                };
                self.by_pid.insert(pid, exec_id.clone());
                self.procs.insert(
                    exec_id,
                    Proc {
                        state: state.clone(),
                        container: None,
                        tty,
                        open_stdin,
                        io: Some(io),
                        log: None,
                        draining_until: None,
                        early_stdin: Vec::new(),
                        early_close: false,
                    },
                );
                Response::Started(state)
            }
            Err(e) => {
                let code = e.exit_code();
                error(e.to_string(), code)
            }
        }
    }

    fn delete(&mut self, id: &str) -> Response {
        let Some(p) = self.procs.get(id) else {
            return not_found(id);
        };
        if p.state.running || p.io.is_some() {
            return error(
                format!("cannot remove container {id}: it is running; stop it first or use force"),
                125,
            );
        }
        self.procs.remove(id);
        let execs: Vec<String> = self
            .procs
            .iter()
            .filter(|(_, p)| p.state.container.as_deref() == Some(id) && p.io.is_none())
            .map(|(k, _)| k.clone())
            .collect();
        for e in execs {
            self.procs.remove(&e);
        }
        for c in self.conns.iter_mut().flatten() {
            if matches!(&c.mode, Mode::Attach { id: a, .. } if a == id) {
                c.close_after_flush = true;
                if c.out.is_empty() {
                    c.dead = true;
                }
            }
        }
        Response::Ok
    }

    fn read_output(&mut self, id: &str, k: usize) {
        let mut buf = vec![0u8; 64 * 1024];
        let Some(p) = self.procs.get_mut(id) else {
            return;
        };
        let Some(io) = p.io.as_mut() else { return };
        let Some(fd) = io.out[k].as_ref() else { return };
        let stream = if k == 0 { STREAM_STDOUT } else { STREAM_STDERR };
        let tty = io.tty;
        match fdio::read(fd.as_raw_fd(), &mut buf) {
            Transfer::Bytes(n) => {
                let data = &buf[..n];
                if let Some(log) = p.log.as_mut() {
                    if let Err(e) = log.write(stream, data) {
                        tracing::warn!(container = id, "log write: {e}");
                    }
                }
                let mut frame = Vec::with_capacity(n + 8);
                if !tty {
                    frame.extend_from_slice(&[stream, 0, 0, 0]);
                    frame.extend_from_slice(&(n as u32).to_be_bytes());
                }
                frame.extend_from_slice(data);
                let targets: Vec<usize> = self
                    .conns
                    .iter()
                    .enumerate()
                    .filter_map(|(i, c)| match c {
                        Some(Conn {
                            mode: Mode::Attach { id: a, .. },
                            dead: false,
                            ..
                        }) if a == id => Some(i),
                        _ => None,
                    })
                    .collect();
                for i in targets {
                    self.send(i, &frame);
                }
            }
            Transfer::WouldBlock => {}
            Transfer::Closed => {
                io.out[k] = None;
            }
        }
    }

    fn write_stdin(&mut self, id: &str) {
        let Some(io) = self.procs.get_mut(id).and_then(|p| p.io.as_mut()) else {
            return;
        };
        let Some(fd) = io.stdin.as_ref() else {
            io.stdin_buf.clear();
            return;
        };
        while !io.stdin_buf.is_empty() {
            match fdio::write(fd.as_raw_fd(), &io.stdin_buf) {
                Transfer::Bytes(n) => {
                    io.stdin_buf.drain(..n);
                }
                Transfer::WouldBlock => return,
                Transfer::Closed => {
                    io.stdin_buf.clear();
                    io.stdin = None;
                    return;
                }
            }
        }
        if io.stdin_close && !io.tty {
            io.stdin = None;
        }
    }

    fn on_signals(&mut self) {
        loop {
            let mut info: libc::signalfd_siginfo = unsafe_zeroed_siginfo();
            // SAFETY: reading one siginfo struct into memory we own.
            let n = unsafe {
                libc::read(
                    self.signals.as_raw_fd(),
                    (&mut info as *mut libc::signalfd_siginfo).cast(),
                    std::mem::size_of::<libc::signalfd_siginfo>(),
                )
            };
            if n <= 0 {
                break;
            }
            match info.ssi_signo as i32 {
                libc::SIGTERM | libc::SIGINT => self.stopping = true,
                _ => {}
            }
        }
        self.reap();
    }

    fn reap(&mut self) {
        loop {
            let mut status = 0;
            // SAFETY: waitpid with a valid status pointer.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return;
            }
            let code = if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else if libc::WIFSIGNALED(status) {
                128 + libc::WTERMSIG(status)
            } else {
                continue;
            };
            let Some(id) = self.by_pid.remove(&pid) else {
                // An orphan reparented to us (subreaper): nothing to record.
                continue;
            };
            self.on_exit(&id, code);
        }
    }

    fn on_exit(&mut self, id: &str, code: i32) {
        let Some(p) = self.procs.get_mut(id) else {
            return;
        };
        p.state.running = false;
        p.state.exit_code = Some(code);
        p.state.finished_at_ns = now_ns();
        if let Some(c) = p.container.as_mut() {
            let cgroup = c.spawned.take().map(|spawned| {
                p.state.oom_killed = spawned.cgroup.oom_killed();
                // The pid namespace is gone with its init; anything left in the cgroup (a
                // process that escaped it cannot exist, but be thorough) is killed.
                let _ = spawned.cgroup.kill_all(libc::SIGKILL);
                spawned.cgroup
            });
            let netns_held = c.netns_held.take();
            self.exit_releases.push(ExitRelease {
                id: id.to_string(),
                cgroup,
                netns: c.netns.take(),
                netns_reusable: netns_held.is_some() && !c.spec.may_reconfigure_network(),
                netns_held,
            });
        }
        p.draining_until = Some(Instant::now() + DRAIN_GRACE);
    }

    /// Releases what the round's exited containers held (see `exit_releases`).
    fn release_exited(&mut self) {
        for r in std::mem::take(&mut self.exit_releases) {
            if let Some(cgroup) = r.cgroup {
                if let Err(e) = cgroup.remove() {
                    tracing::warn!(container = r.id, "removing cgroup: {e}");
                }
            }
            release_net(self.net.as_mut(), &r.id, r.netns);
            if let (Some(fd), true, Some(net)) = (r.netns_held, r.netns_reusable, self.net.as_mut())
            {
                net.give_back_none(fd);
            }
        }
    }

    /// Processes that exited and whose output is drained (or the grace ran out) are finished:
    /// log flushed, attach connections closed, subscribers told.
    fn finish_drained(&mut self) {
        let now = Instant::now();
        let done: Vec<String> = self
            .procs
            .iter()
            .filter(|(_, p)| {
                p.draining_until.is_some_and(|d| {
                    d <= now
                        || p.io
                            .as_ref()
                            .is_none_or(|io| io.out.iter().all(Option::is_none))
                })
            })
            .map(|(k, _)| k.clone())
            .collect();
        for id in done {
            let Some(p) = self.procs.get_mut(&id) else {
                continue;
            };
            p.draining_until = None;
            p.io = None;
            if let Some(mut log) = p.log.take() {
                let _ = log.flush_partial();
            }
            let state = p.state.clone();
            for i in 0..self.conns.len() {
                let Some(c) = self.conns[i].as_mut() else {
                    continue;
                };
                if matches!(&c.mode, Mode::Attach { id: a, .. } if *a == id) {
                    c.close_after_flush = true;
                    if c.out.is_empty() {
                        c.dead = true;
                    }
                }
            }
            let mut line = serde_json::to_vec(&Event::Exited(state)).unwrap_or_default();
            line.push(b'\n');
            let subscribers: Vec<usize> = (0..self.conns.len())
                .filter(|&i| {
                    self.conns[i]
                        .as_ref()
                        .is_some_and(|c| matches!(c.mode, Mode::Events))
                })
                .collect();
            for i in subscribers {
                self.send(i, &line);
            }
        }
    }

    fn shutdown(&mut self) {
        tracing::info!("monitor stopping: killing running containers");
        let running: Vec<(String, i32)> = self
            .procs
            .iter()
            .filter(|(_, p)| p.state.running && p.container.is_some())
            .map(|(k, p)| (k.clone(), p.state.pid))
            .collect();
        for (_, pid) in &running {
            // SAFETY: kill with a tracked pid.
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
        let until = Instant::now() + Duration::from_secs(5);
        while self
            .procs
            .values()
            .any(|p| p.state.running && p.container.is_some())
            && Instant::now() < until
        {
            self.reap();
            std::thread::sleep(Duration::from_millis(5));
        }
        self.release_exited();
        if let Some(net) = self.net.as_mut() {
            net.drain_pool();
        }
        // Containers' own cgroups went with them; the parent goes too when it is empty.
        let _ = hb_spawn::remove_parent_if_empty(&self.config.cgroup_parent);
        let _ = std::fs::remove_file(&self.config.socket);
        let _ = std::fs::remove_file(self.config.socket.with_extension("pid"));
    }
}

fn unreachable_host() -> Result<PathBuf, hb_net::NetError> {
    Err(hb_net::NetError::Config(
        "host network has no namespace".into(),
    ))
}

fn release_net(net: Option<&mut NetPool>, id: &str, netns: Option<PathBuf>) {
    if let (Some(net), Some(ns)) = (net, netns) {
        if let Err(e) = net.release(id, &ns) {
            tracing::warn!(container = id, "releasing network: {e}");
        }
    }
}

/// Writes the container's /etc/hosts over the file the daemon made (in place and cut to
/// length: truncating to zero would free its block, a synchronous discard on a filesystem
/// mounted with `discard`; see hb-rootfs's `write_mounted_files`).
fn write_hosts(path: &Path, hostname: &str, ip: Option<&str>) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut text = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n\
         ff02::2\tip6-allrouters\n",
    );
    if let Some(ip) = ip {
        text.push_str(&format!("{ip}\t{hostname}\n"));
    }
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    f.write_all_at(text.as_bytes(), 0)?;
    f.set_len(text.len() as u64)
}

/// The process's stdio: with a TTY a terminal of `console_size` (rows, columns; 24x80 when
/// absent) that the process allocates itself, else pipes (stdin a pipe only with `open_stdin`).
fn make_stdio(
    tty: bool,
    open_stdin: bool,
    console_size: Option<(u16, u16)>,
) -> std::io::Result<(Io, Stdio)> {
    if tty {
        // The process allocates its pty itself, from the container's devpts, so that its name
        // resolves inside (one from ours would not: `tty` would say "not a tty"); the spawner
        // hands back the master, which `terminal_io` wires in. With a TTY all three stdio fds
        // are the terminal, as in Docker, stdin open or not: without -i no input ever arrives.
        let io = Io {
            out: [None, None],
            stdin: None,
            stdin_buf: Vec::new(),
            stdin_close: false,
            master: None,
            tty: true,
        };
        let (rows, cols) = console_size
            .filter(|&(r, c)| r > 0 && c > 0)
            .unwrap_or((24, 80));
        return Ok((io, Stdio::Terminal(WindowSize { rows, cols })));
    }
    let (out_r, out_w) = fdio::pipe()?;
    let (err_r, err_w) = fdio::pipe()?;
    fdio::set_nonblocking(&out_r)?;
    fdio::set_nonblocking(&err_r)?;
    let (stdin_child, stdin_ours) = if open_stdin {
        let (r, w) = fdio::pipe()?;
        fdio::set_nonblocking(&w)?;
        (r, Some(w))
    } else {
        (fdio::dev_null()?, None)
    };
    Ok((
        Io {
            out: [Some(out_r), Some(err_r)],
            stdin: stdin_ours,
            stdin_buf: Vec::new(),
            stdin_close: false,
            master: None,
            tty: false,
        },
        Stdio::Fds {
            stdin: stdin_child,
            stdout: out_w,
            stderr: err_w,
        },
    ))
}

/// Wires a started process's pty master into its `Io`: output is read from it, stdin (with
/// `-i`) written to it, resizes applied to it. Reads end with EIO once the process and
/// everything that inherited the terminal are gone.
fn terminal_io(io: &mut Io, master: OwnedFd, open_stdin: bool) -> std::io::Result<()> {
    fdio::set_nonblocking(&master)?;
    io.out[0] = Some(master.try_clone()?);
    if open_stdin {
        io.stdin = Some(master.try_clone()?);
    }
    io.master = Some(master);
    Ok(())
}

/// Waits for a child just killed (a start taken back), so that it never shows up as an exit.
fn reap_now(pid: i32) {
    let mut status = 0;
    // SAFETY: waiting for our own child, into a status we own.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0
        && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
    {}
}

fn unsafe_zeroed_siginfo() -> libc::signalfd_siginfo {
    // SAFETY: signalfd_siginfo is plain old data; all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}

/// Blocks SIGCHLD, SIGTERM and SIGINT (ignoring SIGPIPE) and returns a signalfd for them.
fn signalfd() -> Result<OwnedFd, MonitorError> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain signal-mask manipulation on this (single) thread.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        if libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return Err(MonitorError::os("sigprocmask"));
        }
        let fd = libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC);
        if fd < 0 {
            return Err(MonitorError::os("signalfd"));
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

#[cfg(test)]
mod tests {
    use super::write_hosts;

    #[test]
    fn hosts_written_over_a_longer_file_keep_nothing_of_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("hosts");
        write_hosts(&p, "web", Some("10.89.0.7")).expect("write");
        let with_ip = std::fs::read_to_string(&p).expect("read");
        assert!(with_ip.starts_with("127.0.0.1\tlocalhost\n"), "{with_ip}");
        assert!(
            with_ip.ends_with("ff02::2\tip6-allrouters\n10.89.0.7\tweb\n"),
            "{with_ip}"
        );
        let ino = std::os::unix::fs::MetadataExt::ino(&p.metadata().expect("stat"));
        write_hosts(&p, "web", None).expect("rewrite");
        let without = std::fs::read_to_string(&p).expect("read");
        assert_eq!(format!("{without}10.89.0.7\tweb\n"), with_ip);
        let again = std::os::unix::fs::MetadataExt::ino(&p.metadata().expect("stat"));
        assert_eq!(again, ino, "written in place");
    }
}
