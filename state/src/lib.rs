//! The system's transactions — what lifeboat keeps and restores on a root.
//!
//! A transaction is a complete `/usr` tree built as hard links from a
//! content-addressed store (moss layout). This crate owns everything about them,
//! in the order data flows:
//!
//! - [`index`]: the state index (postcard + zstd behind a checked header), the
//!   record of every retained transaction and its full layout;
//! - [`store`]: the content store of blobs named by xxh3-128 ([`hash`]);
//! - [`layout`]: a transaction's `/usr` as sorted entries; [`scan`] makes one from a
//!   directory, [`blit`] makes a directory from one;
//! - [`root`] and [`txn`]: a system root and the crash-safe commit, activate and
//!   prune on it;
//! - [`verify`]: checking a tree against its layout and repairing it from the store;
//! - [`moss`]: a root moss manages — its databases read into the index, its lock,
//!   and the one change lifeboat makes there, moss's own activation swap.
//!
//! Nothing here prints or exits: every function returns a typed [`Error`] and
//! reports progress through [`verify::progress::ProgressSink`]. The binary decides
//! what a person sees. Nothing here knows about boot entries either; the binary
//! syncs them after a change.

pub mod attrs;
pub mod blit;
pub mod error;
pub mod failpoint;
pub mod fasthash;
pub mod hash;
pub mod index;
pub mod layout;
pub mod lock;
pub mod moss;
pub mod reconcile;
pub mod recover;
pub mod root;
pub mod scan;
pub mod store;
pub mod txn;
pub mod variants;
pub mod verify;
pub mod workers;

pub use error::{Error, IoContext, Result};
