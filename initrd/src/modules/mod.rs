//! Kernel modules for the rescue initrd: reading a kernel's module directory
//! ([`index`]), choosing the generic or host-only set with dependencies, soft
//! dependencies and firmware ([`select`]), compressed modules ([`compress`]),
//! module info ([`modinfo`]), device-alias globs ([`alias`]) and the small index
//! PID 1 loads them by ([`bootindex`]).

pub mod alias;
pub mod bootindex;
pub mod compress;
pub mod index;
pub mod modinfo;
pub mod select;

pub use bootindex::{BootIndex, BootModule, BOOT_INDEX};
pub use index::{module_name, norm, ModuleIndex};
pub use select::{select, HostDevices, Selection, GENERIC};
