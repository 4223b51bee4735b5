//! A container's log in Docker's json-file format: one JSON object per line,
//! `{"log":"text\n","stream":"stdout","time":"2026-11-27T01:02:03.456789012Z"}`, bounded by size
//! and rotated (`path`, `path.1`, … `path.N-1`), so a container that writes gigabytes never fills
//! the disk. Output is split at newlines as Docker does; a partial line is held until its newline,
//! until it reaches 16 KiB, or until the stream ends.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::protocol::LogConfig;

/// Docker's cap on one log entry; a longer line is split.
const MAX_ENTRY: usize = 16 * 1024;

/// Appends entries to a container's log file, rotating it.
pub struct LogWriter {
    config: LogConfig,
    file: Option<File>,
    size: u64,
    /// Partial line per stream (index 0 = stdout, 1 = stderr).
    partial: [Vec<u8>; 2],
}

impl LogWriter {
    /// Opens (appending to) the current log file.
    pub fn open(config: LogConfig) -> io::Result<LogWriter> {
        let mut w = LogWriter {
            config,
            file: None,
            size: 0,
            partial: [Vec::new(), Vec::new()],
        };
        w.reopen()?;
        Ok(w)
    }

    fn reopen(&mut self) -> io::Result<()> {
        if let Some(dir) = self.config.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.config.path)?;
        self.size = file.metadata()?.len();
        self.file = Some(file);
        Ok(())
    }

    /// Adds output of `stream` (1 stdout, 2 stderr).
    pub fn write(&mut self, stream: u8, data: &[u8]) -> io::Result<()> {
        let slot = usize::from(stream == crate::protocol::STREAM_STDERR);
        let mut rest = data;
        while !rest.is_empty() {
            match rest.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    let (line, tail) = rest.split_at(i + 1);
                    let mut entry = std::mem::take(&mut self.partial[slot]);
                    entry.extend_from_slice(line);
                    self.entry(slot, &entry)?;
                    rest = tail;
                }
                None => {
                    self.partial[slot].extend_from_slice(rest);
                    rest = &[];
                }
            }
            while self.partial[slot].len() >= MAX_ENTRY {
                let tail = self.partial[slot].split_off(MAX_ENTRY);
                let head = std::mem::replace(&mut self.partial[slot], tail);
                self.entry(slot, &head)?;
            }
        }
        Ok(())
    }

    /// Writes out held partial lines (the stream ended).
    pub fn flush_partial(&mut self) -> io::Result<()> {
        for slot in 0..2 {
            if !self.partial[slot].is_empty() {
                let entry = std::mem::take(&mut self.partial[slot]);
                self.entry(slot, &entry)?;
            }
        }
        Ok(())
    }

    fn entry(&mut self, slot: usize, text: &[u8]) -> io::Result<()> {
        let line = format_entry(if slot == 0 { "stdout" } else { "stderr" }, text);
        if self.size > 0 && self.size + line.len() as u64 > self.config.max_size {
            self.rotate()?;
        }
        if let Some(f) = self.file.as_mut() {
            f.write_all(line.as_bytes())?;
            self.size += line.len() as u64;
        }
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        let keep = self.config.max_files.max(1);
        if keep == 1 {
            std::fs::remove_file(&self.config.path).or_else(ignore_missing)?;
        } else {
            for n in (1..keep).rev() {
                let from = rotated(&self.config.path, n - 1);
                let to = rotated(&self.config.path, n);
                std::fs::rename(&from, &to).or_else(ignore_missing)?;
            }
        }
        self.reopen()
    }
}

fn ignore_missing(e: io::Error) -> io::Result<()> {
    if e.kind() == io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

/// The `n`th rotated file (`n == 0` is the current one).
pub fn rotated(path: &Path, n: u32) -> PathBuf {
    if n == 0 {
        path.to_path_buf()
    } else {
        let mut s = path.as_os_str().to_os_string();
        s.push(format!(".{n}"));
        PathBuf::from(s)
    }
}

/// One json-file line.
fn format_entry(stream: &str, text: &[u8]) -> String {
    let log = String::from_utf8_lossy(text);
    let mut out = String::with_capacity(log.len() + 80);
    out.push_str("{\"log\":");
    out.push_str(&serde_json::to_string(&log).unwrap_or_else(|_| "\"\"".into()));
    out.push_str(",\"stream\":\"");
    out.push_str(stream);
    out.push_str("\",\"time\":\"");
    out.push_str(&rfc3339_nanos(SystemTime::now()));
    out.push_str("\"}\n");
    out
}

/// `2026-11-27T01:02:03.456789012Z` for a system time (UTC).
pub fn rfc3339_nanos(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        d.subsec_nanos()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path, max_size: u64, max_files: u32) -> LogConfig {
        LogConfig {
            path: dir.join("c-json.log"),
            max_size,
            max_files,
        }
    }

    fn lines(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn splits_lines_and_keeps_partials_until_newline() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = LogWriter::open(config(dir.path(), 1 << 20, 3)).unwrap();
        w.write(1, b"hello\nwor").unwrap();
        w.write(2, b"oops\n").unwrap();
        w.write(1, b"ld\n").unwrap();
        w.write(1, b"tail").unwrap();
        w.flush_partial().unwrap();
        let got = lines(&dir.path().join("c-json.log"));
        let logs: Vec<(&str, &str)> = got
            .iter()
            .map(|v| (v["stream"].as_str().unwrap(), v["log"].as_str().unwrap()))
            .collect();
        assert_eq!(
            logs,
            vec![
                ("stdout", "hello\n"),
                ("stderr", "oops\n"),
                ("stdout", "world\n"),
                ("stdout", "tail")
            ]
        );
        assert!(got[0]["time"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn rotation_bounds_the_total_size() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = LogWriter::open(config(dir.path(), 4096, 3)).unwrap();
        for i in 0..10_000 {
            w.write(1, format!("line {i}\n").as_bytes()).unwrap();
        }
        let base = dir.path().join("c-json.log");
        let total: u64 = (0..5)
            .filter_map(|n| std::fs::metadata(rotated(&base, n)).ok())
            .map(|m| m.len())
            .sum();
        assert!(total <= 3 * 4096, "{total} bytes kept");
        assert!(!rotated(&base, 3).exists());
        let last = lines(&base);
        assert_eq!(last.last().unwrap()["log"], "line 9999\n");
    }

    #[test]
    fn long_lines_are_split_at_16k() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = LogWriter::open(config(dir.path(), 1 << 20, 1)).unwrap();
        w.write(1, &vec![b'x'; 40_000]).unwrap();
        w.flush_partial().unwrap();
        let got = lines(&dir.path().join("c-json.log"));
        let sizes: Vec<usize> = got
            .iter()
            .map(|v| v["log"].as_str().unwrap().len())
            .collect();
        assert_eq!(sizes, vec![16384, 16384, 40_000 - 32768]);
    }

    #[test]
    fn dates_are_civil() {
        assert_eq!(rfc3339_nanos(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_795_000_000);
        assert_eq!(rfc3339_nanos(t), "2026-11-18T11:06:40.000000000Z");
    }
}
