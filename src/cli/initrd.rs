//! `lifeboat initrd build`: the rescue initrd around the rescue build of
//! lifeboat — `--binary FILE`, else the installed one (see [`default_binary`]).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use argh::FromArgs;
use lifeboat_initrd::files::{Dir, Files};
use lifeboat_initrd::{BuildSpec, Compression, ModuleSpec};

use super::Out;
use crate::error::{Error, Result};
use lifeboat_fs::foreign;

/// The initrd `--append-to` names is read whole; none is near this.
const MAX_BASE: u64 = 1 << 30;
use crate::json::Json;

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "initrd")]
/// the rescue initrd
pub struct InitrdCmd {
    #[argh(subcommand)]
    pub cmd: InitrdSub,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum InitrdSub {
    Build(BuildCmd),
}

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "build")]
/// build a cpio initrd holding lifeboat as /init and the kernel modules a boot
/// needs (by default the generic set of the running kernel)
pub struct BuildCmd {
    /// where to write it
    #[argh(option)]
    pub out: PathBuf,
    /// the kernel version whose /lib/modules/VERSION to use (default: the running kernel)
    #[argh(option)]
    pub kver: Option<String>,
    /// the kernel's module directory itself (instead of --kver), e.g. an unpacked package's lib/modules/VERSION
    #[argh(option)]
    pub modules: Option<PathBuf>,
    /// only what this machine's root, /usr, ESP and XBOOTLDR need (like dracut --hostonly)
    #[argh(switch)]
    pub host_only: bool,
    /// a module to add with its dependencies (repeatable; loaded at every boot)
    #[argh(option)]
    pub module: Vec<String>,
    /// no kernel modules at all (a kernel with every driver built in)
    #[argh(switch)]
    pub no_modules: bool,
    /// where firmware files are (default /lib/firmware)
    #[argh(option, default = "PathBuf::from(\"/lib/firmware\")")]
    pub firmware_dir: PathBuf,
    /// the kernel's configuration (default: boot/config-VERSION beside the modules)
    #[argh(option)]
    pub kernel_config: Option<PathBuf>,
    /// the sysfs to read the host's devices from for --host-only (default /sys)
    #[argh(option, default = "PathBuf::from(\"/sys\")")]
    pub sysfs: PathBuf,
    /// the mount table to read for --host-only (default /proc/self/mountinfo)
    #[argh(option, default = "PathBuf::from(\"/proc/self/mountinfo\")")]
    pub mountinfo: PathBuf,
    /// zstd (default; level 19, or 9 for archives over 8 MiB), zstd:LEVEL or none
    #[argh(option, default = "String::from(\"zstd\")")]
    pub compress: String,
    /// write INITRD followed by this archive, as one file the kernel unpacks in order
    #[argh(option)]
    pub append_to: Option<PathBuf>,
    /// the lifeboat binary to embed as /init (default: the rescue build installed
    /// at /usr/lib/lifeboat/lifeboat-rescue, or at ../lib/lifeboat/lifeboat-rescue
    /// beside this binary; else this binary when it is the rescue build itself)
    #[argh(option)]
    pub binary: Option<PathBuf>,
    /// a LUKS key file for PID 1, as UUID=FILE (tried for that container without
    /// any kernel parameter) or FILE (named by rd.luks.key=/etc/lifeboat/keys/NAME);
    /// repeatable. Anyone who can read the initrd can read the key.
    #[argh(option)]
    pub keyfile: Vec<String>,
    /// the console keymap PID 1 loads before it asks for a passphrase: a kbd
    /// keymap name, or none (default: KEYMAP= of --vconsole)
    #[argh(option)]
    pub keymap: Option<String>,
    /// where KEYMAP= is read from (default /etc/vconsole.conf)
    #[argh(option, default = "PathBuf::from(\"/etc/vconsole.conf\")")]
    pub vconsole: PathBuf,
}

