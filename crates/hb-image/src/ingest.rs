//! Layer ingest: decompresses a layer blob and feeds its uncompressed tar stream into the
//! content store, marking tar headers as inline metadata and each regular file's bytes as one
//! content segment, so identical files share chunks across layers and images (decision 2 of
//! docs/design.md). Every byte of the stream is kept, in order, so the exact tar (and its
//! diff_id) can be reproduced. Nothing is unpacked to the filesystem here.

use std::io::{self, BufReader, Read};

use hb_store::{BlobInfo, Store};

use crate::ImageError;

const BLOCK: usize = 512;
/// Bound on pax / GNU long-name metadata held in memory for one entry.
const MAX_META_ENTRY: u64 = 1 << 20;

/// How a layer blob is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip (one or more members).
    Gzip,
    /// zstd.
    Zstd,
}

impl Compression {
    /// The compression a layer media type announces (Docker v2 schema 2 and OCI types).
    pub fn from_media_type(media_type: &str) -> Result<Compression, ImageError> {
        match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar" => Ok(Compression::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip" => {
                Ok(Compression::Gzip)
            }
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.docker.image.rootfs.diff.tar.zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => {
                Ok(Compression::Zstd)
            }
            other => Err(ImageError::UnsupportedMediaType(other.to_string())),
        }
    }

    /// Guesses the compression from the first bytes (for archives, whose layers are unlabelled).
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// Decompresses `blob` and stores its tar stream; the result is verified against
/// `expected_diff_id` ("sha256:…") when given. On any error nothing is committed.
pub fn ingest_layer(
    store: &Store,
    blob: impl Read + Send,
    compression: Compression,
    expected_diff_id: Option<&str>,
) -> Result<BlobInfo, ImageError> {
    let mut writer = store.writer();
    let mut split = |decoded: &mut dyn Read| {
        split_tar(decoded, |piece| match piece {
            Piece::Inline(b) => writer.write_inline(b).map_err(ImageError::from),
            Piece::Content(b) => writer.write_content(b).map_err(ImageError::from),
            Piece::EndContent => writer.end_content().map_err(ImageError::from),
        })
    };
    match compression {
        Compression::None => split(&mut BufReader::with_capacity(256 * 1024, blob))?,
        // Decompression is the longest serial step of an ingest: run it on its own thread so it
        // overlaps hashing and chunking (measured: BENCHMARKS.md, "pipelined inflate").
        Compression::Gzip => std::thread::scope(|scope| {
            let decoder =
                flate2::read::MultiGzDecoder::new(BufReader::with_capacity(256 * 1024, blob));
            split(&mut Pipelined::spawn(scope, decoder))
        })?,
        Compression::Zstd => std::thread::scope(|scope| {
            let decoder = zstd::stream::read::Decoder::new(blob)
                .map_err(|e| ImageError::io("starting zstd decoder", e))?;
            split(&mut Pipelined::spawn(scope, decoder))
        })?,
    }
    Ok(writer.finish(expected_diff_id)?)
}

/// Reads a `Read` on a scoped thread, handing its output over in 256 KiB pieces.
struct Pipelined {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    current: Vec<u8>,
    pos: usize,
}

