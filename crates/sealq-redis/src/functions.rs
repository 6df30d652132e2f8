//! The Redis Functions library (`lua/sealq.lua`) and its version check.

/// Version of the functions library this build needs. Bumped whenever a
/// function's keys, arguments or replies change.
pub const LIBRARY_VERSION: &str = "10";

/// Name of the library (`#!lua name=sealq`).
pub const LIBRARY_NAME: &str = "sealq";

const SOURCE: &str = include_str!("../lua/sealq.lua");

/// The library source as loaded by `FUNCTION LOAD` (version filled in).
pub fn library_source() -> String {
    SOURCE.replace("__SEALQ_VERSION__", LIBRARY_VERSION)
}
