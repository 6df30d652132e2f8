//! Embedded SQLite broker for sealq (in progress).
