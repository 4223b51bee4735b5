//! The one error type of `hb-image`: what failed, on which input, and what to do.

use thiserror::Error;

/// Everything that can go wrong while naming, pulling, loading, saving or cataloguing images.
#[derive(Debug, Error)]
pub enum ImageError {
    /// A reference that is not a valid Docker-style image reference.
    #[error("invalid reference format {input:?}: {reason}")]
    InvalidReference {
        /// What the user typed.
        input: String,
        /// Why it was refused.
        reason: String,
    },
    /// No image by that name or id in the local store.
    #[error("no such image: {0}")]
    NotFound(String),
    /// The registry said the image or blob does not exist.
    #[error("{reference}: not found in the registry ({detail})")]
    RemoteNotFound {
        /// The reference that was asked for.
        reference: String,
        /// The registry's words.
        detail: String,
    },
    /// The registry refused our credentials (or asked for some).
    #[error(
        "{registry}: authentication required or refused ({detail}); run `hb login {registry}`"
    )]
    Unauthorized {
        /// Registry host.
        registry: String,
        /// The registry's words.
        detail: String,
    },
    /// The registry failed in a way retries did not cure.
    #[error("registry {registry}: {detail} (after {attempts} attempts)")]
    Registry {
        /// Registry host.
        registry: String,
        /// What went wrong.
        detail: String,
        /// How many times it was tried.
        attempts: u32,
    },
    /// Data that does not hash to the digest it was announced with.
    #[error(
        "digest mismatch for {what}: expected {expected}, got {actual}; the data was discarded"
    )]
    DigestMismatch {
        /// Which blob.
        what: String,
        /// The digest we were promised.
        expected: String,
        /// The digest of what arrived.
        actual: String,
    },
    /// A manifest, index or config we cannot use.
    #[error("invalid {what}: {reason}")]
    InvalidManifest {
        /// manifest, index, config…
        what: String,
        /// Why.
        reason: String,
    },
    /// An index without an entry for the wanted platform.
    #[error("{reference}: no manifest for platform {platform} (available: {available})")]
    NoMatchingPlatform {
        /// The reference.
        reference: String,
        /// The wanted platform, os/arch[/variant].
        platform: String,
        /// What the index offers.
        available: String,
    },
    /// A layer whose media type or compression we do not understand.
    #[error("unsupported layer media type {0:?}")]
    UnsupportedMediaType(String),
    /// A layer tar stream that is not a well-formed tar.
    #[error("malformed layer tar at byte {offset}: {reason}")]
    MalformedTar {
        /// Offset in the uncompressed stream.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// An archive given to `load` that is neither an OCI layout nor a docker-archive.
    #[error("invalid image archive: {0}")]
    InvalidArchive(String),
    /// The content store failed.
    #[error(transparent)]
    Store(#[from] hb_store::StoreError),
    /// The metadata database failed.
    #[error("image catalog: {0}")]
    Catalog(String),
    /// An I/O error, with what we were doing.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl ImageError {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        ImageError::Io {
            context: context.into(),
            source,
        }
    }
}

macro_rules! catalog_error_from {
    ($($t:ty),*) => {$(
        impl From<$t> for ImageError {
            fn from(e: $t) -> Self {
                ImageError::Catalog(e.to_string())
            }
        }
    )*};
}
catalog_error_from!(
    redb::Error,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);
