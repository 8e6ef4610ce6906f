//! `lifeboat initrd build`: the rescue initrd around this very binary.

use std::path::PathBuf;
use std::process::ExitCode;

use argh::FromArgs;
use lifeboat_initrd::{BuildSpec, Compression};

use super::Out;
use crate::error::{Error, Result};
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
/// build a cpio initrd holding lifeboat as /init
pub struct BuildCmd {
    /// where to write it
    #[argh(option)]
    pub out: PathBuf,
    /// the kernel's module directory (/lib/modules/VERSION)
    #[argh(option)]
    pub modules: Option<PathBuf>,
    /// a module to include with its dependencies (repeatable)
    #[argh(option)]
    pub module: Vec<String>,
    /// zstd (default) or none
    #[argh(option, default = "String::from(\"zstd\")")]
    pub compress: String,
    /// write INITRD followed by this archive, as one file the kernel unpacks in order
    #[argh(option)]
    pub append_to: Option<PathBuf>,
    /// the lifeboat binary to embed (default: this one)
    #[argh(option)]
    pub binary: Option<PathBuf>,
}

pub fn run(c: InitrdCmd, out: &Out) -> Result<ExitCode> {
    let InitrdSub::Build(b) = c.cmd;
    let compression = match b.compress.as_str() {
        "zstd" => Compression::Zstd,
        "none" => Compression::None,
        o => return Err(Error::bad_arg("--compress", o, "use zstd or none")),
    };
    let binary = match b.binary {
        Some(p) => p,
        None => std::env::current_exe().map_err(|e| Error::io("find", "this executable", e))?,
    };
    let t = std::time::Instant::now();
    let seg = lifeboat_initrd::build(&BuildSpec { binary, modules_dir: b.modules, modules: b.module, compression })?;
    let bytes = match &b.append_to {
        Some(base) => lifeboat_initrd::append(&std::fs::read(base).map_err(|e| Error::io("read", base, e))?, &seg),
        None => seg,
    };
    lifeboat_fs::atomic_write(&b.out, &bytes, 0o644).map_err(|e| Error::io("write", &b.out, e))?;
    out.line(format!("wrote {} ({} bytes) in {} ms", b.out.display(), bytes.len(), t.elapsed().as_millis()));
    out.json(&Json::obj().with("out", b.out.display().to_string()).with("bytes", bytes.len()));
    Ok(ExitCode::SUCCESS)
}
