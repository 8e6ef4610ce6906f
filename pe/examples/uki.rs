//! `cargo run -p lifeboat-pe --example uki -- STUB OSREL CMDLINE INITRD LINUX OUT`:
//! builds a UKI from files (for trying the result by hand: objdump, bootctl, QEMU).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let [stub, osrel, cmdline, initrd, linux, out] = a.as_slice() else {
        return Err("usage: uki STUB OSREL CMDLINE INITRD LINUX OUT".into());
    };
    let r = |p: &String| std::fs::read(p).map_err(|e| format!("{p}: {e}"));
    let (stub, osrel, cmdline, initrd, linux) = (r(stub)?, r(osrel)?, r(cmdline)?, r(initrd)?, r(linux)?);
    let uki = lifeboat_pe::build_uki(&lifeboat_pe::UkiParts {
        stub: &stub,
        osrel: &osrel,
        cmdline: &cmdline,
        uname: None,
        initrd: &initrd,
        linux: &linux,
    })?;
    std::fs::write(out, uki).map_err(|e| format!("{out}: {e}"))?;
    Ok(())
}
