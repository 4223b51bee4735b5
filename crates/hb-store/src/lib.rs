//! `hb-store`: HyperBox's content store.
//!
//! Holds uncompressed blob content (layer tar streams, small JSON blobs)
//! once. Content is cut with FastCDC into chunks; each chunk is stored once,
//! zstd-compressed, in append-only pack files under `packs/`; the chunk
//! index, blob recipes and pack lengths live in one redb database
//! (`meta.redb`) that other crates may share through [`Store::database`].
//! A blob is identified by the sha256 of its bytes (`sha256:<hex>`); chunks
//! by the configured [`HashAlgorithm`].
//!
//! The store knows nothing of registries, tar or containers: callers say
//! which bytes are metadata ([`BlobWriter::write_inline`]) and where a file's
//! content starts and ends ([`BlobWriter::write_content`],
//! [`BlobWriter::end_content`]).
//!
//! # Durability
//! A blob is acknowledged when [`BlobWriter::finish`] returns `Ok`. Pack bytes
//! are fsynced before the redb transaction that references them commits; the
//! `packs` table records each pack's committed length, and [`Store::open`]
//! truncates packs to it and removes pack files the index does not know, so
//! a crash at any moment leaves no index entry pointing at missing bytes.

#![warn(missing_docs)]

mod accounting;
mod check;
mod chunk_id;
mod chunker;
mod counters;
mod deferred;
mod error;
mod gc;
mod index;
mod locking;
mod options;
mod pack;
mod reader;
mod recipe;
mod store;
mod syncer;
mod workers;
mod writer;

#[cfg(test)]
mod tests;

pub use accounting::{GroupUsage, StoreStats};
pub use check::{CheckProblem, CheckReport};
pub use chunker::{AVG_CHUNK, MAX_CHUNK, MIN_CHUNK};
pub use counters::{CountersSnapshot, LatencySnapshot, LATENCY_BOUNDS_MICROS, LATENCY_BUCKETS};
pub use deferred::DeferredReport;
pub use error::StoreError;
pub use gc::{GcReport, COMPACT_BELOW_LIVE_SHARE};
pub use options::{HashAlgorithm, StoreOptions};
pub use pack::PACK_ROLL_SIZE;
pub use reader::BlobReader;
pub use store::{BlobInfo, Store};
pub use writer::BlobWriter;
