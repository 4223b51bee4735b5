//! The crate's one error type, [`StoreError`]: every failure names the file,
//! digest or chunk it concerns so a log line alone says what broke.

use std::io;

/// Everything that can go wrong in the content store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// An operating-system I/O call failed (disk full, permission, missing file...).
    /// `context` says what was being done and to which file, e.g.
    /// `appending to packs/00000003.pack`.
    #[error("{context}: {source}")]
    Io {
        /// What the store was doing, naming the file.
        context: String,
        /// The underlying OS error (`ErrorKind::StorageFull` for ENOSPC).
        #[source]
        source: io::Error,
    },
    /// The redb index database failed.
    #[error("index database, {context}: {source}")]
    Index {
        /// What the store was doing.
        context: String,
        /// The underlying redb error.
        #[source]
        source: Box<redb::Error>,
    },
    /// The bytes written do not hash to the digest the caller expected.
    #[error("digest mismatch: expected {expected}, content is {actual}")]
    DigestMismatch {
        /// The digest the caller announced.
        expected: String,
        /// The sha256 of what was actually written.
        actual: String,
    },
    /// A digest string is not of the form `sha256:<64 lowercase hex>`.
    #[error(
        "invalid blob digest {digest:?}: expected \"sha256:\" followed by 64 lowercase hex digits"
    )]
    InvalidDigest {
        /// The rejected string.
        digest: String,
    },
    /// No blob with this digest is stored.
    #[error("blob {digest} not found")]
    BlobNotFound {
        /// The digest asked for.
        digest: String,
    },
    /// A chunk that a recipe references has no index entry.
    #[error("chunk {chunk} is missing from the index")]
    ChunkMissing {
        /// The chunk id (`algorithm:hex`).
        chunk: String,
    },
    /// A stored chunk record does not match its index entry or does not decode.
    #[error("chunk {chunk} in {pack} is corrupt: {detail}")]
    CorruptChunk {
        /// The chunk id (`algorithm:hex`).
        chunk: String,
        /// The pack file holding it.
        pack: String,
        /// What is wrong with it.
        detail: String,
    },
    /// A blob's stored recipe cannot be decoded.
    #[error("recipe of blob {digest} is corrupt: {detail}")]
    CorruptRecipe {
        /// The blob digest.
        digest: String,
        /// What is wrong with it.
        detail: String,
    },
    /// An index record (not a recipe) has an unexpected shape.
    #[error("index entry {key} is corrupt: {detail}")]
    CorruptIndex {
        /// The table and key of the entry.
        key: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The database was written by an incompatible version of this crate.
    #[error("store format {found} is not supported (this build reads format {supported})")]
    UnsupportedFormat {
        /// Format number found in the database.
        found: u32,
        /// Format number this build writes and reads.
        supported: u32,
    },
    /// A [`crate::StoreOptions`] field is out of range.
    #[error("invalid store option {field}: {detail}")]
    InvalidOptions {
        /// The offending field.
        field: &'static str,
        /// The allowed range.
        detail: String,
    },
    /// A [`crate::BlobWriter`] already failed; it must be dropped.
    #[error("blob writer is unusable after an earlier error: {first_error}")]
    WriterFailed {
        /// The first error the writer hit, rendered.
        first_error: String,
    },
    /// The hashing/compressing worker threads are gone (a worker panicked or the
    /// store is shutting down).
    #[error("chunk worker threads are unavailable: {detail}")]
    WorkersUnavailable {
        /// What happened.
        detail: String,
    },
}

impl StoreError {
    /// Builds an [`StoreError::Io`] from a context and an OS error.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        StoreError::Io {
            context: context.into(),
            source,
        }
    }

    /// Builds an [`StoreError::Index`] from a context and any redb error.
    pub(crate) fn index(context: impl Into<String>, source: impl Into<redb::Error>) -> Self {
        StoreError::Index {
            context: context.into(),
            source: Box::new(source.into()),
        }
    }

    /// Whether the failure was the disk running out of space (ENOSPC/EDQUOT).
    pub fn is_storage_full(&self) -> bool {
        match self {
            StoreError::Io { source, .. } => is_storage_full(source),
            StoreError::Index { source, .. } => match source.as_ref() {
                redb::Error::Io(e) => is_storage_full(e),
                _ => false,
            },
            _ => false,
        }
    }
}

fn is_storage_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
        || e.kind() == io::ErrorKind::StorageFull
}

/// Adds redb context to a result: `txn.commit().index_ctx("committing blob x")`.
pub(crate) trait IndexContext<T> {
    /// Maps the redb error into [`StoreError::Index`] with `context`.
    fn index_ctx(self, context: impl FnOnce() -> String) -> Result<T, StoreError>;
}

impl<T, E: Into<redb::Error>> IndexContext<T> for Result<T, E> {
    fn index_ctx(self, context: impl FnOnce() -> String) -> Result<T, StoreError> {
        self.map_err(|e| StoreError::index(context(), e))
    }
}

/// Adds I/O context to a result: `file.sync_data().io_ctx(|| format!("syncing {path}"))`.
pub(crate) trait IoContext<T> {
    /// Maps the I/O error into [`StoreError::Io`] with `context`.
    fn io_ctx(self, context: impl FnOnce() -> String) -> Result<T, StoreError>;
}

impl<T> IoContext<T> for Result<T, io::Error> {
    fn io_ctx(self, context: impl FnOnce() -> String) -> Result<T, StoreError> {
        self.map_err(|e| StoreError::io(context(), e))
    }
}
