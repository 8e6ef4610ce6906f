//! Device-mapper and LVM2 for lifeboat's PID 1, with nothing but the kernel.
//!
//! The initrd has no udev, no lvm2 tools and no libdevmapper, yet it must open a
//! LUKS container (a dm-crypt mapping) and activate the logical volumes of a volume
//! group on it (Debian's and Ubuntu's "encrypted LVM" installs put root and swap
//! there). This crate does both from first principles:
//!
//! - [`ioctl`] lays out and decodes the `struct dm_ioctl` buffers of the kernel's
//!   device-mapper interface byte for byte (pure, unit-tested without a kernel);
//!   [`control`] sends them through `/dev/mapper/control` ([`DmControl`]) and makes
//!   the `/dev/mapper/NAME` block nodes ([`ensure_node`]).
//! - [`lvm`] reads a physical volume's label, metadata area and metadata text,
//!   parses the text into a typed volume group, and plans the device-mapper tables
//!   of the logical volumes the kernel command line selects
//!   ([`lvm::plan_activation`]): linear and striped volumes only; thin, raid,
//!   cache and the like are refused with an error that says so.
//!
//! Keys of dm-crypt travel in table parameters: every buffer holding them is wiped
//! when dropped and `Debug` never shows them. Nothing here panics on any input, and
//! every count read from a disk is checked before anything is allocated for it.

pub mod control;
mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod ioctl;
pub mod lvm;

pub use control::{ensure_node, ensure_node_in, DeviceInfo, DmControl};
pub use error::DmError;
pub use ioctl::{DevNo, ListedDevice, Target};
