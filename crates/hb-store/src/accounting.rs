//! Space accounting: store-wide [`StoreStats`] and per-group [`GroupUsage`]
//! (a group is any set of blobs, e.g. the layers and config of one image).

use std::collections::{BTreeSet, HashMap};

use redb::ReadableTable;

use crate::chunk_id::ChunkId;
use crate::error::{IndexContext, StoreError};
use crate::gc::decode_entry;
use crate::index::{validate_digest, BlobRecord, BLOBS, CHUNKS};
use crate::recipe::Segment;
use crate::store::Store;

/// Store-wide totals.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StoreStats {
    /// Stored blobs.
    pub blobs: u64,
    /// Sum of blob sizes (what the blobs would take stored naively).
    pub logical_bytes: u64,
    /// Bytes held inline in recipes (tar headers etc.), counted per blob.
    pub inline_bytes: u64,
    /// Indexed chunks (including ones no blob references until gc).
    pub chunks: u64,
    /// Sum of indexed chunks' content lengths (each chunk once).
    pub unique_raw_bytes: u64,
    /// Sum of indexed chunks' stored (compressed) payload lengths.
    pub stored_bytes: u64,
    /// Content bytes of chunks stored raw until background compression
    /// reaches them ([`Store::compress_deferred`]); included in `stored_bytes`.
    #[serde(default)]
    pub deferred_bytes: u64,
    /// Sum of encoded recipe sizes in the index.
    pub recipe_bytes: u64,
    /// Pack files on disk.
    pub pack_files: u64,
    /// Pack file bytes on disk (includes record headers and garbage gc has
    /// not reclaimed yet).
    pub pack_bytes: u64,
    /// `logical_bytes / (unique_raw_bytes + inline_bytes)`: how many times
    /// over the content is referenced. Inline bytes are in the denominator
    /// because they are stored once per blob, never deduplicated; without
    /// them tar headers alone would read as dedup. 1.0 for an empty store.
    pub dedup_ratio: f64,
    /// `unique_raw_bytes / stored_bytes` (1.0 when nothing is stored).
    pub compression_ratio: f64,
}

/// Space used by one group of blobs.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GroupUsage {
    /// The group's name as given.
    pub name: String,
    /// Distinct stored blobs of the group.
    pub blobs: u64,
    /// Digests of the group that are not stored (ignored in the sums).
    pub missing_blobs: Vec<String>,
    /// Sum of the group's blob sizes.
    pub logical_bytes: u64,
    /// Stored bytes of everything the group needs: its distinct chunks'
    /// payloads plus its blobs' recipes.
    pub stored_bytes: u64,
    /// Part of `stored_bytes` also needed by at least one other group given
    /// in the same call.
    pub shared_bytes: u64,
    /// `stored_bytes - shared_bytes`: what deleting only this group frees.
    pub unique_bytes: u64,
}

impl Store {
    /// Totals over the whole store.
    pub fn stats(&self) -> Result<StoreStats, StoreError> {
        let mut s = StoreStats::default();
        {
            let txn = self.inner.begin_read()?;
            let blobs = txn.open_table(BLOBS).index_ctx(|| "opening blobs".into())?;
            for entry in blobs.iter().index_ctx(|| "scanning blobs".into())? {
                let (k, v) = entry.index_ctx(|| "scanning blobs".into())?;
                let r = BlobRecord::decode(k.value(), v.value())?;
                s.blobs += 1;
                s.logical_bytes += r.size;
                s.inline_bytes += r.inline_bytes;
                s.recipe_bytes += r.stored_len;
            }
            let chunks = txn
                .open_table(CHUNKS)
                .index_ctx(|| "opening chunks".into())?;
            for entry in chunks.iter().index_ctx(|| "scanning chunks".into())? {
                let (k, v) = entry.index_ctx(|| "scanning chunks".into())?;
                let (_, loc) = decode_entry(k.value(), v.value())?;
                s.chunks += 1;
                s.unique_raw_bytes += u64::from(loc.raw_len);
                s.stored_bytes += u64::from(loc.stored_len);
                if loc.flags & crate::pack::FLAG_DEFERRED != 0 {
                    s.deferred_bytes += u64::from(loc.raw_len);
                }
            }
        }
        (s.pack_files, s.pack_bytes) = self.inner.pack_bytes_on_disk()?;
        let unique = s.unique_raw_bytes + s.inline_bytes;
        s.dedup_ratio = ratio(s.logical_bytes, unique);
        s.compression_ratio = ratio(s.unique_raw_bytes, s.stored_bytes);
        Ok(s)
    }

    /// Usage per group (`(name, blob digests)`): logical bytes, stored bytes,
    /// bytes shared with other groups of this call, and unique bytes.
    pub fn usage(&self, groups: &[(String, Vec<String>)]) -> Result<Vec<GroupUsage>, StoreError> {
        /// Something a group needs stored: a chunk, or a blob's recipe.
        #[derive(PartialEq, Eq, Hash, Clone, PartialOrd, Ord)]
        enum Item {
            Chunk(ChunkId),
            Recipe(String),
        }
        /// First group needing an item, and whether another one does too.
        struct Owners {
            first: usize,
            shared: bool,
        }
        let txn = self.inner.begin_read()?;
        let blobs = txn.open_table(BLOBS).index_ctx(|| "opening blobs".into())?;
        let chunks = txn
            .open_table(CHUNKS)
            .index_ctx(|| "opening chunks".into())?;
        let mut cost: HashMap<Item, u64> = HashMap::new();
        let mut owners: HashMap<Item, Owners> = HashMap::new();
        let mut per_group: Vec<(GroupUsage, BTreeSet<Item>)> = Vec::new();
        for (g, (name, digests)) in groups.iter().enumerate() {
            let mut usage = GroupUsage {
                name: name.clone(),
                ..GroupUsage::default()
            };
            let mut items = BTreeSet::new();
            let distinct: BTreeSet<&String> = digests.iter().collect();
            for digest in distinct {
                validate_digest(digest)?;
                let Some(v) = blobs
                    .get(digest.as_str())
                    .index_ctx(|| format!("reading blob {digest}"))?
                else {
                    usage.missing_blobs.push(digest.clone());
                    continue;
                };
                let r = BlobRecord::decode(digest, v.value())?;
                usage.blobs += 1;
                usage.logical_bytes += r.size;
                let recipe = Item::Recipe(digest.clone());
                cost.insert(recipe.clone(), r.stored_len);
                items.insert(recipe);
                for seg in r.segments(digest)? {
                    if let Segment::Chunk { id, .. } = seg {
                        let item = Item::Chunk(id);
                        if !cost.contains_key(&item) {
                            let stored = crate::index::get_location(&chunks, &id)?
                                .map_or(0, |l| u64::from(l.stored_len));
                            cost.insert(item.clone(), stored);
                        }
                        items.insert(item);
                    }
                }
            }
            for item in &items {
                owners
                    .entry(item.clone())
                    .and_modify(|o| o.shared |= o.first != g)
                    .or_insert(Owners {
                        first: g,
                        shared: false,
                    });
            }
            per_group.push((usage, items));
        }
        Ok(per_group
            .into_iter()
            .map(|(mut usage, items)| {
                for item in &items {
                    let c = cost.get(item).copied().unwrap_or(0);
                    usage.stored_bytes += c;
                    if owners.get(item).is_some_and(|o| o.shared) {
                        usage.shared_bytes += c;
                    }
                }
                usage.unique_bytes = usage.stored_bytes - usage.shared_bytes;
                usage
            })
            .collect())
    }
}

fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        1.0
    } else {
        num as f64 / den as f64
    }
}