impl Pipelined {
    fn spawn<'scope, 'env, R: Read + Send + 'scope>(
        scope: &'scope std::thread::Scope<'scope, 'env>,
        mut source: R,
    ) -> Pipelined {
        let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<Vec<u8>>>(8);
        scope.spawn(move || loop {
            let mut buf = vec![0u8; 256 * 1024];
            match read_full(&mut source, &mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    buf.truncate(n);
                    // A closed receiver means the consumer stopped: stop too.
                    if tx.send(Ok(buf)).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    break;
                }
            }
        });
        Pipelined {
            rx,
            current: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for Pipelined {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            match self.rx.recv() {
                Ok(Ok(v)) => {
                    self.current = v;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// One classified piece of a tar stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    /// Headers, padding, metadata entries, the end-of-archive blocks and anything after them.
    Inline(&'a [u8]),
    /// Bytes of one regular file.
    Content(&'a [u8]),
    /// The current file's bytes are complete.
    EndContent,
}

/// Walks a tar stream and hands every byte, in order, to `sink` as inline metadata or file
/// content. Checks header checksums and refuses truncated streams.
pub fn split_tar(
    input: &mut dyn Read,
    mut sink: impl FnMut(Piece<'_>) -> Result<(), ImageError>,
) -> Result<(), ImageError> {
    let mut offset: u64 = 0;
    let mut block = [0u8; BLOCK];
    let mut buf = vec![0u8; 256 * 1024];
    let mut pax_size: Option<u64> = None;
    loop {
        let n = read_full(input, &mut block).map_err(|e| tar_io(offset, e))?;
        if n == 0 {
            // A stream that ends without end-of-archive blocks; Docker accepts these.
            return Ok(());
        }
        if n < BLOCK {
            return Err(malformed(offset, "truncated header block"));
        }
        if block.iter().all(|&b| b == 0) {
            // End of archive: keep it and whatever trails it, byte for byte.
            sink(Piece::Inline(&block))?;
            loop {
                let n = input.read(&mut buf).map_err(|e| tar_io(offset, e))?;
                if n == 0 {
                    return Ok(());
                }
                sink(Piece::Inline(&buf[..n]))?;
            }
        }
        verify_checksum(&block).map_err(|r| malformed(offset, &r))?;
        let header = tar::Header::from_byte_slice(&block);
        let kind = header.entry_type();
        let header_size = header
            .entry_size()
            .map_err(|e| malformed(offset, &e.to_string()))?;
        sink(Piece::Inline(&block))?;
        offset += BLOCK as u64;
        // Old-GNU sparse headers may chain extension blocks before the data.
        let mut extended = kind.is_gnu_sparse() && block[482] != 0;
        while extended {
            let n = read_full(input, &mut block).map_err(|e| tar_io(offset, e))?;
            if n < BLOCK {
                return Err(malformed(offset, "truncated sparse extension block"));
            }
            extended = block[504] != 0;
            sink(Piece::Inline(&block))?;
            offset += BLOCK as u64;
        }
        let size = match kind {
            tar::EntryType::XHeader | tar::EntryType::XGlobalHeader => header_size,
            _ => pax_size.take().unwrap_or(header_size),
        };
        if kind.is_file() || kind.is_gnu_sparse() || kind == tar::EntryType::Continuous {
            copy_exact(input, size, &mut buf, offset, |b| sink(Piece::Content(b)))?;
            sink(Piece::EndContent)?;
        } else if kind == tar::EntryType::XHeader {
            if size > MAX_META_ENTRY {
                return Err(malformed(offset, "pax header larger than 1 MiB"));
            }
            let mut data = vec![0u8; size as usize];
            let n = read_full(input, &mut data).map_err(|e| tar_io(offset, e))?;
            if n < data.len() {
                return Err(malformed(offset, "truncated pax header"));
            }
            pax_size = pax_size_record(&data);
            sink(Piece::Inline(&data))?;
        } else {
            if matches!(
                kind,
                tar::EntryType::GNULongName | tar::EntryType::GNULongLink
            ) && size > MAX_META_ENTRY
            {
                return Err(malformed(offset, "GNU long name larger than 1 MiB"));
            }
            copy_exact(input, size, &mut buf, offset, |b| sink(Piece::Inline(b)))?;
        }
        offset += size;
        let pad = (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64;
        if pad > 0 {
            let mut padding = [0u8; BLOCK];
            let n =
                read_full(input, &mut padding[..pad as usize]).map_err(|e| tar_io(offset, e))?;
            if n < pad as usize {
                return Err(malformed(offset, "truncated entry padding"));
            }
            sink(Piece::Inline(&padding[..pad as usize]))?;
            offset += pad;
        }
    }
}

fn pax_size_record(data: &[u8]) -> Option<u64> {
    tar::PaxExtensions::new(data)
        .filter_map(Result::ok)
        .find(|ext| ext.key_bytes() == b"size")
        .and_then(|ext| ext.value().ok()?.parse().ok())
}

/// The ustar checksum: the header's bytes summed with the checksum field read as spaces.
fn verify_checksum(block: &[u8; BLOCK]) -> Result<(), String> {
    let field = &block[148..156];
    let text = std::str::from_utf8(field)
        .map_err(|_| "checksum field is not text".to_string())?
        .trim_matches(|c: char| c == '\0' || c == ' ');
    let stored =
        u32::from_str_radix(text, 8).map_err(|_| format!("bad checksum field {text:?}"))?;
    let sum: u32 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                b' ' as u32
            } else {
                b as u32
            }
        })
        .sum();
    if sum == stored {
        Ok(())
    } else {
        Err(format!("header checksum {stored:o} does not match {sum:o}"))
    }
}

fn copy_exact(
    input: &mut dyn Read,
    mut remaining: u64,
    buf: &mut [u8],
    offset: u64,
    mut sink: impl FnMut(&[u8]) -> Result<(), ImageError>,
) -> Result<(), ImageError> {
    while remaining > 0 {
        let want = remaining.min(buf.len() as u64) as usize;
        let n = input
            .read(&mut buf[..want])
            .map_err(|e| tar_io(offset, e))?;
        if n == 0 {
            return Err(malformed(offset, "stream ends inside an entry's data"));
        }
        sink(&buf[..n])?;
        remaining -= n as u64;
    }
    Ok(())
}

fn read_full(input: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn malformed(offset: u64, reason: &str) -> ImageError {
    ImageError::MalformedTar {
        offset,
        reason: reason.to_string(),
    }
}

fn tar_io(offset: u64, e: io::Error) -> ImageError {
    ImageError::io(format!("reading layer stream at byte {offset}"), e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_tar() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "a.txt", &b"hello"[..]).unwrap();
        let mut d = tar::Header::new_gnu();
        d.set_entry_type(tar::EntryType::Directory);
        d.set_size(0);
        d.set_cksum();
        b.append_data(&mut d, "dir/", &b""[..]).unwrap();
        let long = format!("{}/file", "x".repeat(200));
        let mut h = tar::Header::new_gnu();
        h.set_size(1000);
        h.set_cksum();
        b.append_data(&mut h, long, &vec![7u8; 1000][..]).unwrap();
        b.into_inner().unwrap()
    }

    fn split_all(data: &[u8]) -> Result<(Vec<u8>, Vec<Vec<u8>>), ImageError> {
        let mut all = Vec::new();
        let mut files = Vec::new();
        let mut current = Vec::new();
        split_tar(&mut &data[..], |p| {
            match p {
                Piece::Inline(b) => all.extend_from_slice(b),
                Piece::Content(b) => {
                    all.extend_from_slice(b);
                    current.extend_from_slice(b)
                }
                Piece::EndContent => files.push(std::mem::take(&mut current)),
            }
            Ok(())
        })?;
        Ok((all, files))
    }

    #[test]
    fn every_byte_is_kept_and_files_are_found() {
        let tar = sample_tar();
        let (all, files) = split_all(&tar).unwrap();
        assert_eq!(all, tar);
        assert_eq!(files, vec![b"hello".to_vec(), vec![7u8; 1000]]);
    }

    #[test]
    fn truncated_and_corrupt_tars_are_refused() {
        let tar = sample_tar();
        let err = split_all(&tar[..700]).unwrap_err();
        assert!(err.to_string().contains("malformed layer tar"), "{err}");
        let err = split_all(&tar[..100]).unwrap_err();
        assert!(err.to_string().contains("truncated header"), "{err}");
        let mut bad = tar.clone();
        bad[0] ^= 0x55;
        let err = split_all(&bad).unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
    }

    #[test]
    fn pax_size_overrides_header_size() {
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([("size", &b"3"[..])]).unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_size(0);
        h.set_cksum();
        // Header says 0, pax says 3: the 3 bytes must be read as the file's data.
        let mut raw = b.into_inner().unwrap();
        // into_inner ends the archive with two zero blocks: drop them, more entries follow.
        raw.truncate(raw.len() - 1024);
        let mut block = h.as_bytes().to_vec();
        block[..5].copy_from_slice(b"f.txt");
        let hdr = tar::Header::from_byte_slice(&block);
        let mut hdr = hdr.clone();
        hdr.set_cksum();
        raw.extend_from_slice(hdr.as_bytes());
        raw.extend_from_slice(b"abc");
        raw.extend_from_slice(&[0u8; 509]);
        raw.extend_from_slice(&[0u8; 1024]);
        let (all, files) = split_all(&raw).unwrap();
        assert_eq!(all, raw);
        assert_eq!(files, vec![b"abc".to_vec()]);
    }

    #[test]
    fn sniffs_compression() {
        assert_eq!(Compression::sniff(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(
            Compression::sniff(&[0x28, 0xb5, 0x2f, 0xfd]),
            Compression::Zstd
        );
        assert_eq!(Compression::sniff(b"foo"), Compression::None);
        assert!(Compression::from_media_type("text/plain").is_err());
    }
}
