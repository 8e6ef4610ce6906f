//! Handing the machine to the real root: move the API filesystems into it, empty
//! the initramfs (never crossing into another mount), move the new root over `/`,
//! chroot, and exec the real init with the arguments the kernel meant for it.

use std::ffi::CString;
use std::os::fd::AsFd;
use std::path::Path;

use nix::mount::{mount, MsFlags};

const RAMFS_MAGIC: u64 = 0x8584_58f6;
const TMPFS_MAGIC: u64 = 0x0102_1994;

fn e(what: &str, err: impl std::fmt::Display) -> String {
    format!("{what}: {err}")
}

/// Never returns on success.
pub fn switch_root(new_root: &Path, init: &Path, args: &[String]) -> Result<std::convert::Infallible, String> {
    let none: Option<&str> = None;
    mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none).map_err(|x| e("make / private", x))?;
    for m in ["dev", "proc", "sys", "run"] {
        let src = Path::new("/").join(m);
        let dst = new_root.join(m);
        if !dst.is_dir() {
            let _ = std::fs::create_dir_all(&dst);
        }
        if dst.is_dir() {
            if let Err(x) = mount(Some(&src), &dst, none, MsFlags::MS_MOVE, none) {
                // Not mounted in the initrd (or no place for it): leave it.
                let _ = x;
            }
        }
    }
    std::env::set_current_dir(new_root).map_err(|x| e("chdir to the new root", x))?;
    // Only an initramfs may be emptied.
    let st = nix::sys::statfs::statfs("/").map_err(|x| e("statfs /", x))?;
    let magic = st.filesystem_type().0 as u64;
    if magic == RAMFS_MAGIC || magic == TMPFS_MAGIC {
        let root = lifeboat_fs::open_dir(Path::new("/")).map_err(|x| e("open /", x))?;
        let dev = nix::sys::stat::fstat(root.as_fd()).map_err(|x| e("stat /", x))?.st_dev;
        // Errors only leave some initramfs memory in use.
        let _ = lifeboat_fs::clear_dir(root.as_fd(), dev);
    }
    mount(Some("."), "/", none, MsFlags::MS_MOVE, none).map_err(|x| e("move the new root to /", x))?;
    nix::unistd::chroot(".").map_err(|x| e("chroot", x))?;
    std::env::set_current_dir("/").map_err(|x| e("chdir /", x))?;
    let prog = CString::new(init.as_os_str().as_encoded_bytes()).map_err(|x| e("init path", x))?;
    let mut argv = vec![prog.clone()];
    for a in args {
        argv.push(CString::new(a.as_bytes()).map_err(|x| e("init argument", x))?);
    }
    let envp = [CString::new("HOME=/").unwrap_or_default(), CString::new("TERM=linux").unwrap_or_default()];
    nix::unistd::execve(&prog, &argv, &envp).map_err(|x| e(&format!("exec {}", init.display()), x))
}
