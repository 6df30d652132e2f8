//! Broker conformance suite (feature `testkit`). STUB: helper H3 fills this module.
pub use crate::clock::ManualClock;
