//! The daemon's side of the monitor socket: starting the monitor process when none answers,
//! requests, attach streams and the event subscription (protocol in `hb_monitor::protocol`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context};
use hb_monitor::protocol::{Event, Request, Response};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// Talks to the monitor at one socket path.
#[derive(Clone, Debug)]
pub struct MonitorClient {
    socket: PathBuf,
}

impl MonitorClient {
    /// A client for the monitor at `socket` (nothing is connected yet).
    pub fn new(socket: PathBuf) -> MonitorClient {
        MonitorClient { socket }
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Makes sure a monitor answers, starting `hyperboxd --monitor` detached when none does.
    /// Returns whether a new monitor was started (its predecessor's containers are gone).
    pub async fn ensure_running(&self, args: &[String], log: &Path) -> anyhow::Result<bool> {
        if matches!(self.request(&Request::Ping).await, Ok(Response::Ok)) {
            return Ok(false);
        }
        let exe = std::env::current_exe().context("locating the hyperboxd binary")?;
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let err_file = log_file
            .try_clone()
            .context("duplicating the monitor log fd")?;
        let mut cmd = std::process::Command::new(exe);
        cmd.arg("--monitor")
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(log_file)
            .stderr(err_file);
        // Its own session: the daemon's terminal or process group dying must not take it along.
        use std::os::unix::process::CommandExt;
        // SAFETY: setsid is async-signal-safe and touches only the child.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let mut child = cmd.spawn().context("starting the container monitor")?;
        for _ in 0..500 {
            if matches!(self.request(&Request::Ping).await, Ok(Response::Ok)) {
                // The monitor runs on by itself; don't leave a zombie when it exits later.
                std::thread::spawn(move || child.wait());
                return Ok(true);
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(anyhow!(
                    "the container monitor exited at start ({status}); see {}",
                    log.display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err(anyhow!(
            "the container monitor did not answer on {} within 5 s; see {}",
            self.socket.display(),
            log.display()
        ))
    }

    async fn connect(&self) -> anyhow::Result<UnixStream> {
        UnixStream::connect(&self.socket)
            .await
            .with_context(|| format!("connecting to the monitor at {}", self.socket.display()))
    }

    async fn exchange(
        stream: &mut BufReader<UnixStream>,
        request: &Request,
    ) -> anyhow::Result<Response> {
        let mut line = serde_json::to_vec(request).context("encoding a monitor request")?;
        line.push(b'\n');
        stream
            .get_mut()
            .write_all(&line)
            .await
            .context("writing to the monitor")?;
        let mut answer = String::new();
        let n = stream
            .read_line(&mut answer)
            .await
            .context("reading from the monitor")?;
        if n == 0 {
            return Err(anyhow!("the monitor closed the connection"));
        }
        serde_json::from_str(&answer).context("decoding the monitor's answer")
    }

    /// One request, one response.
    pub async fn request(&self, request: &Request) -> anyhow::Result<Response> {
        let mut stream = BufReader::new(self.connect().await?);
        Self::exchange(&mut stream, request).await
    }

    /// Sends `request` (an `Attach`, or an `Exec` with attach) and, on `Ok`/`Started`, returns
    /// the connection, now carrying the process's stdio.
    pub async fn attach(&self, request: &Request) -> anyhow::Result<(Response, UnixStream)> {
        let mut stream = BufReader::new(self.connect().await?);
        let response = Self::exchange(&mut stream, request).await?;
        if !stream.buffer().is_empty() {
            // The monitor may already have sent output after its answer: keep it in front.
            let early = stream.buffer().to_vec();
            let inner = stream.into_inner();
            return Ok((response, prepend(inner, early).await?));
        }
        Ok((response, stream.into_inner()))
    }

    /// Subscribes to events; the receiver ends when the monitor goes away.
    pub async fn subscribe(&self) -> anyhow::Result<tokio::sync::mpsc::Receiver<Event>> {
        let mut stream = BufReader::new(self.connect().await?);
        match Self::exchange(&mut stream, &Request::Subscribe).await? {
            Response::Ok => {}
            other => return Err(anyhow!("monitor refused the subscription: {other:?}")),
        }
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        tokio::spawn(async move {
            let mut line = String::new();
            loop {
                line.clear();
                match stream.read_line(&mut line).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => match serde_json::from_str::<Event>(&line) {
                        Ok(ev) => {
                            if tx.send(ev).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => tracing::warn!("undecodable monitor event: {e}"),
                    },
                }
            }
        });
        Ok(rx)
    }
}

/// A stream that yields `early` before the socket's own bytes: a socketpair relay would cost a
/// task, so instead the bytes are pushed back through a fresh pair only in this rare case.
async fn prepend(inner: UnixStream, early: Vec<u8>) -> anyhow::Result<UnixStream> {
    let (ours, theirs) = UnixStream::pair().context("socketpair")?;
    let (mut a_r, mut a_w) = ours.into_split();
    let (mut b_r, mut b_w) = inner.into_split();
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut a_r, &mut b_w).await;
        let _ = b_w.shutdown().await;
    });
    tokio::spawn(async move {
        if a_w.write_all(&early).await.is_ok() {
            let _ = tokio::io::copy(&mut b_r, &mut a_w).await;
        }
        let _ = a_w.shutdown().await;
    });
    Ok(theirs)
}

/// Docker's exit code and message for a failed start, from the monitor's answer.
pub fn response_error(response: Response) -> Option<(String, i32, bool)> {
    match response {
        Response::Error {
            message,
            exit_code,
            not_found,
        } => Some((message, exit_code, not_found)),
        _ => None,
    }
}