/// The keymap to carry: `--keymap`, else `KEYMAP=` of the vconsole file; `None`
/// for none, the kernel's own US layout, or no file.
pub(crate) fn keymap_wanted(keymap: &Option<String>, vconsole: &Path) -> Result<Option<String>> {
    let name = match keymap {
        Some(k) => Some(k.clone()),
        None => match foreign::read_file(vconsole, 64 << 10) {
            Ok(text) => String::from_utf8_lossy(&text).lines().find_map(|l| {
                let v = l.trim().strip_prefix("KEYMAP=")?;
                Some(v.trim_matches(|c| c == '"' || c == '\'').to_owned())
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io("read", vconsole, e)),
        },
    };
    Ok(name.filter(|n| !n.is_empty() && n != "none" && n != "us"))
}

/// The keymap as kbd's binary form (`loadkeys -b`), in an uncompressed archive
/// appended to the initrd.
pub(crate) fn keymap_segment(name: &str) -> Result<Vec<u8>> {
    if name.starts_with('-') || name.contains(char::is_whitespace) {
        return Err(Error::bad_arg("--keymap", name, "not a keymap name"));
    }
    let out = std::process::Command::new("loadkeys").args(["-b", "-q", name]).output().map_err(|e| {
        Error::bad_arg(
            "--keymap",
            name,
            format!("loadkeys (kbd) is needed to carry a keymap ({e}); --keymap none leaves the US layout"),
        )
    })?;
    if !out.status.success() {
        return Err(Error::bad_arg(
            "--keymap",
            name,
            format!("loadkeys -b: {}", String::from_utf8_lossy(&out.stderr).trim()),
        ));
    }
    crate::pid1::keymap::parse(&out.stdout)
        .map_err(|e| Error::bad_arg("--keymap", name, format!("loadkeys -b gave no binary keymap: {e}")))?;
    let mut a = lifeboat_initrd::cpio::Archive::new();
    a.dir("etc", 0o755);
    a.dir("etc/lifeboat", 0o755);
    a.file("etc/lifeboat/keymap.bmap", 0o644, out.stdout);
    a.file("etc/lifeboat/keymap.name", 0o644, format!("{name}\n").into_bytes());
    Ok(a.to_bytes())
}

/// The largest key file taken (cryptsetup's default limit is 8 MiB).
const MAX_KEYFILE: u64 = 8 << 20;

/// The key files as an uncompressed archive appended to the initrd, under
/// `crate::pid1::crypt::KEY_DIR`, readable by root only.
fn keyfile_segment(specs: &[String]) -> Result<Option<Vec<u8>>> {
    if specs.is_empty() {
        return Ok(None);
    }
    let mut a = lifeboat_initrd::cpio::Archive::new();
    a.dir("etc", 0o755);
    a.dir("etc/lifeboat", 0o755);
    a.dir("etc/lifeboat/keys", 0o700);
    let mut names = Vec::new();
    for spec in specs {
        let (name, path) = match spec.split_once('=') {
            Some((u, p)) if u.len() == 36 && u.bytes().all(|c| c.is_ascii_hexdigit() || c == b'-') => {
                (format!("{}.key", u.to_ascii_lowercase()), PathBuf::from(p))
            }
            _ => {
                let p = PathBuf::from(spec);
                let n = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                (n, p)
            }
        };
        if name.is_empty() || name.starts_with('.') || name.contains('/') {
            return Err(Error::bad_arg("--keyfile", spec, "not UUID=FILE or a file with a name"));
        }
        if names.contains(&name) {
            return Err(Error::bad_arg("--keyfile", spec, "a second key file of that name"));
        }
        let bytes = foreign::open_named(&path)
            .and_then(|f| foreign::read_capped(f, MAX_KEYFILE))
            .map_err(|e| Error::io("read", &path, e))?;
        if bytes.is_empty() {
            return Err(Error::bad_arg("--keyfile", spec, "the key file is empty"));
        }
        a.file(&format!("etc/lifeboat/keys/{name}"), 0o400, bytes);
        names.push(name);
    }
    Ok(Some(a.to_bytes()))
}

/// The running kernel's release (`uname -r`).
fn running_kernel() -> Result<String> {
    let u = nix::sys::utsname::uname().map_err(|e| Error::io("uname", "the running kernel", e.into()))?;
    Ok(u.release().to_string_lossy().into_owned())
}

/// The kernel configuration for modules in `dir` (`ROOT/lib/modules/V` ->
/// `ROOT/boot/config-V`, or `dir/build/.config`).
fn find_config(dir: &Path, given: Option<&PathBuf>) -> Result<Option<String>> {
    // A kernel configuration is a few hundred KiB.
    const MAX: u64 = 16 << 20;
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    if let Some(p) = given {
        return foreign::open_named(p)
            .and_then(|f| foreign::read_capped(f, MAX))
            .map(|b| Some(text(b)))
            .map_err(|e| Error::io("read", p, e));
    }
    let kver = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut candidates = vec![dir.join("build/.config"), dir.join("config")];
    if let Some(root) = dir.parent().and_then(Path::parent).and_then(Path::parent) {
        candidates.insert(0, root.join(format!("boot/config-{kver}")));
    }
    // `build` is a symlink to the headers, often absent: only the file itself
    // must not be one, nor a FIFO.
    Ok(candidates.iter().find_map(|p| foreign::read_file(p, MAX).ok()).map(text))
}

/// Where the packages and `scripts/install.sh` put the rescue build (no SQLite):
/// the same path below `/usr` as a transaction carries it (`kinitrd::RESCUE_BIN`),
/// so the host's `initrd build` and each kernel's rescue initrd embed one binary.
pub const INSTALLED_RESCUE: &str = "/usr/lib/lifeboat/lifeboat-rescue";

/// The binary `initrd build` embeds without `--binary`, first found of:
/// 1. the rescue build installed with this binary, `../lib/lifeboat/lifeboat-rescue`
///    from its directory (for `/usr/bin/lifeboat` that is [`INSTALLED_RESCUE`];
///    for an install under another prefix, or staged in a DESTDIR, it is that
///    install's own, so host tool and rescue build are of one version);
/// 2. [`INSTALLED_RESCUE`];
/// 3. this binary, when it is the rescue build itself (built without the
///    `moss-import` feature).
///
/// The host build never embeds itself unasked: it carries SQLite, which PID 1
/// never uses, and the initrd would grow by its size on every kernel. Without a
/// rescue build, the error names the paths looked at and `--binary`.
fn default_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe().and_then(std::fs::canonicalize);
    let mut tried = Vec::new();
    if let Some(prefix) = exe.as_ref().ok().and_then(|e| e.parent()).and_then(Path::parent) {
        tried.push(prefix.join("lib/lifeboat/lifeboat-rescue"));
    }
    if !tried.iter().any(|p| p == Path::new(INSTALLED_RESCUE)) {
        tried.push(PathBuf::from(INSTALLED_RESCUE));
    }
    for p in &tried {
        match std::fs::canonicalize(p) {
            Ok(found) => return Ok(found),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            // There but unreadable (permissions, a loop): named, not skipped for
            // another binary the user did not mean.
            Err(e) => return Err(Error::io("read", p, e)),
        }
    }
    if cfg!(feature = "moss-import") {
        return Err(Error::NoRescueBinary { tried });
    }
    exe.map_err(|e| Error::io("find", "this executable", e))
}

