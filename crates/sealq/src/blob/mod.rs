//! Claim-check: the rare payload that must be large (a generated PDF, an
//! image) goes to a blob store; the task in the broker carries only a small
//! sealed claim.
//!
//! # How
//!
//! - **Producer** ([`ClientBuilder::blob_store`](crate::ClientBuilder::blob_store)):
//!   a payload whose sealed envelope is over the threshold is sealed as usual
//!   (same keyring, same associated data: bound to the task id, queue, type,
//!   producer, times and subject), the sealed bytes are put in the blob store
//!   under the task id, and the envelope stored in the broker is replaced by
//!   a sealed *claim*: 44 bytes naming the blob's length and SHA-256. The
//!   queue's size budget applies to what the broker stores, so offloaded
//!   payloads pass it; the sensitive-data scanner still runs on the whole
//!   payload.
//! - **Worker** ([`WorkerBuilder::blob_store`](crate::WorkerBuilder::blob_store)):
//!   a payload that opens to a claim is fetched from the store, checked
//!   against the claim's length and hash and opened with the task's
//!   associated data; the handler sees the original payload. A blob that is
//!   missing archives the task (`blob_missing`); tampered or swapped bytes
//!   are an integrity failure (`integrity`); a store error retries it.
//! - **Deletion**: the worker deletes a task's blob once the broker applied
//!   the task's completion. Blobs of archived tasks stay (the task can be
//!   re-run); [`sweep_orphans`] deletes the blobs whose task no longer exists
//!   in the broker (purged, deleted, erased). Run it periodically.
//!
//! Stores: [`FsBlobStore`] (a directory per task, files written atomically,
//! mode 0600), [`MemoryBlobStore`] (tests, one process), and
//! `sealq_sqlite::SqliteBlobStore` (a table in the broker's file). Others
//! (Redis with a TTL, S3) implement [`BlobStore`].
//!
//! A blob store holds only sealed bytes: like the broker, it can neither read
//! nor forge them, and a blob cannot be moved to another task.

mod claim;
mod fs;
mod memory;

use crate::model::clock::wall_clock_ms;
use crate::model::id::TaskId;
use crate::store::broker::{Broker, BrokerResult};

pub(crate) use claim::{
    ClaimAction, ClaimError, check_policy, claimed_blob, delete_completed, offload_all,
    open_claimed, reseal_blob,
};
pub use fs::FsBlobStore;
pub use memory::MemoryBlobStore;
// The trait and key live with the other storage seams.
pub use crate::store::blob::{BlobKey, BlobStore};

/// Archive reason of a task whose blob is not in the blob store, as stored in
/// [`ArchiveReason::Other`](crate::model::state::ArchiveReason::Other).
pub const BLOB_MISSING: &str = "blob_missing";

/// Default threshold: sealed payloads larger than this are offloaded (32 KiB).
pub const DEFAULT_OFFLOAD_THRESHOLD: usize = 32 * 1024;

/// Delete every blob whose task no longer exists in `broker` (purged after
/// its retention, deleted by an operator, erased). Returns how many blobs
/// were deleted.
///
/// A producer puts a blob just before it enqueues the task, so blobs of
/// tasks younger than `min_age` (by the time in their UUID v7 id) are left
/// alone: use a minute or more. Run it every few minutes, from one process.
pub async fn sweep_orphans(
    broker: &dyn Broker,
    store: &dyn BlobStore,
    min_age: std::time::Duration,
) -> BrokerResult<u64> {
    let now_ms = u64::try_from(wall_clock_ms()).unwrap_or(0);
    let young = |id: &TaskId| {
        id.0.get_timestamp().is_some_and(|t| {
            let (secs, nanos) = t.to_unix();
            let created_ms = secs * 1000 + u64::from(nanos / 1_000_000);
            now_ms.saturating_sub(created_ms) < min_age.as_millis() as u64
        })
    };
    const PAGE: usize = 500;
    let mut after = None;
    let mut deleted = 0;
    loop {
        let ids = store.list_tasks(after, PAGE).await?;
        let mut orphans = Vec::new();
        for id in ids.iter().filter(|id| !young(id)) {
            if broker.get(*id).await?.is_none() {
                orphans.push(*id);
            }
        }
        if !orphans.is_empty() {
            deleted += store.delete_tasks(&orphans).await?;
        }
        match ids.last() {
            Some(last) if ids.len() == PAGE => after = Some(*last),
            _ => return Ok(deleted),
        }
    }
}
