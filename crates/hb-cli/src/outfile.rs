//! Output to a path the user names (`hb save -o`, `hb predict gen-trace -o`): a regular file
//! (or a new one) is written beside the target and renamed into place on success, so a failed
//! run never leaves half a file under the name; a device, FIFO or `/dev/stdout` is written
//! straight through, because renaming over it would replace it with a regular file.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// Where an output goes and, for a regular file, the temp file that becomes it.
pub struct OutputFile {
    path: PathBuf,
    tmp: Option<PathBuf>,
}

impl OutputFile {
    /// Opens the output for `path`: the file to write and what to do when done.
    pub fn create(path: &Path) -> anyhow::Result<(std::fs::File, OutputFile)> {
        if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .with_context(|| format!("opening {}", path.display()))?;
            return Ok((
                f,
                OutputFile {
                    path: path.to_path_buf(),
                    tmp: None,
                },
            ));
        }
        let mut name = path.as_os_str().to_owned();
        name.push(".partial");
        let tmp = PathBuf::from(name);
        let f =
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        Ok((
            f,
            OutputFile {
                path: path.to_path_buf(),
                tmp: Some(tmp),
            },
        ))
    }

    /// Everything was written (and the file closed): the output takes its name.
    pub fn commit(self) -> anyhow::Result<()> {
        if let Some(tmp) = &self.tmp {
            std::fs::rename(tmp, &self.path)
                .with_context(|| format!("renaming to {}", self.path.display()))?;
        }
        Ok(())
    }

    /// The run failed: the partial file goes.
    pub fn abandon(self) {
        if let Some(tmp) = &self.tmp {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn regular_files_appear_whole_and_fifos_are_written_through() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("out.tar");
        let (mut f, out) = OutputFile::create(&p).expect("create");
        f.write_all(b"data").expect("write");
        assert!(!p.exists(), "visible before commit");
        drop(f);
        out.commit().expect("commit");
        assert_eq!(std::fs::read(&p).expect("read"), b"data");
        assert!(!dir.path().join("out.tar.partial").exists());

        let (_, out) = OutputFile::create(&dir.path().join("gone")).expect("create");
        out.abandon();
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 1);

        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().expect("utf-8")).expect("path");
        // SAFETY: mkfifo on a path in our own temp dir.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::read(fifo).expect("read fifo"))
        };
        let (mut f, out) = OutputFile::create(&fifo).expect("open fifo");
        f.write_all(b"through").expect("write");
        drop(f);
        out.commit().expect("commit");
        assert!(std::os::unix::fs::FileTypeExt::is_fifo(
            &std::fs::metadata(&fifo).expect("stat").file_type()
        ));
        assert_eq!(reader.join().expect("reader"), b"through");
    }
}
