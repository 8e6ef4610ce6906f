//! lifeboat: one static binary that keeps the state index of an atomic Linux system's
//! transactions, manages its boot entries, and runs as PID 1 of the initrd to roll
//! back and repair before booting.
//!
//! This crate is the glue between the library crates and a person or the kernel:
//! [`cli`] (argh commands, text and JSON), [`pid1`] (the initrd's init) and
//! [`shell`] (the rescue shell). The work itself is in `lifeboat-state`
//! (transactions), `lifeboat-esp` (disks and FAT), `lifeboat-boot` (entries) and
//! `lifeboat-initrd`; [`bootsync`] joins transactions to boot entries, with the
//! running root's kernel parameters from [`rootparams`]; [`kinitrd`] builds each
//! kernel's rescue initrd from its transaction. Only this
//! crate prints or exits.

pub mod assess;
pub mod bootsync;
pub mod cli;
pub mod cmdline;
pub mod config;
pub mod error;
pub mod json;
pub mod kinitrd;
pub mod kmsg;
pub mod pid1;
pub mod pin;
pub mod rescue;
pub mod rootparams;
pub mod shell;
pub mod timefmt;
pub mod uki;