pub fn run(c: InitrdCmd, out: &Out) -> Result<ExitCode> {
    let InitrdSub::Build(b) = c.cmd;
    // Options that cannot go together are said before anything is looked for.
    if b.no_modules && (!b.module.is_empty() || b.host_only || b.modules.is_some() || b.kver.is_some()) {
        return Err(Error::usage(
            "--no-modules",
            "cannot go with --modules, --kver, --module or --host-only (they choose modules to add)",
        ));
    }
    let compression = match b.compress.as_str() {
        "zstd" => Compression::Zstd(None),
        "none" => Compression::None,
        o => match o.strip_prefix("zstd:").and_then(|l| l.parse::<i32>().ok()).filter(|l| (1..=22).contains(l)) {
            Some(l) => Compression::Zstd(Some(l)),
            None => return Err(Error::bad_arg("--compress", o, "use zstd, zstd:LEVEL (1-22) or none")),
        },
    };
    // Resolved here, so the builder opens a path with no symlink left on it.
    let binary = match b.binary {
        Some(p) => std::fs::canonicalize(&p).map_err(|e| Error::io("read", &p, e))?,
        None => default_binary()?,
    };
    let t = std::time::Instant::now();
    let modules = if b.no_modules {
        None
    } else {
        let dir = match (&b.modules, &b.kver) {
            (Some(d), None) => d.clone(),
            (None, Some(v)) => PathBuf::from("/lib/modules").join(v),
            (None, None) => PathBuf::from("/lib/modules").join(running_kernel()?),
            (Some(_), Some(_)) => return Err(Error::bad_arg("--kver", "", "give --kver or --modules, not both")),
        };
        if !dir.is_dir() {
            return Err(Error::bad_arg(
                "modules directory",
                dir.display().to_string(),
                "does not exist (give --kver VERSION or --modules DIR; --no-modules for a kernel with every driver built in)",
            ));
        }
        let host = if b.host_only { Some(crate::kinitrd::host::host_devices(&b.sysfs, &b.mountinfo)?) } else { None };
        let firmware: Option<Arc<dyn Files + Send + Sync>> = match Dir::open(&b.firmware_dir) {
            Ok(d) => Some(Arc::new(d)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io("open", &b.firmware_dir, e)),
        };
        Some(ModuleSpec {
            kernel_config: find_config(&dir, b.kernel_config.as_ref())?,
            kver: dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            dir: Arc::new(Dir::open(&dir).map_err(|e| Error::io("open", &dir, e))?),
            host,
            named: b.module.clone(),
            firmware,
        })
    };
    // Read before the build, which takes seconds: a base that cannot be read
    // fails at once.
    let base = match &b.append_to {
        Some(base) => Some(
            foreign::open_named(base)
                .and_then(|f| foreign::read_capped(f, MAX_BASE))
                .map_err(|e| Error::io("read", base, e))?,
        ),
        None => None,
    };
    let keys = keyfile_segment(&b.keyfile)?;
    let keymap = match keymap_wanted(&b.keymap, &b.vconsole)? {
        Some(name) => match keymap_segment(&name) {
            Ok(seg) => Some((seg, name)),
            // Asked for by name: the build fails. Found in the vconsole file: the
            // initrd is still built, and the user hears what the prompt will use.
            Err(e) if b.keymap.is_none() => {
                out.note(format!(
                    "KEYMAP={name} of {} not carried ({e}); the passphrase prompt uses the US layout",
                    b.vconsole.display()
                ));
                None
            }
            Err(e) => return Err(e),
        },
        None => None,
    };
    let binary: Arc<[u8]> =
        foreign::read_file(&binary, lifeboat_initrd::MAX_FILE).map_err(|e| Error::io("read", &binary, e))?.into();
    let bar = super::progress::Bar::for_output(out);
    super::progress::step(&bar, "building the initrd: modules, firmware, compression");
    let built = lifeboat_initrd::build(&BuildSpec { binary, modules, compression });
    drop(bar);
    let built = built?;
    for n in &built.notes {
        out.note(n);
    }
    let bytes = match &base {
        Some(base) => lifeboat_initrd::append(base, &built.bytes),
        None => built.bytes,
    };
    let bytes = match &keys {
        Some(k) => {
            out.note(format!(
                "{} key file{} in the initrd: anyone who can read {} can open the container{}",
                b.keyfile.len(),
                if b.keyfile.len() == 1 { "" } else { "s" },
                b.out.display(),
                if b.keyfile.len() == 1 { "" } else { "s" }
            ));
            lifeboat_initrd::append(&bytes, k)
        }
        None => bytes,
    };
    let bytes = match &keymap {
        Some((seg, name)) => {
            out.note(format!("console keymap {name} carried for the passphrase prompt"));
            lifeboat_initrd::append(&bytes, seg)
        }
        None => bytes,
    };
    // An initrd holding keys is for root only.
    let mode = if keys.is_some() { 0o600 } else { 0o644 };
    lifeboat_fs::atomic_write(&b.out, &bytes, mode).map_err(|e| Error::io("write", &b.out, e))?;
    out.line(format!(
        "wrote {} ({} bytes; {} modules, {} firmware files) in {} ms",
        b.out.display(),
        bytes.len(),
        built.modules,
        built.firmware,
        t.elapsed().as_millis()
    ));
    out.json(
        &Json::obj()
            .with("out", b.out.display().to_string())
            .with("bytes", bytes.len())
            .with("modules", built.modules)
            .with("firmware", built.firmware),
    );
    Ok(ExitCode::SUCCESS)
}
