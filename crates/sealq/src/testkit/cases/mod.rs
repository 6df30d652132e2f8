//! The conformance cases. Each is an `async fn(Ctx)` that panics on a
//! violation of the [`crate::Broker`] contract; [`crate::conformance_tests!`]
//! turns each into a named test.
//!
//! One file per concern; every case is re-exported here, so
//! `testkit::cases::<name>` names any of them.

use super::fixtures::LEASE;
use crate::store::broker::Outcome;

mod ack;
mod admin;
mod enqueue;
mod erasure;
mod health;
mod key_checks;
mod lease;
mod limits;
mod live_workers;
mod recovery;
pub mod replay;
mod reseal;
mod subject_keys;
mod unique;
mod wake;

pub use ack::*;
pub use admin::*;
pub use enqueue::*;
pub use erasure::*;
pub use health::*;
pub use key_checks::*;
pub use lease::*;
pub use limits::*;
pub use live_workers::*;
pub use recovery::*;
pub use replay::{
    finding_2_a_completed_id_is_refused_while_retained_and_after_purge,
    finding_2_a_deleted_id_is_refused_at_enqueue,
};
pub use reseal::*;
pub use subject_keys::*;
pub use unique::*;
pub use wake::*;

/// [`LEASE`] in milliseconds.
const LEASE_MS: i64 = LEASE.as_millis() as i64;

/// A `Complete` outcome with `result`.
fn complete(result: Option<&[u8]>) -> Outcome {
    Outcome::Complete {
        result: result.map(<[u8]>::to_vec),
    }
}
