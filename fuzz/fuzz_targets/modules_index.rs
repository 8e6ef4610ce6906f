#![no_main]
use libfuzzer_sys::fuzz_target;

// modules.dep / modules.alias / modules.softdep, the selection over them, alias
// globs, and the module index the initrd carries.
fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(4, '\u{1}');
    let (dep, alias, softdep, probe) =
        (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let mut ix = lifeboat_initrd::modules::ModuleIndex::default();
    if ix.parse_dep(dep).is_ok() {
        ix.parse_alias(alias);
        ix.parse_softdep(softdep);
        let named: Vec<String> = probe.split_whitespace().take(4).map(str::to_owned).collect();
        let _ = lifeboat_initrd::modules::select(&ix, Some(&Default::default()), &named);
        let _ = ix.for_modalias(probe);
    }
    let b = lifeboat_initrd::modules::BootIndex::parse(&text);
    for n in b.modules.keys().take(4) {
        let _ = b.load_order(n);
    }
    let _ = lifeboat_initrd::modules::alias::matches(alias.as_bytes(), probe.as_bytes());
});
