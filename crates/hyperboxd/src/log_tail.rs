//! [`LogTail`]: reads a container's json-file log (written by the monitor, rotated beside it)
//! through an open descriptor, for `logs` and `logs --follow`. Holding the file open is what
//! makes a follower get every line: a client such as docker-py asks for `logs?follow=1`, waits
//! for the exit and removes the container before it reads the stream, and the monitor renames
//! the file on rotation. Whatever happens to the path, the lines written to the file we hold
//! are read to its end before we move on.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Rotated files kept beside the current one (`.1` … `.N`): the monitor keeps
/// [`crate::containers::LOG_MAX_FILES`] files in all, the current one included.
const ROTATED_FILES: u32 = crate::containers::LOG_MAX_FILES - 1;

/// The reading position in a container's current log file.
#[derive(Debug)]
pub struct LogTail {
    path: PathBuf,
    file: Option<File>,
    /// Bytes of `file` already handed out (always at a line boundary).
    offset: u64,
}

impl LogTail {
    /// Every whole line logged so far, rotated files oldest first and then the current file,
    /// and the tail positioned just after them.
    pub fn open(path: &Path) -> (String, LogTail) {
        let mut text = String::new();
        for n in (1..=ROTATED_FILES).rev() {
            if let Ok(mut f) = File::open(hb_monitor::logfile::rotated(path, n)) {
                let mut buf = Vec::new();
                if f.read_to_end(&mut buf).is_ok() {
                    text.push_str(&String::from_utf8_lossy(whole_lines(&buf)));
                }
            }
        }
        let mut tail = LogTail {
            path: path.to_path_buf(),
            file: None,
            offset: 0,
        };
        text.push_str(&tail.read_new());
        (text, tail)
    }

    /// Whole lines written since the last read. After a rotation the old file is read to its
    /// end first, then the new one from its start; once the path is gone (the container was
    /// removed) the file still held is read to its end.
    pub fn read_new(&mut self) -> String {
        let mut text = String::new();
        // Bounded: each pass either stays on the file it read or moves to a newer one.
        for _ in 0..4 {
            if self.file.is_none() {
                match File::open(&self.path) {
                    Ok(f) => {
                        self.file = Some(f);
                        self.offset = 0;
                    }
                    Err(_) => return text,
                }
            }
            let Some(file) = self.file.as_mut() else {
                return text;
            };
            if let Some(new) = read_lines_from(file, self.offset) {
                self.offset += new.len() as u64;
                text.push_str(&String::from_utf8_lossy(&new));
            }
            let ours = file.metadata().ok().map(|m| (m.dev(), m.ino()));
            let current = std::fs::metadata(&self.path)
                .ok()
                .map(|m| (m.dev(), m.ino()));
            match current {
                Some(id) if Some(id) == ours => return text,
                // Rotated: the monitor writes only to the new file now, and ours was read to
                // its end above (after the rename, so nothing written before it is missed).
                Some(_) => self.file = None,
                // Removed: what we hold is all there will be.
                None => return text,
            }
        }
        text
    }
}

/// The whole lines of `file` from `offset` on (a partial last line is left for next time).
fn read_lines_from(file: &mut File, offset: u64) -> Option<Vec<u8>> {
    file.seek(SeekFrom::Start(offset)).ok()?;
    let mut buf = Vec::new();
    file.read_to_end(&mut buf).ok()?;
    let end = whole_lines(&buf).len();
    buf.truncate(end);
    Some(buf)
}

/// `buf` up to and including its last newline.
fn whole_lines(buf: &[u8]) -> &[u8] {
    let end = buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    &buf[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn append(path: &Path, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn follows_appends_rotation_and_removal_without_losing_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("c.log");
        append(&hb_monitor::logfile::rotated(&log, 1), "old\n");
        append(&log, "a\npart");
        let (first, mut tail) = LogTail::open(&log);
        assert_eq!(first, "old\na\n");
        append(&log, "ial\nb\n");
        assert_eq!(tail.read_new(), "partial\nb\n");
        // Rotation: a line lands in the old file just before the rename, then the new file.
        append(&log, "c\n");
        std::fs::rename(&log, hb_monitor::logfile::rotated(&log, 1)).unwrap();
        append(&log, "d\n");
        assert_eq!(tail.read_new(), "c\nd\n");
        // Removal after a last line: the line still arrives.
        append(&log, "e\n");
        std::fs::remove_file(&log).unwrap();
        assert_eq!(tail.read_new(), "e\n");
        assert_eq!(tail.read_new(), "");
    }

    #[test]
    fn a_missing_log_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let (text, mut tail) = LogTail::open(&dir.path().join("none.log"));
        assert_eq!(text, "");
        assert_eq!(tail.read_new(), "");
    }
}
