//! lifeboat: one static binary that keeps the state index of an atomic Linux system's
//! transactions, manages its boot entries, and runs as PID 1 of the initrd to roll
//! back and repair before booting.
//!
//! The library half holds everything the binary does, so that integration tests and
//! benchmarks drive the same code; `main.rs` only dispatches.

pub mod blit;
pub mod bootsync;
pub mod cli;
pub mod config;
pub mod error;
pub mod failpoint;
pub mod fsutil;
pub mod hash;
pub mod index;
pub mod json;
pub mod layout;
pub mod pid1;
pub mod root;
pub mod scan;
pub mod shell;
pub mod store;
pub mod timefmt;
pub mod txn;
pub mod verify;
pub mod workers;
