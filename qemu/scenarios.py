#!/usr/bin/env python3
"""End-to-end boot scenarios: real OVMF, systemd-boot and kernel in QEMU (TCG).

  python3 qemu/scenarios.py            all scenarios, two guests at once
  python3 qemu/scenarios.py a b d      some of them
  LIFEBOAT_QEMU_JOBS=1 ...             one guest at a time
  LIFEBOAT_QEMU_VERBOSE=1 ...          echo the serial console

Each scenario composes its own image under qemu/out/<name>/ (console.log kept;
images of passing scenarios removed). Exit status 0 only if every one passed.
"""
import os, re, shutil, subprocess, sys, time, traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lbqemu as q
from lbqemu import Failure, lb

OUT = os.path.join(q.HERE, "out")


def say(msg):
    print(f"  | {msg}", flush=True)


def booted(vm, timeout=150):
    m = vm.expect(r"LBTEST: booted tx=(\d+) marker=(\S+) boot=(\d+)", timeout)
    return int(m.group(1))


def pick_third_entry(vm, shown, what):
    """Waits for the systemd-boot menu (`shown` on screen), then Down, Down, Enter:
    the third entry, newest first."""
    vm.expect(shown, 90)
    say(f"systemd-boot menu is up; pressing Down, Down, Enter to pick {what}")
    time.sleep(1)
    for key in ("\x1b[B", "\x1b[B", "\r"):
        vm.send(key)
        time.sleep(0.5)


def finish_ok(vm):
    code = vm.wait_exit(60)
    if code != q.GUEST_EXIT_OK:
        raise Failure(f"guest did not end cleanly (QEMU status {code}, want {q.GUEST_EXIT_OK})")


def three_tx(work, extra_cmdline="", timeout=0, tries=None, lbtest="", kernel="cloud", modules=None):
    img = q.Image(work)
    for i in (1, 2, 3):
        img.commit(q.make_tree(work, f"t{i}", f"v{i}", extra_cmdline, kernel=kernel), f"test transaction {i}")
    out = img.build_initrd(kernel=kernel, modules=modules)
    if kernel == "generic":
        say(out.strip().splitlines()[-1].split(" in ")[0].replace(img.initrd, "the generic initrd"))
    img.lbtest(lbtest)
    img.boot_setup(timeout=timeout, tries=tries)
    return img


def a_default_boot(work):
    """A default boot reaches the newest transaction."""
    img = three_tx(work)
    img.write_root()
    vm = q.Vm(img.disk, f"{work}/vars.fd", f"{work}/console.log").boot()
    tx = booted(vm)
    say(f"userspace reports transaction {tx}")
    if tx != 3:
        raise Failure(f"booted transaction {tx}, want 3")
    finish_ok(vm)


def b_menu_rollback(work):
    """Choose an older transaction in the systemd-boot menu, the state index lost; PID 1 rebuilds it from the trees and rolls back; it sticks."""
    img = three_tx(work, timeout=30)
    for name in ("state.idx", "state.idx.prev"):
        os.unlink(os.path.join(img.root, ".moss/lifeboat", name))
    say("deleted the root's state index and its previous generation")
    img.write_root()
    vars_ = f"{work}/vars.fd"
    vm = q.Vm(img.disk, vars_, f"{work}/console.log").boot()
    pick_third_entry(vm, r"transaction 1 \(", "transaction 1")
    m = vm.expect(r"adopted \S+ as transaction 1 ", 120)
    say(f"PID 1: {m.group(0).strip()} (the index rebuilt from the trees)")
    m = vm.expect(r"rolling back /usr: transaction (\d+) -> (\d+)", 120)
    say(f"PID 1: rolling back /usr: transaction {m.group(1)} -> {m.group(2)}")
    tx = booted(vm)
    say(f"userspace reports transaction {tx}")
    if tx != 1:
        raise Failure(f"booted transaction {tx}, want 1")
    finish_ok(vm)
    say("rebooting with the default entry")
    vm = q.Vm(img.disk, vars_, f"{work}/console.log").boot()
    # The menu waits 30 s; Enter boots the default at once.
    vm.expect(r"transaction 1 \(", 90)
    time.sleep(1)
    vm.send("\r")
    tx = booted(vm)
    say(f"default boot: userspace reports transaction {tx}")
    if tx != 1:
        raise Failure(f"the default boot after rollback went to {tx}, want 1")
    finish_ok(vm)


def c_oneshot(work):
    """After `boot set-oneshot 1`, the next boot goes to 1 once."""
    img = three_tx(work, lbtest="boot1 = --esp /dev/nvme0n1 boot set-oneshot 1\n")
    img.write_root()
    vars_ = f"{work}/vars.fd"
    for n, want in ((1, 3), (2, 1), (3, 1)):
        vm = q.Vm(img.disk, vars_, f"{work}/console.log").boot()
        tx = booted(vm)
        say(f"boot {n}: transaction {tx}")
        if n == 1:
            vm.expect(r"next boot \(once\): (\S+)", 30)
        if tx != want:
            raise Failure(f"boot {n} reached transaction {tx}, want {want}")
        finish_ok(vm)
    # Boot 2 rolled back to 1 and made it the default: boot 3 staying on 1 is that.


def d_glibc_removed(work):
    """libc.so.6 deleted: lifeboat.repair boots; without it the rescue shell repairs."""
    for mode in ("cmdline", "shell"):
        w = os.path.join(work, mode)
        extra = "lifeboat.repair" if mode == "cmdline" else ""
        img = three_tx(w, extra_cmdline=extra)
        os.unlink(os.path.join(img.root, "usr/lib/x86_64-linux-gnu/libc.so.6"))
        say(f"[{mode}] deleted /usr/lib/x86_64-linux-gnu/libc.so.6 from the root image")
        img.write_root()
        vm = q.Vm(img.disk, f"{w}/vars.fd", f"{w}/console.log").boot()
        if mode == "cmdline":
            m = vm.expect(r"repair: (\d+) fixed", 150)
            say(f"PID 1 with lifeboat.repair: {m.group(0)}")
        else:
            m = vm.expect(r"needs libc\.so\.6[^\n]*", 150)
            say(f"PID 1: {m.group(0).strip()}")
            vm.expect(r"lifeboat> ", 30)
            say("rescue shell is up; typing `repair`")
            vm.send("repair\n")
            m = vm.expect(r"repair: (\d+) fixed, (\d+) not recoverable", 60)
            say(m.group(0))
            vm.expect(r"lifeboat> ", 30)
            say("typing `continue`")
            vm.send("continue\n")
        tx = booted(vm)
        say(f"[{mode}] the dynamic init runs: transaction {tx}")
        finish_ok(vm)


def e_pruned(work):
    """The entry's transaction was pruned: the active one boots, with a message."""
    img = three_tx(work)
    lb("--root", img.root, "state", "prune", "--keep", "2")
    lb("--root", img.root, "--esp", img.disk, "boot", "set-default", "1")
    say("pruned transaction 1 but kept its entry, and made it the default")
    img.write_root()
    vm = q.Vm(img.disk, f"{work}/vars.fd", f"{work}/console.log").boot()
    m = vm.expect(r"transaction 1 \(named by the boot entry\) is no longer retained: it was pruned; booting the active transaction 3", 150)
    say(f"PID 1: {m.group(0).strip()}")
    tx = booted(vm)
    if tx != 3:
        raise Failure(f"booted {tx}, want the active transaction 3")
    say(f"userspace reports transaction {tx}")
    finish_ok(vm)


def f_wrong_root(work):
    """A root that never appears: the rescue shell answers on serial."""
    img = three_tx(work, extra_cmdline="root=PARTUUID=00000000-0000-4000-8000-00000000dead lifeboat.rootwait=3")
    img.write_root()
    vm = q.Vm(img.disk, f"{work}/vars.fd", f"{work}/console.log").boot()
    m = vm.expect(r"did not appear within 3 s; block devices seen: [^\n]*", 150)
    say(f"PID 1: {m.group(0).strip()[:160]}")
    vm.expect(r"lifeboat> ", 30)
    vm.send("help\n")
    vm.expect(r"continue \[--force\]", 30)
    say("`help` answered")
    vm.send("disks\n")
    vm.expect(r"nvme0n1p1\s+\S+ \S+\s+esp", 30)
    say("`disks` lists the ESP and the root partition")
    vm.expect(r"lifeboat> ", 30)
    power_off(vm)
    say("`poweroff` ended the VM (status 0)")


OTHER_ENTRY = b"title Other Linux 5.15\nversion 5.15\nmachine-id 0000000000000000000000000000beef\nlinux /other/vmlinuz\noptions root=/dev/sdz1\n"
TWIN_ENTRY = (b"title Lifeboat Test OS (another install)\nsort-key lbtest\nmachine-id feedfacefeedfacefeedfacefeedface\n"
              b"linux /feedfacefeedfacefeedfacefeedface/6.1/vmlinuz-00\noptions lifeboat.tx=7\n")


STUB = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub"


def objcopy_uki(work, name, osrel, cmdline, linux):
    """A Type #2 entry made by systemd-stub's documented recipe: sections added to
    Debian's stub with objcopy at addresses above the stub's own image."""
    args = ["objcopy"]
    for sec, vma, data in ((".osrel", 0x20000, osrel), (".cmdline", 0x30000, cmdline), (".linux", 0x2000000, linux)):
        f = os.path.join(work, f"uki{sec}")
        open(f, "wb").write(data)
        args += ["--add-section", f"{sec}={f}", "--change-section-vma", f"{sec}={vma:#x}"]
    out = os.path.join(work, name)
    subprocess.run(args + [STUB, out], check=True)
    return open(out, "rb").read()


def g_dual_boot(work):
    """Another OS's entries, files and UKI on the ESP: listed, booted around, never changed;
    the guest's `boot status` decodes the real systemd-boot's LoaderFeatures."""
    img = q.Image(work)
    for i in (1, 2):
        img.commit(q.make_tree(work, f"t{i}", f"v{i}"), f"test transaction {i}")
    img.build_initrd()
    seeds = {
        "loader/entries/other-5.15.conf": OTHER_ENTRY,
        "other/vmlinuz": b"not really a kernel\n" * 100,
        "loader/entries/feedfacefeedfacefeedfacefeedface-7-6.1.conf": TWIN_ENTRY,
        "feedfacefeedfacefeedfacefeedface/6.1/vmlinuz-00": b"twin kernel",
        "EFI/Microsoft/Boot/bootmgfw.efi": b"MZ windows boot manager stand-in",
        "EFI/Linux/foreign-6.1.efi": objcopy_uki(work, "foreign.efi", b'PRETTY_NAME="Foreign Linux 12"\nID=foreign\n'
                                                 b"VERSION_ID=12\n", b"root=/dev/sdz2 quiet\n",
                                                 b"not really a kernel\n" * 100),
        # A boot counter in the name: systemd-boot 252 keeps it in the id.
        "EFI/Linux/Counted+2-1.efi": objcopy_uki(work, "counted.efi", b"NAME=Counted\nID=testcount\nVERSION_ID=3\n",
                                                 b"quiet\n", b"not really a kernel either\n" * 100),
    }
    for path, data in seeds.items():
        f = os.path.join(work, "seed")
        open(f, "wb").write(data)
        lb("disk", "put", f, f"{img.disk}:esp:{path}")
    img.lbtest("boot1 = --esp /dev/nvme0n1 boot list\nboot1 = --esp /dev/nvme0n1 boot status\n")
    img.boot_setup()
    lb("--root", img.root, "state", "prune", "--keep", "1")
    lb("--root", img.root, "--esp", img.disk, "boot", "sync", "--initrd", img.initrd)
    lb("--root", img.root, "--esp", img.disk, "boot", "set-default", "2")
    for path, data in seeds.items():
        got = subprocess.run([q.LIFEBOAT, "disk", "cat", f"{img.disk}:esp:{path}"], stdout=subprocess.PIPE).stdout
        if got != data:
            raise Failure(f"{path} changed on the ESP")
    say(f"{len(seeds)} foreign files byte-identical after sync, prune, sync, set-default")
    img.write_root()
    vm = q.Vm(img.disk, f"{work}/vars.fd", f"{work}/console.log").boot()
    tx = booted(vm)
    # BLS order: entries with a sort key (the UKI's "foreign" before "lbtest": ours,
    # then the twin install by machine id; "testcount") before the one without.
    listed = vm.expect(r"(?s)boot list\r?\n(.*?)LBTEST: exit", 60).group(1)
    at = 0
    for rx in (r"foreign-6\.1\.efi\s+Foreign Linux 12 \[UKI 12\]\s+\(not lifeboat's\)",
               r"feedface\S+\s+Lifeboat Test OS \(another install\)\s+\(not lifeboat's\)",
               r"Counted\+2-1\.efi\s+Counted \[UKI 3\] \[tries left 2, done 1\]\s+\(not lifeboat's\)",
               r"other-5\.15\.conf\s+Other Linux 5\.15\s+\(not lifeboat's\)"):
        m = re.compile(rx).search(listed, at)
        if not m:
            raise Failure(f"`boot list` in the guest lacks {rx!r} (in order):\n{listed}")
        at = m.end()
    ids = [ln[2:].split()[0].lower() for ln in listed.splitlines() if ln[:2] in ("* ", "  ") and ln[2:].strip()]
    say(f"booted transaction {tx}; `boot list` in the guest shows the other OS, the other install and the UKIs")
    # The real loader's own menu (LoaderEntries, its order; auto-* are its
    # built-in entries) is the listing's order.
    saw = vm.expect(r"loader saw: ([^\r\n]*)\r?\n", 60).group(1).split()
    saw = [i for i in saw if not i.startswith("auto-")]
    if saw != ids:
        raise Failure(f"systemd-boot's menu order {saw} is not lifeboat's {ids}")
    say(f"systemd-boot's LoaderEntries order is `boot list`'s: {' '.join(saw)}")
    sb = vm.expect(r"secure boot: ([^\r\n]*)\r?\n", 60).group(1).strip()
    # systemd-boot 252 sets LoaderFeatures bits 0-10 (boot.c): every one has a name.
    # The whole line: a read can end inside it.
    feats = vm.expect(r"loader features: ([^\r\n]*)\r?\n", 30).group(1).strip()
    if "Boot counting" not in feats or "Support Type #1 devicetree field" not in feats or "bit " in feats:
        raise Failure(f"LoaderFeatures of the real systemd-boot decoded as {feats!r}")
    say(f"`boot status` in the guest: secure boot {sb}; loader features: {feats}")
    finish_ok(vm)


def h_boot_counting(work):
    """An entry with tries that is never blessed is passed over; the previous good one boots."""
    img = q.Image(work)
    img.commit(q.make_tree(work, "t1", "v1"), "good")
    img.build_initrd()
    img.lbtest("")
    img.boot_setup()
    img.commit(q.make_tree(work, "t2", "v2"), "never blessed")
    img.boot_setup(tries=2)
    img.write_root()
    vars_ = f"{work}/vars.fd"
    seen = []
    for n in range(1, 4):
        vm = q.Vm(img.disk, vars_, f"{work}/console.log").boot()
        tx = booted(vm)
        seen.append(tx)
        say(f"boot {n}: transaction {tx}")
        finish_ok(vm)
    if seen != [2, 2, 1]:
        raise Failure(f"transactions booted {seen}, want [2, 2, 1]")
    entries = lb("disk", "ls", f"{img.disk}:esp:loader/entries")
    if "+0-2.conf" not in entries:
        raise Failure(f"entry of transaction 2 not at +0-2:\n{entries}")
    say("transaction 2's entry ran out of tries (+0-2) and transaction 1 booted")


def health_check(work, name, result):
    """A health check program (the guest has no shell): exits `result`."""
    out = os.path.join(work, name)
    q.sh("gcc", "-O2", f"-DRESULT={result}", "-o", out, os.path.join(q.HERE, "guest/health.c"))
    return out


def w_boot_assessment(work):
    """An update whose required health check fails rolls itself back after assess-failures boots; the one whose checks pass is blessed."""
    img = q.Image(work)
    img.commit(q.make_tree(work, "t1", "v1"), "good")
    img.build_initrd()
    img.boot_setup()
    passes, fails = health_check(work, "check-pass", 0), health_check(work, "check-fail", 1)
    # Each update ships the check that judges it (usr/lib/lifeboat/health.d):
    # transaction 2's passes, transaction 3's fails.
    for i, check in ((2, passes), (3, fails)):
        t = q.make_tree(work, f"t{i}", f"v{i}")
        d = os.path.join(t, "lib/lifeboat/health.d/required.d")
        os.makedirs(d)
        shutil.copy(check, os.path.join(d, "50-app"))
        img.commit(t, f"update {i}")
    img.boot_setup(tries=3)
    # The machine's own wanted check fails on every boot: recorded, never blocking.
    wanted = os.path.join(img.root, "etc/lifeboat/health.d/wanted.d")
    os.makedirs(wanted)
    shutil.copy(fails, os.path.join(wanted, "20-optional"))
    with open(os.path.join(img.root, "etc/lifeboat/lifeboat.conf"), "w") as f:
        f.write("esp = /dev/nvme0n1\nassess-failures = 2\n")
    # The guest's init runs what lifeboat-bless.service runs, on every boot
    # (there is no systemd in the guest); boot 4 first shows boot 3's record.
    img.lbtest("boot4 = boot status\nalways = boot assess --reboot\n")
    img.write_root()
    vars_ = f"{work}/vars.fd"
    seen = []
    for n in range(1, 5):
        vm = q.Vm(img.disk, vars_, f"{work}/console.log").boot()
        if n == 3:
            vm.expect(r"rolling back /usr: transaction 3 -> 2", 120)
            # Transaction 2's entry is still on trial: PID 1 does not name it
            # as the default (should it run out of tries, the loader would
            # boot it still); the loader's own order it is, until blessed.
            m = vm.expect(r"default boot entry is now (\S+)\r?\n", 60)
            if not m.group(1).endswith("-*") or "-2-" in m.group(1):
                raise Failure(f"PID 1 made {m.group(1)} the default, an entry on trial")
            say(f"  PID 1: rolled back /usr 3 -> 2; default {m.group(1)} (the loader's order: 2 is on trial)")
        tx = booted(vm)
        seen.append(tx)
        say(f"boot {n}: transaction {tx}")
        if n in (1, 2):
            vm.expect(r"required check 50-app: failed \(exit status 1\)", 60)
        if n == 1:
            m = vm.expect(r"bad: (failed boot 1 of 2: [^\n]*tries left\))", 60)
            say(f"  assess: {m.group(1).strip()}")
            finish_ok(vm)
        elif n == 2:
            m = vm.expect(r"marked bad: (\S+\.conf) -> (\S+\.conf)", 60)
            say(f"  assess: marked bad {m.group(1)} -> {m.group(2)}")
            m = vm.expect(r"next boot \(once\): (\S+\.conf)", 60)
            say(f"  assess: next boot (once) {m.group(1)}; rebooting")
            vm.expect(r"rebooting into it", 30)
            code = vm.wait_exit(90)
            if code != 0:
                raise Failure(f"boot 2 did not end in a reboot (QEMU status {code}, want 0 under -no-reboot)")
        elif n == 3:
            vm.expect(r"wanted check 20-optional: failed \(exit status 1\)", 60)
            m = vm.expect(r"blessed: (\S+\.conf) -> (\S+\.conf)", 60)
            say(f"  assess: required checks passed (the wanted one failed, recorded); blessed {m.group(1)} -> {m.group(2)}")
            finish_ok(vm)
        else:
            m = vm.expect(r"assessed: \S+ (\S+\.conf) \(transaction 2\): good; blessed", 60)
            say(f"  boot status: the last assessment blessed {m.group(1)}")
            vm.expect(r"wanted check 20-optional: failed \(exit status 1\)", 30)
            finish_ok(vm)
    if seen != [3, 3, 2, 2]:
        raise Failure(f"transactions booted {seen}, want [3, 3, 2, 2]")
    entries = lb("disk", "ls", f"{img.disk}:esp:loader/entries")
    names = sorted(l.split()[-1].rsplit("/", 1)[-1] for l in entries.splitlines() if l.strip().endswith(".conf"))
    want = [re.compile(r".*-1-[^+]*\.conf$"), re.compile(r".*-2-[^+]*\.conf$"), re.compile(r".*-3-.*\+0-2\.conf$")]
    if len(names) != 3 or not all(w.match(n) for w, n in zip(want, names)):
        raise Failure(f"entries are not 1 and 2 blessed, 3 at +0-2:\n{entries}")
    lc = lb("disk", "cat", f"{img.disk}:esp:loader/loader.conf")
    if not re.search(r"^default \S+-2-\*$", lc, re.M):
        raise Failure(f"loader.conf's default is not transaction 2's:\n{lc}")
    say("transaction 3 rolled back by itself after 2 failed boots (+0-2); transaction 2 blessed and the default")


def i_firmware_entry(work):
    """A firmware entry added from the booted system, with BootNext: the firmware boots it."""
    img = q.Image(work)
    img.commit(q.make_tree(work, "t1", "v1"), "one")
    img.build_initrd()
    img.lbtest("boot1 = --esp /dev/nvme0n1 firmware add --label lifeboat-test --next\n"
               "boot2 = --esp /dev/nvme0n1 firmware list\n")
    img.boot_setup()
    img.write_root()
    vars_ = f"{work}/vars.fd"
    vm = q.Vm(img.disk, vars_, f"{work}/console.log").boot()
    booted(vm)
    m = vm.expect(r"added (Boot[0-9A-F]{4}): lifeboat-test -> \\EFI\\systemd\\systemd-bootx64\.efi", 30)
    num = m.group(1)
    say(f"boot 1: PID 1 mounted efivarfs (module from the initrd); userspace added {num} and set BootNext")
    finish_ok(vm)
    vm = q.Vm(img.disk, vars_, f"{work}/console.log").boot()
    vm.expect(rf'BdsDxe: (loading|starting) {num} "lifeboat-test"', 60)
    say(f"boot 2: the firmware started {num} (the VARS file persisted)")
    booted(vm)
    vm.expect(rf"BootCurrent: {num[4:]}", 30)
    vm.expect(rf"\*{num} lifeboat-test\s+HD\(1,GPT,[0-9a-f-]+,0x800,0x[0-9a-f]+\)/\\EFI\\systemd\\systemd-bootx64\.efi \[on /dev/nvme0n1:1 \(esp\)\]", 30)
    say("`firmware list` in the guest: BootCurrent is the new entry, tied to the ESP")
    finish_ok(vm)


def power_off(vm):
    """Ends a VM from the rescue shell; fails unless QEMU exits cleanly."""
    vm.send("poweroff\n")
    code = vm.wait_exit(60)
    if code != 0:
        raise Failure(f"poweroff gave QEMU status {code}")


def shell_answers(vm, want):
    """Waits for the rescue shell's prompt and checks that `cmdline` shows `want`."""
    vm.expect(r"lifeboat> ", 30)
    vm.send("cmdline\n")
    vm.expect(want, 30)


def boot_with_failpoint(work, failpoint):
    """Boots three transactions with LIFEBOAT_FAILPOINT set for PID 1 (the kernel
    hands unknown NAME=value parameters to init as environment)."""
    img = three_tx(work, extra_cmdline=f"LIFEBOAT_FAILPOINT={failpoint}")
    img.write_root()
    return q.Vm(img.disk, f"{work}/vars.fd", f"{work}/console.log").boot()


def j_worker_crash(work):
    """The boot worker dies (simulated crash): PID 1 survives and opens the rescue shell."""
    vm = boot_with_failpoint(work, "pid1-prepare")
    vm.expect(r"failpoint: simulated crash at pid1-prepare", 150)
    m = vm.expect(r"the boot worker exited with status 99", 30)
    say(f"PID 1: {m.group(0)}")
    shell_answers(vm, r"lifeboat\.tx=3")
    say("a new worker opened the rescue shell; `cmdline` answers")
    power_off(vm)
    say("no kernel panic; `poweroff` ended the VM")


def l_stalled_step(work):
    """A boot step that never returns: PID 1 names it, shows kernel warnings, and Enter opens the shell."""
    vm = boot_with_failpoint(work, "hang:pid1-prepare")
    vm.expect(r"failpoint: hanging at pid1-prepare", 150)
    m = vm.expect(r"lifeboat: still looking for the root device after (\d+) s; the kernel", 40)
    say(f"PID 1: {m.group(0)[len('lifeboat: '):]}...")
    vm.expect(r"press Enter to stop it and open the rescue shell", 10)
    vm.send("\r")
    vm.expect(r"the boot worker was stopped after it stalled", 30)
    shell_answers(vm, r"hang:pid1-prepare")
    say("Enter stopped the stalled worker; a new one opened the rescue shell")
    power_off(vm)


def k_dracut_hook(work):
    """A dracut (systemd) initrd with lifeboat's module: the unit rolls /usr back to the entry's transaction."""
    if not shutil.which("dracut"):
        raise Failure("dracut is not installed (scripts/setup.sh installs it)")
    img = three_tx(work)
    # A private copy of dracut's tree with lifeboat's module added: nothing on the
    # host changes.
    base = os.path.join(work, "dracut")
    shutil.copytree("/usr/lib/dracut", base, symlinks=True)
    # Installed the way README.md says: a plain recursive copy of the module.
    mod = os.path.join(base, "modules.d", "90lifeboat")
    shutil.copytree(os.path.join(q.REPO, "contrib/dracut/90lifeboat"), mod)
    bindir = os.path.join(work, "bin")
    os.makedirs(bindir)
    shutil.copy(q.RESCUE, os.path.join(bindir, "lifeboat"))
    kver = q.kver()
    initrd = os.path.join(work, "dracut.img")
    env = dict(os.environ, dracutbasedir=base, LIFEBOAT_BIN=os.path.join(bindir, "lifeboat"))
    q.sh("dracut", "--no-hostonly", "--add", "lifeboat", "--kver", kver,
         "--kmoddir", os.path.join(q.CACHE, "kernel/lib/modules", kver), "--force", initrd, env=env)
    listing = q.sh("lsinitrd", initrd)
    if "lifeboat-initrd.service" not in listing or "usr/bin/lifeboat" not in listing:
        raise Failure("dracut did not include lifeboat's module")
    say("built a dracut initrd with the lifeboat module (unit + static binary)")
    root_uuid = next(p["partuuid"] for p in img.parts if p["kind"] == "root-x86-64")
    ours = [l.split()[-1] for l in lb("disk", "ls", f"{img.disk}:esp:loader/entries").splitlines() if l.strip().endswith(".conf")]
    linux = next(l.split()[1] for l in lb("disk", "cat", f"{img.disk}:esp:{ours[0]}").splitlines()
                 if l.startswith("linux "))
    entry = (f"title dracut with lifeboat, transaction 1\nlinux {linux}\ninitrd /dracut-lifeboat.img\n"
             f"options root=PARTUUID={root_uuid} ro console=ttyS0,115200 panic=-1 init=/sbin/init lifeboat.tx=1\n")
    with open(os.path.join(work, "e.conf"), "w") as f:
        f.write(entry)
    lb("disk", "put", initrd, f"{img.disk}:esp:dracut-lifeboat.img")
    lb("disk", "put", os.path.join(work, "e.conf"), f"{img.disk}:esp:loader/entries/dracut-lifeboat.conf")
    lb("--root", img.root, "--esp", img.disk, "boot", "set-default", "dracut-lifeboat.conf")
    img.write_root()
    vm = q.Vm(img.disk, f"{work}/vars.fd", f"{work}/console.log").boot()
    m = vm.expect(r"rolling back /usr: transaction 3 -> 1", 240)
    say("systemd in the dracut initrd ran lifeboat-initrd.service: rolling back /usr: transaction 3 -> 1")
    tx = booted(vm, 240)
    if tx != 1:
        raise Failure(f"booted {tx}, want 1")
    say(f"userspace reports transaction {tx}")
    finish_ok(vm)


def moss_tool(work, name):
    """The prebuilt moss or mkstone of ../shared/moss/bin, unpacked into the work dir."""
    out = os.path.join(work, name)
    if not os.path.exists(out):
        src = os.path.join(q.REPO, "..", "shared", "moss", "bin", f"{name}.zst")
        if not os.path.exists(src):
            raise Failure(f"{src} is missing: the moss scenario needs the prebuilt {name}")
        q.sh("zstd", "-d", "-q", "-f", src, "-o", out)
        os.chmod(out, 0o755)
    return out


def m_moss_root(work):
    """A root the real moss made: moss.fstx in the menu entry rolls back to an older state."""
    moss, mkstone = moss_tool(work, "moss"), moss_tool(work, "mkstone")
    img = q.Image(work, size="1G")
    repo = os.path.join(work, "repo")
    os.makedirs(repo, exist_ok=True)
    # One package holding the whole test /usr, released three times: moss installs
    # the first and syncs to each next, making states 1, 2 and 3.
    for i in (1, 2, 3):
        tree = q.make_tree(work, f"t{i}", f"v{i}")
        # moss writes each tree's os-release itself (through the hard link, when a
        # package ships one): the package leaves it to moss.
        os.unlink(os.path.join(tree, "lib/os-release"))
        # moss links /lib64 to usr/lib: the loader must be found there too.
        os.symlink("x86_64-linux-gnu/ld-linux-x86-64.so.2", os.path.join(tree, "lib/ld-linux-x86-64.so.2"))
        stage = os.path.join(work, f"stage{i}")
        shutil.rmtree(stage, ignore_errors=True)
        os.makedirs(stage)
        os.rename(tree, os.path.join(stage, "usr"))
        q.sh(mkstone, os.path.join(work, f"later-system-{i}.stone"), stage, "--name", "system", "--version", f"{i}.0",
             "--release", str(i), "--summary", "lifeboat test system", "--homepage", "https://example.invalid/",
             "--license", "MPL-2.0")
    # `moss index` without -D takes / as its root and makes /.moss there (lock,
    # database, store, cache) on the machine running the tests: give it a root of
    # its own in the work directory.
    index_root = os.path.join(work, "moss-index-root")
    os.makedirs(index_root, exist_ok=True)

    def release(i):
        os.rename(os.path.join(work, f"later-system-{i}.stone"), os.path.join(repo, f"system-{i}.0-{i}-1-x86_64.stone"))
        q.sh(moss, "-D", index_root, "index", repo)
    release(1)
    q.sh(moss, "-D", img.root, "repo", "add", "local", f"file://{repo}/stone.index", "-c", "test repo", "-y")
    q.sh(moss, "-D", img.root, "install", "-y", "system")
    for i in (2, 3):
        release(i)
        q.sh(moss, "-D", img.root, "repo", "update", "local")
        q.sh(moss, "-D", img.root, "sync", "-y")
    out = q.sh(moss, "-D", img.root, "state", "list")
    if "State #3" not in out:
        raise Failure(f"moss made no third state:\n{out}")
    say("moss made states 1, 2, 3 (install, sync, sync); 3 is active")
    states = lb("--root", img.root, "state", "list")
    if len([l for l in states.splitlines() if l.strip()[:1].isdigit()]) != 3:
        raise Failure(f"lifeboat does not see moss's three states:\n{states}")
    img.build_initrd()
    img.boot_setup(timeout=30)
    img.write_root()
    vars_ = f"{work}/vars.fd"
    vm = q.Vm(img.disk, vars_, f"{work}/console.log").boot()
    pick_third_entry(vm, r"state 1: ", "moss state 1")
    m = vm.expect(r"rolling back /usr: transaction (\d+) -> (\d+)", 120)
    say(f"PID 1 (no SQLite, moss's swap): rolling back /usr: state {m.group(1)} -> {m.group(2)}")
    tx = booted(vm)
    say(f"the real init reports state {tx}")
    if tx != 1:
        raise Failure(f"booted state {tx}, want 1")
    finish_ok(vm)
    # The root as the guest left it, judged by moss itself.
    p = next(p for p in img.parts if p["kind"] == "root-x86-64")
    mnt = os.path.join(work, "mnt")
    os.makedirs(mnt, exist_ok=True)
    q.sh("mount", "-o", f"loop,offset={p['start']},sizelimit={p['size']}", img.disk, mnt)
    try:
        active = open(os.path.join(mnt, "usr/.stateID")).read().strip()
        if active != "1" or not os.path.isdir(os.path.join(mnt, ".moss/root/3/usr")):
            raise Failure(f"after the boot: active {active}, .moss/root: {os.listdir(os.path.join(mnt, '.moss/root'))}")
        v = q.sh(moss, "-D", mnt, "state", "verify")
        if "No issues found" not in v:
            raise Failure(f"moss state verify after the rollback:\n{v}")
        say("moss state verify on the booted root: no issues; .moss/root/3/usr archived, usr/.stateID = 1")
    finally:
        subprocess.run(["umount", mnt])


def n_generic_kernel_buses(work):
    """Debian's generic kernel (all drivers modules), the default initrd: boots from NVMe, virtio-blk, virtio-scsi, SATA and USB."""
    img = three_tx(work, kernel="generic")
    img.write_root()
    for bus in ["nvme", "virtio-blk", "virtio-scsi", "ahci", "usb"]:
        vm = q.Vm(img.disk, f"{work}/vars-{bus}.fd", f"{work}/console.log", bus=bus).boot()
        m = vm.expect(r"lifeboat: (\d+) kernel modules loaded for the devices present", 120)
        tx = booted(vm, 200)
        say(f"{bus}: PID 1 loaded {m.group(1)} modules by modalias; userspace reports transaction {tx}")
        if tx != 3:
            raise Failure(f"{bus}: booted transaction {tx}, want 3")
        finish_ok(vm)


def o_root_filesystems(work):
    """Roots on xfs and btrfs (named by PARTLABEL= and LABEL=) with the generic kernel: the filesystem's module is loaded by its type."""
    img = three_tx(work, kernel="generic")
    os.makedirs(os.path.join(img.root, "etc/kernel/cmdline.d"), exist_ok=True)
    for fs, root_arg in [("xfs", "root=PARTLABEL=root-x86-64"), ("btrfs", "root=LABEL=lbroot")]:
        # A machine-local command line, as a user copies it from a running system.
        with open(os.path.join(img.root, "etc/kernel/cmdline.d/50-root.cmdline"), "w") as f:
            f.write(root_arg + "\n")
        img.boot_setup()
        img.write_root(fs)
        vm = q.Vm(img.disk, f"{work}/vars-{fs}.fd", f"{work}/console.log", bus="virtio-blk").boot()
        vm.expect(re.escape(f"lifeboat: {root_arg} is /dev/vda2"), 200)
        m = vm.expect(r"mounted (\S+) \((\w+)\) on /sysroot", 200)
        if m.group(2) != fs:
            raise Failure(f"the root was mounted as {m.group(2)}, want {fs}")
        tx = booted(vm, 200)
        say(f"{fs} root ({root_arg}): mounted {m.group(1)} as {fs}; userspace reports transaction {tx}")
        if tx != 3:
            raise Failure(f"{fs}: booted transaction {tx}, want 3")
        finish_ok(vm)


def compressed_modules(work):
    """The generic kernel's modules of the default set, compressed (.ko.xz and
    .ko.zst alternately) into a module directory of their own, with depmod run."""
    return q.generic_set_tree(work, "generic", compress=True)


def p_compressed_modules(work):
    """A module set of .ko.xz and .ko.zst (a kernel that cannot decompress them): decompressed at build time, it boots."""
    mods, n = compressed_modules(work)
    say(f"compressed {n} modules of the generic set: half .ko.xz, half .ko.zst; depmod run on them")
    img = three_tx(work, kernel="generic", modules=mods)
    img.write_root()
    vm = q.Vm(img.disk, f"{work}/vars.fd", f"{work}/console.log", bus="virtio-scsi").boot()
    m = vm.expect(r"lifeboat: (\d+) kernel modules loaded for the devices present", 120)
    tx = booted(vm, 200)
    say(f"virtio-scsi: {m.group(1)} modules loaded; userspace reports transaction {tx}")
    if tx != 3:
        raise Failure(f"booted transaction {tx}, want 3")
    finish_ok(vm)


def kernel_and_tx(vm, timeout=200):
    """(kernel release, transaction) the guest userspace reports."""
    # The whole line: a read of the serial console may end inside the release.
    k = vm.expect(r"LBTEST: kernel=(\S+)\r?\n", timeout).group(1)
    return k, booted(vm, 60)


def s_kernel_initrds(work):
    """Transactions on two kernels (two Debian ABIs), boot sync without --initrd: each entry's rescue initrd is built from its own transaction's modules; the default boots 3 on kernel B, the menu rolls back to 1 on kernel A, a one-shot boot returns to 3 on kernel B."""
    ka, kb = q.kernel_files("generic")[0], q.kernel_files("generic2")[0]
    if ka == kb:
        raise Failure(f"the cache's generic and generic2 kernels are both {ka}: qemu/fetch.sh fetches another ABI")
    mods = {k: q.generic_set_tree(work, k)[0] for k in ("generic", "generic2")}
    img = q.Image(work)
    for i, kernel in ((1, "generic"), (2, "generic"), (3, "generic2")):
        img.commit(q.make_tree(work, f"t{i}", f"v{i}", kernel=kernel, modules=mods[kernel]), f"test transaction {i}")
    say(f"transactions 1 and 2 carry kernel A {ka}, transaction 3 kernel B {kb}, each with its generic module "
        "set in usr/lib/modules and the rescue build in usr/lib/lifeboat/lifeboat-rescue")
    img.lbtest("boot2 = --esp /dev/nvme0n1 boot set-oneshot 3\n")
    lb("--root", img.root, "--esp", img.disk, "boot", "install")
    out = lb("--root", img.root, "--esp", img.disk, "boot", "sync", "--timeout", "30")
    built = re.findall(r"built the rescue initrd for kernel (\S+) \(transactions? ([\d, ]+)\): (\d+) modules", out)
    for k, txs, n in built:
        say(f"boot sync built the rescue initrd for kernel {k} (transaction{'s' if ',' in txs else ''} {txs}): "
            f"{n} modules")
    if sorted((k, t) for k, t, _ in built) != sorted([(ka, "1, 2"), (kb, "3")]):
        raise Failure(f"boot sync should build one initrd per kernel:\n{out}")
    token = "4c424f4154544553544d414348494e45"
    for tx, k in ((1, ka), (2, ka), (3, kb)):
        entry = lb("disk", "cat", f"{img.disk}:esp:loader/entries/{token}-{tx}-{k}.conf")
        initrds = re.findall(r"^initrd (\S+)$", entry, re.M)
        if not initrds or not initrds[-1].startswith(f"/{token}/{k}/lifeboat-"):
            raise Failure(f"entry {tx} does not carry kernel {k}'s rescue initrd:\n{entry}")
        linux = re.search(r"^linux (\S+)$", entry, re.M).group(1)
        say(f"entry {tx}: linux {linux}, initrd {initrds[-1]}")
    again = lb("--root", img.root, "--esp", img.disk, "boot", "sync", "--timeout", "30")
    if "built the rescue initrd" in again or "up to date" not in again:
        raise Failure(f"a second sync with the same inputs built or changed something:\n{again}")
    say("a second boot sync builds nothing: up to date")
    img.write_root()
    vars_ = f"{work}/vars.fd"
    log = f"{work}/console.log"

    vm = q.Vm(img.disk, vars_, log).boot()
    vm.expect(r"transaction 1 \(", 90)
    time.sleep(1)
    vm.send("\r")
    m = vm.expect(r"lifeboat: (\d+) kernel modules loaded for the devices present", 200)
    k, tx = kernel_and_tx(vm)
    say(f"boot 1 (default): PID 1 loaded {m.group(1)} modules; userspace reports kernel {k}, transaction {tx}")
    if (k, tx) != (kb, 3):
        raise Failure(f"the default boot reached transaction {tx} on {k}, want 3 on {kb}")
    finish_ok(vm)

    vm = q.Vm(img.disk, vars_, log).boot()
    pick_third_entry(vm, r"transaction 1 \(", "transaction 1 (kernel A)")
    m = vm.expect(r"lifeboat: (\d+) kernel modules loaded for the devices present", 200)
    rb = vm.expect(r"rolling back /usr: transaction (\d+) -> (\d+)", 120)
    k, tx = kernel_and_tx(vm)
    say(f"boot 2 (menu): PID 1 loaded {m.group(1)} modules, rolled back /usr {rb.group(1)} -> {rb.group(2)}; "
        f"userspace reports kernel {k}, transaction {tx}")
    if (k, tx) != (ka, 1):
        raise Failure(f"the menu's transaction 1 booted transaction {tx} on {k}, want 1 on {ka}")
    m = vm.expect(r"next boot \(once\): (\S+)", 60)
    say(f"guest: lifeboat boot set-oneshot 3: next boot (once): {m.group(1)}")
    finish_ok(vm)

    vm = q.Vm(img.disk, vars_, log).boot()
    # The menu (timeout 30) comes up with the one-shot entry chosen; Enter boots it.
    m = vm.expect(r"(transaction 1 \()|LBTEST: kernel=(\S+)\r?\n", 90)
    if m.group(1):
        time.sleep(1)
        vm.send("\r")
    rb = vm.expect(r"rolling back /usr: transaction (\d+) -> (\d+)", 200)
    k, tx = kernel_and_tx(vm)
    say(f"boot 3 (one-shot): PID 1 rolled /usr {rb.group(1)} -> {rb.group(2)}; userspace reports kernel {k}, "
        f"transaction {tx}")
    if (k, tx) != (kb, 3):
        raise Failure(f"the one-shot boot reached transaction {tx} on {k}, want 3 on {kb}")
    finish_ok(vm)


def root_partition(img):
    return next(p for p in img.parts if p["kind"] == "root-x86-64")


def verify_problems(out):
    """The difference lines of `lifeboat verify` (not its summary)."""
    return [l for l in out.splitlines() if l.strip() and not l.startswith("transaction ")]


def judge_root_image(path, mnt, allowed):
    """None if a crash image of the root holds, else why not: `e2fsck -p` (what a
    boot runs: journal replay, orphans) leaves nothing for `e2fsck -fn`; then,
    mounted, lifeboat's index loads and `verify --store` finds /usr to be the
    complete transaction its .stateID names and every blob a retained transaction
    needs present and whole (differences in `allowed` paths excepted: damage made
    on purpose before the run)."""
    r = subprocess.run(["e2fsck", "-fp", path], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode >= 4:
        return f"e2fsck -p exited {r.returncode}: {r.stdout.strip()[-400:]}"
    r = subprocess.run(["e2fsck", "-fn", path], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        return f"e2fsck -fn after -p exited {r.returncode}: {r.stdout.strip()[-400:]}"
    r = subprocess.run(["mount", "-o", "loop", path, mnt], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        return f"does not mount: {r.stdout.strip()}"
    try:
        r = subprocess.run([q.LIFEBOAT, "--root", mnt, "--json", "state", "list"], capture_output=True, text=True)
        if r.returncode != 0:
            return f"the index does not load: {r.stderr.strip()}"
        r = subprocess.run([q.LIFEBOAT, "--root", mnt, "verify", "--store"], capture_output=True, text=True)
        problems = verify_problems(r.stdout)
        bad = [l for l in problems if not any(a in l for a in allowed)]
        # Exit 1 is differences: each must be an allowed one, and there must be one.
        if bad or r.returncode not in (0, 1) or (r.returncode == 1 and not problems):
            return f"verify --store exited {r.returncode}: {'; '.join(bad[:5]) or r.stderr.strip()}"
    finally:
        subprocess.run(["umount", mnt])
    return None


def judge_log(work, name, base, wlog, part, allowed):
    """Judges every crash image of one boot's log; returns (counts, failures)."""
    import logwrites, tempfile
    data, entries = logwrites.read_log(wlog)
    eps = logwrites.epochs(entries, part["start"], part["size"])
    shm = tempfile.mkdtemp(dir="/dev/shm", prefix="lbcrash-")
    mnt = os.path.join(shm, "mnt")
    os.makedirs(mnt)
    path = os.path.join(shm, "root.img")
    tried, failures = 0, []
    limit = int(os.environ.get("LIFEBOAT_CRASH_LIMIT", "240"))
    try:
        for what, image in logwrites.crash_images(base, data, eps, limit=limit):
            with open(path, "wb") as f:
                f.write(image)
            tried += 1
            why = judge_root_image(path, mnt, allowed)
            if why:
                failures.append(f"{name}, {what}: {why}")
                if len(failures) <= 2:
                    # The image as the cut left it (the judge changed its copy).
                    with open(os.path.join(work, f"crash-{name}-{len(failures)}.img"), "wb") as f:
                        f.write(image)
    finally:
        shutil.rmtree(shm, ignore_errors=True)
    counts = (len(entries), sum(len(e) for e in eps), len(eps), tried, tried - len(failures))
    return counts, failures


def q_root_power_cut(work):
    """Power cuts of the root at the block level: every crash image of repair, commit, activate and prune in a real guest holds."""
    img = q.Image(work, size="384M", esp="96M")
    for i in (1, 2):
        img.commit(q.make_tree(work, f"t{i}", f"v{i}", "lifeboat.repair"), f"test transaction {i}")
    t3 = q.make_tree(work, "t3", "v3", "lifeboat.repair")
    # New content for the guest's commit: 300 small files and one of 3 MiB.
    rng = __import__("random").Random(3)
    os.makedirs(os.path.join(t3, "share/payload"))
    for i in range(300):
        with open(os.path.join(t3, f"share/payload/f{i:03}"), "wb") as f:
            f.write(rng.randbytes(rng.randint(100, 16384)))
    with open(os.path.join(t3, "share/payload/big"), "wb") as f:
        f.write(rng.randbytes(3 << 20))
    shutil.copytree(t3, os.path.join(img.root, "var/lbtest/t3"), symlinks=True)
    # virtio-blk: the kernel turns a FUA write into a write and a flush, which
    # the log records; QEMU 7.2's NVMe drops the FUA bit, so a commit block
    # the kernel believes durable would share an epoch with later writes.
    img.build_initrd(extra_modules=["virtio_blk", "virtio_pci"])
    # One operation per boot, each boot with its own log: boot 1 is PID 1's
    # repair (lifeboat.repair; libc.so.6 deleted below), then one guest command
    # each (`verify --store` after it, in the guest, must pass).
    steps = [("repair (PID 1)", None),
             ("commit", "--root / state commit --from /var/lbtest/t3 --summary guest"),
             ("activate", "--root / state activate 1"),
             ("prune", "--root / state prune --keep 1")]
    img.lbtest("".join(f"boot{n} = {op}\nboot{n} = --root / verify --store\n"
                       for n, (_, op) in enumerate(steps, 1) if op))
    img.boot_setup()
    libc = "lib/x86_64-linux-gnu/libc.so.6"
    os.unlink(os.path.join(img.root, "usr", libc))
    # Inode tables and journal written now, not zeroed by the guest kernel in the
    # background (QEMU 7.2's log of zeroing writes is unreliable under load).
    img.write_root(ext4_opts="lazy_itable_init=0,lazy_journal_init=0", ext4_block=4096)
    part = root_partition(img)
    say(f"deleted /usr/{libc}; four boots with lifeboat.repair, the disk through QEMU's blklogwrites")
    rows, failures = [], []
    for n, (name, op) in enumerate(steps, 1):
        with open(img.disk, "rb") as f:
            f.seek(part["start"])
            base = f.read(part["size"])
        wlog = os.path.join(work, f"writes-{n}.log")
        vm = q.Vm(img.disk, f"{work}/vars.fd", f"{work}/console.log", write_log=wlog, bus="virtio-blk").boot()
        if op is None:
            m = vm.expect(r"repair: (\d+) fixed", 150)
            say(f"boot {n}, PID 1: {m.group(0)}")
        booted(vm)
        if op:
            for cmd in (op, "verify --store"):
                m = vm.expect(r"LBTEST: exit (\d+)", 300)
                if m.group(1) != "0":
                    raise Failure(f"boot {n}: in the guest, lifeboat {cmd} exited {m.group(1)}")
            say(f"boot {n}, guest: lifeboat {op}: exit 0, then verify --store: exit 0")
        finish_ok(vm)
        # Before the repair's link reaches the disk, libc.so.6 is still missing.
        counts, fails = judge_log(work, name.split()[0], base, wlog, part, [libc] if op is None else [])
        rows.append((name, *counts))
        failures += fails
        say(f"{name}: {counts[0]} requests, {counts[1]} writes to the root in {counts[2]} flush epochs; "
            f"crash images {counts[3]} tried, {counts[4]} held")
    say(f"all: {sum(r[4] for r in rows)} crash images tried, {sum(r[5] for r in rows)} held "
        "(e2fsck -p then -fn clean; index loads; verify --store: /usr one complete transaction, every blob there)")
    if failures:
        raise Failure(f"{len(failures)} crash images do not hold:\n" + "\n".join(failures[:10]))


def partition_digest(disk, part):
    """SHA-256 of a partition's bytes in the image."""
    import hashlib
    h = hashlib.sha256()
    with open(disk, "rb") as f:
        f.seek(part["start"])
        left = part["size"]
        while left:
            b = f.read(min(left, 1 << 20))
            if not b:
                break
            h.update(b)
            left -= len(b)
    return h.hexdigest()


def r_hibernation(work):
    """Hibernation (generic kernel, swap partition): with no resume= PID 1 finds the image, mounts nothing (the root's bytes unchanged) and `resume` in the shell restores the session; with resume= PID 1 hands the device to the kernel and the session comes back."""
    img = q.Image(work, size="1G", esp="200M", root="560M")
    for i in (1, 2, 3):
        img.commit(q.make_tree(work, f"t{i}", f"v{i}", kernel="generic"), f"test transaction {i}")
    img.build_initrd(kernel="generic")
    swap = img.add_swap()
    dev = f"/dev/nvme0n1p{swap['number']}"
    img.lbtest(f"hibernate1 = {dev}\nhibernate2 = {dev}\n")
    img.boot_setup()
    img.write_root()
    root = root_partition(img)
    vars_ = f"{work}/vars.fd"

    vm = q.Vm(img.disk, vars_, f"{work}/console.log").boot()
    booted(vm, 200)
    m = vm.expect(r"LBTEST: hibernating to \S+ \(\S+\) memory-marker=(\S+)\r?\n", 60)
    marker = m.group(1)
    say(f"boot 1: the guest hibernated to {dev} with memory-marker {marker}")
    vm.wait_exit(300)
    before = partition_digest(img.disk, root)

    vm = q.Vm(img.disk, vars_, f"{work}/console.log").boot()
    m = vm.expect(r"lifeboat: \[hibernation\] (\S+) holds a hibernation image[^\n]*no resume= given", 200)
    say(f"boot 2 (no resume=): PID 1: {m.group(1)} holds a hibernation image; the rescue shell opens")
    vm.expect(r"lifeboat> ", 30)
    if partition_digest(img.disk, root) != before:
        raise Failure("the root partition changed while a hibernation image existed")
    say("the root partition's bytes are unchanged (nothing was mounted)")
    vm.send("resume\n")
    m = vm.expect(r"LBTEST: resumed memory-marker=(\S+)\r?\n", 300)
    if m.group(1) != marker:
        raise Failure(f"resumed with memory-marker {m.group(1)}, want {marker}")
    say(f"`resume` in the shell: the hibernated session came back (memory-marker {marker})")
    finish_ok(vm)

    os.makedirs(os.path.join(img.root, "etc/kernel/cmdline.d"), exist_ok=True)
    with open(os.path.join(img.root, "etc/kernel/cmdline.d/50-resume.cmdline"), "w") as f:
        f.write(f"resume=PARTUUID={swap['partuuid']}\n")
    img.boot_setup()
    say(f"boot sync with resume=PARTUUID={swap['partuuid']} in the machine's command line")
    vm = q.Vm(img.disk, vars_, f"{work}/console.log").boot()
    vm.expect(r"resume=\S+ \(\S+\): no hibernation image; booting", 200)
    booted(vm, 200)
    m = vm.expect(r"LBTEST: hibernating to \S+ \(\S+\) memory-marker=(\S+)\r?\n", 60)
    marker = m.group(1)
    say(f"boot 3: hibernated again, memory-marker {marker}")
    vm.wait_exit(300)
    vm = q.Vm(img.disk, vars_, f"{work}/console.log").boot()
    m = vm.expect(r"lifeboat: (\S+) holds a hibernation image \([^)]*\)\); resuming it", 200)
    m = vm.expect(r"LBTEST: resumed memory-marker=(\S+)\r?\n", 300)
    if m.group(1) != marker:
        raise Failure(f"resumed with memory-marker {m.group(1)}, want {marker}")
    say(f"boot 4 (resume=): PID 1 handed the swap to the kernel; the session came back (memory-marker {marker})")
    finish_ok(vm)


def t_luks_root(work):
    """A LUKS2 root (argon2id, made by the real cryptsetup; ext4 inside) on Debian's generic kernel: PID 1 asks for the passphrase on the serial console (a wrong one first), opens it with dm-crypt and boots; a rollback picked in the menu asks again and rolls back."""
    img = q.Image(work, size="1G", esp="200M", root="400M")
    fs_uuid = "6c1f0b7e-3d2a-4c55-9e11-7a0d5b9c2e44"
    for i in (1, 2, 3):
        img.commit(q.make_tree(work, f"t{i}", f"v{i}", kernel="generic"), f"test transaction {i}")
    # The machine's console keymap (German) carried for the prompt.
    img.build_initrd(kernel="generic", extra=("--keymap", "de"))
    # What boot sync writes for a root on LUKS on a running system.
    os.makedirs(os.path.join(img.root, "etc/kernel/cmdline.d"), exist_ok=True)
    passphrase = "correct horse battery staple"
    t0 = time.time()
    uuid = img.write_root_luks(passphrase, fs_uuid)
    with open(os.path.join(img.root, "etc/kernel/cmdline.d/50-root.cmdline"), "w") as f:
        f.write(f"root=UUID={fs_uuid} rd.luks.uuid={uuid}\n")
    img.boot_setup(timeout=30)
    say(f"root: LUKS2 {uuid} (cryptsetup luksFormat, argon2id), ext4 {fs_uuid} inside, encrypted in {time.time() - t0:.0f} s")
    vars_ = f"{work}/vars.fd"
    vm = q.Vm(img.disk, vars_, f"{work}/console.log").boot()
    vm.expect(r"transaction 3 \(", 90)
    time.sleep(1)
    vm.send("\r")
    m = vm.expect(r"console keymap de loaded \((\d+) entries\)", 200)
    say(f"PID 1 loaded the console keymap de ({m.group(1)} entries) before asking")
    vm.expect(r"Passphrase for (\S+) \(LUKS2 " + re.escape(uuid) + r"\): ", 200)
    say("PID 1 asks for the passphrase on the serial console; typing a wrong one")
    vm.send("wrong passphrase\n")
    m = vm.expect(r"wrong passphrase \((\d+) more tries\)", 300)
    say(f"PID 1: wrong passphrase ({m.group(1)} more tries); typing the right one")
    vm.expect(r"Passphrase for ", 60)
    t = time.time()
    vm.send(passphrase + "\n")
    m = vm.expect(r"LUKS2 \S+ opened as (\S+) \(keyslot (\d+)", 300)
    say(f"PID 1 opened it as {m.group(1)} (keyslot {m.group(2)}) {time.time() - t:.0f} s after the passphrase")
    vm.expect(r"root=UUID=\S+ is (\S+)", 60)
    tx = booted(vm, 200)
    if tx != 3:
        raise Failure(f"booted transaction {tx}, want 3")
    say(f"userspace reports transaction {tx}")
    finish_ok(vm)

    vm = q.Vm(img.disk, vars_, f"{work}/console.log").boot()
    pick_third_entry(vm, r"transaction 1 \(", "transaction 1")
    vm.expect(r"Passphrase for ", 200)
    vm.send(passphrase + "\n")
    vm.expect(r"opened as ", 300)
    m = vm.expect(r"rolling back /usr: transaction (\d+) -> (\d+)", 120)
    say(f"menu pick: passphrase again, then PID 1: rolling back /usr: transaction {m.group(1)} -> {m.group(2)}")
    tx = booted(vm, 200)
    if tx != 1:
        raise Failure(f"booted transaction {tx}, want 1")
    say(f"userspace reports transaction {tx}")
    finish_ok(vm)


def u_lvm_on_luks(work):
    """Debian's encrypted LVM (generic kernel): a VG with root and swap LVs on a LUKS2 container, opened by a key file built into the initrd (initrd build --keyfile UUID=FILE), the root LV activated by rd.lvm.lv= from the PV's own metadata; libc deleted from the root, lifeboat.repair mends it through the mapping; boots and rolls back from the menu."""
    img = q.Image(work, size="1G", esp="200M", root="400M")
    fs_uuid = "7d2e1c3b-4a5f-4e66-8f22-8b1e6c0d3f55"
    for i in (1, 2, 3):
        img.commit(q.make_tree(work, f"t{i}", f"v{i}", kernel="generic"), f"test transaction {i}")
    os.unlink(os.path.join(img.root, "usr/lib/x86_64-linux-gnu/libc.so.6"))
    keyfile = os.path.join(work, "root.key")
    with open(keyfile, "wb") as f:
        f.write(os.urandom(64))
    t0 = time.time()
    uuid, off = img.write_root_lvm_on_luks(keyfile, fs_uuid)
    out = img.build_initrd(kernel="generic", extra=("--keyfile", f"{uuid}={keyfile}"))
    os.makedirs(os.path.join(img.root, "etc/kernel/cmdline.d"), exist_ok=True)
    with open(os.path.join(img.root, "etc/kernel/cmdline.d/50-root.cmdline"), "w") as f:
        f.write(f"root=UUID={fs_uuid} rd.luks.uuid={uuid} rd.lvm.lv=vg0/root lifeboat.repair\n")
    img.boot_setup(timeout=30)
    say(f"LUKS2 {uuid} > PV > vg0/root (at {off} in the PV) + vg0/swap, made in {time.time() - t0:.0f} s; "
        f"the key file in the initrd")
    vars_ = f"{work}/vars.fd"
    vm = q.Vm(img.disk, vars_, f"{work}/console.log").boot()
    vm.expect(r"transaction 3 \(", 90)
    time.sleep(1)
    vm.send("\r")
    m = vm.expect(r"opened with the key file (\S+)", 300)
    say(f"PID 1 opened the container with the key file {m.group(1)} (no passphrase asked)")
    m = vm.expect(r"LVM: activated vg0/root as (\S+)\r?\n", 120)
    say(f"PID 1: LVM: activated vg0/root as {m.group(1)}")
    vm.expect(r"root=UUID=\S+ is (\S+)", 60)
    m = vm.expect(r"repair: (\d+) fixed", 150)
    say(f"libc.so.6 was deleted from the encrypted root; PID 1 with lifeboat.repair: {m.group(0)}")
    tx = booted(vm, 200)
    if tx != 3:
        raise Failure(f"booted transaction {tx}, want 3")
    say(f"userspace reports transaction {tx}")
    finish_ok(vm)
    vm = q.Vm(img.disk, vars_, f"{work}/console.log").boot()
    pick_third_entry(vm, r"transaction 1 \(", "transaction 1")
    m = vm.expect(r"rolling back /usr: transaction (\d+) -> (\d+)", 300)
    say(f"menu pick: PID 1: rolling back /usr: transaction {m.group(1)} -> {m.group(2)}")
    tx = booted(vm, 200)
    if tx != 1:
        raise Failure(f"booted transaction {tx}, want 1")
    finish_ok(vm)


def finish_poweroff(vm):
    """The end of a boot under lockdown: the kernel refuses the guest's ioperm
    (no isa-debug-exit verdict), so the init powers off; QEMU exits 0 once
    "LBTEST: done" was printed."""
    vm.expect(r"LBTEST: done", 60)
    code = vm.wait_exit(60)
    if code not in (0, q.GUEST_EXIT_OK):
        raise Failure(f"guest did not power off cleanly (QEMU status {code})")


def sb_booted(vm, timeout=240):
    """(transaction, SecureBoot, lockdown) the guest reports."""
    tx = booted(vm, timeout)
    m = vm.expect(r"LBTEST: SecureBoot=(-?\d+) lockdown=(\S+)", 60)
    return tx, int(m.group(1)), m.group(2)


def v_secure_boot(work):
    """Secure Boot enforcing (OVMF with the snakeoil keys): lifeboat signs systemd-boot and one UKI per transaction with the db key; libc deleted: the rescue shell repairs and the default boots with SecureBoot=1; the menu rolls back to transaction 1; a UKI with one byte flipped is refused by the firmware while the others boot; an unsigned loader is refused."""
    img = q.Image(work)
    for i in (1, 2, 3):
        img.commit(q.make_tree(work, f"t{i}", f"v{i}"), f"test transaction {i}")
    img.build_initrd()
    img.lbtest("")
    img.secure_boot_keys()
    say("root: etc/lifeboat/secureboot/db.{key,crt} = the snakeoil db key (0600) and certificate; "
        "lifeboat.conf: secure-boot = yes")
    out = lb("--root", img.root, "--esp", img.disk, "boot", "install")
    say("boot install: " + " / ".join(l for l in out.splitlines() if "installed" in l))
    out = lb("--root", img.root, "--esp", img.disk, "boot", "sync", "--initrd", img.initrd, "--timeout", "30")
    token = "4c424f4154544553544d414348494e45"
    k = q.kver()
    ukis = {tx: f"EFI/Linux/{token}-{tx}-{k}.efi" for tx in (1, 2, 3)}
    listing = lb("disk", "ls", "-r", f"{img.disk}:esp")
    for tx, path in ukis.items():
        if path.split("/")[-1] not in listing:
            raise Failure(f"no UKI for transaction {tx} ({path}):\n{out}\n{listing}")
    if ".conf" in lb("disk", "ls", f"{img.disk}:esp:loader/entries") or f"{token}/" in listing:
        raise Failure(f"Type #1 entries or their kernels are left beside the UKIs:\n{listing}")
    # Independent oracles: sbverify against the snakeoil certificate, objdump's sections.
    cert = q.SNAKEOIL_CERT
    for tx, path in ukis.items():
        f = os.path.join(work, f"uki{tx}.efi")
        with open(f, "wb") as h:
            h.write(subprocess.run([q.LIFEBOAT, "disk", "cat", f"{img.disk}:esp:{path}"], stdout=subprocess.PIPE,
                                   check=True).stdout)
        q.sh("sbverify", "--cert", cert, f)
        secs = q.sh("objdump", "-h", f)
        for sec in (".osrel", ".cmdline", ".uname", ".linux", ".initrd"):
            if sec not in secs:
                raise Failure(f"{path} has no {sec} section:\n{secs}")
        cmd = q.sh("objcopy", "-O", "binary", "--only-section=.cmdline", f, f + ".cmdline") or ""
        cmdline = open(f + ".cmdline", "rb").read().decode()
        if f"lifeboat.tx={tx}" not in cmdline.split():
            raise Failure(f"{path}'s .cmdline does not select transaction {tx}: {cmdline!r}")
    loader = os.path.join(work, "bootx64.efi")
    with open(loader, "wb") as h:
        h.write(subprocess.run([q.LIFEBOAT, "disk", "cat", f"{img.disk}:esp:EFI/BOOT/BOOTX64.EFI"],
                               stdout=subprocess.PIPE, check=True).stdout)
    q.sh("sbverify", "--cert", cert, loader)
    say(f"sync: {len(ukis)} UKIs in EFI/Linux, no Type #1 entry; sbverify accepts them and systemd-boot "
        "against the snakeoil certificate; each .cmdline carries its lifeboat.tx=N")
    again = lb("--root", img.root, "--esp", img.disk, "boot", "sync", "--timeout", "30")
    if "up to date" not in again:
        raise Failure(f"a second sync with the same inputs changed something:\n{again}")
    say("a second sync: up to date (the signed images are byte-identical)")
    os.unlink(os.path.join(img.root, "usr/lib/x86_64-linux-gnu/libc.so.6"))
    say("deleted /usr/lib/x86_64-linux-gnu/libc.so.6 from the root image")
    img.write_root()
    vars_ = f"{work}/vars.fd"
    log = f"{work}/console.log"
    fw = dict(firmware="snakeoil")

    # Boot 1: the default (transaction 3) with libc gone: the rescue shell repairs.
    vm = q.Vm(img.disk, vars_, log, **fw).boot()
    vm.expect(r"transaction 1 \(", 120)
    time.sleep(1)
    vm.send("\r")
    m = vm.expect(r"needs libc\.so\.6[^\n]*", 240)
    say(f"boot 1 (default): PID 1: {m.group(0).strip()}")
    vm.expect(r"lifeboat> ", 30)
    vm.send("repair\n")
    m = vm.expect(r"repair: (\d+) fixed, (\d+) not recoverable", 60)
    say(f"rescue shell: {m.group(0)}")
    vm.expect(r"lifeboat> ", 30)
    vm.send("continue\n")
    tx, sb, lockdown = sb_booted(vm)
    say(f"boot 1: userspace reports transaction {tx}, SecureBoot={sb}, lockdown {lockdown}")
    if (tx, sb) != (3, 1):
        raise Failure(f"boot 1 reached transaction {tx} with SecureBoot={sb}, want 3 with 1")
    finish_poweroff(vm)

    # Boot 2: the menu rolls back to transaction 1.
    vm = q.Vm(img.disk, vars_, log, **fw).boot()
    pick_third_entry(vm, r"transaction 1 \(", "transaction 1")
    m = vm.expect(r"rolling back /usr: transaction (\d+) -> (\d+)", 240)
    tx, sb, _ = sb_booted(vm)
    say(f"boot 2 (menu): PID 1 rolled back {m.group(1)} -> {m.group(2)}; userspace reports transaction {tx}, "
        f"SecureBoot={sb}")
    if (tx, sb) != (1, 1):
        raise Failure(f"boot 2 reached transaction {tx} with SecureBoot={sb}, want 1 with 1")
    finish_poweroff(vm)

    # Boot 3: one byte of transaction 2's UKI flipped (in its .linux section) is refused.
    f = os.path.join(work, "uki2.efi")
    data = bytearray(open(f, "rb").read())
    at = len(data) // 2
    data[at] ^= 0xFF
    open(f, "wb").write(data)
    lb("disk", "put", f, f"{img.disk}:esp:{ukis[2]}")
    say(f"flipped byte {at} of {ukis[2]} on the ESP")
    vm = q.Vm(img.disk, vars_, log, **fw).boot()
    vm.expect(r"transaction 1 \(", 120)
    time.sleep(1)
    for key in ("\x1b[A", "\r"):  # the default is transaction 1 (last, oldest); Up is 2
        vm.send(key)
        time.sleep(0.5)
    m = vm.expect(r"Error loading \S+: (Access Denied|Security Violation)", 120)
    say(f"boot 3 (menu, transaction 2): systemd-boot: {m.group(0).strip()}")
    vm.kill()
    vm = q.Vm(img.disk, vars_, log, **fw).boot()
    vm.expect(r"transaction 1 \(", 120)
    time.sleep(1)
    vm.send("\r")
    tx, sb, _ = sb_booted(vm)
    say(f"boot 4 (default): transaction {tx}, SecureBoot={sb}: the intact entries still boot")
    if (tx, sb) != (1, 1):
        raise Failure(f"boot 4 reached transaction {tx} with SecureBoot={sb}, want 1 with 1")
    finish_poweroff(vm)

    # Boot 5: an unsigned loader is refused by the firmware (enforcement is on).
    for dest in ("EFI/BOOT/BOOTX64.EFI", "EFI/systemd/systemd-bootx64.efi"):
        lb("disk", "put", q.SDBOOT, f"{img.disk}:esp:{dest}")
    say("replaced the signed systemd-boot on the ESP with the unsigned one")
    vm = q.Vm(img.disk, vars_, log, **fw).boot()
    m = vm.expect(r"BdsDxe: failed to load [^\n]*(Access Denied|Security Violation)", 180)
    say(f"boot 5: firmware: {m.group(0).strip()}")
    vm.kill()


SCENARIOS = {
    "a": a_default_boot,
    "b": b_menu_rollback,
    "c": c_oneshot,
    "d": d_glibc_removed,
    "e": e_pruned,
    "f": f_wrong_root,
    "g": g_dual_boot,
    "h": h_boot_counting,
    "w": w_boot_assessment,
    "i": i_firmware_entry,
    "j": j_worker_crash,
    "k": k_dracut_hook,
    "l": l_stalled_step,
    "m": m_moss_root,
    "n": n_generic_kernel_buses,
    "o": o_root_filesystems,
    "p": p_compressed_modules,
    "q": q_root_power_cut,
    "r": r_hibernation,
    "t": t_luks_root,
    "u": u_lvm_on_luks,
    "s": s_kernel_initrds,
    "v": v_secure_boot,
}


def run_one(n):
    """Runs scenario `n` here (one attempt, plus a second one if the guest
    stalled); returns 0 passed, 1 failed, 3 passed or failed on a second try."""
    fn = SCENARIOS[n]
    work = os.path.join(OUT, n)
    print(f"[{n}] {fn.__doc__}", flush=True)
    # A guest that stops making progress gets one more try, reported as flaky
    # with the first attempt's console kept. (Seen once in CI: a boot silent
    # for 150 s right after PID 1 started, not reproduced in dozens of runs
    # since; PID 1's stall report now names the step and the kernel's warnings.)
    for attempt in (1, 2):
        shutil.rmtree(work, ignore_errors=True)
        os.makedirs(work)
        t = time.time()
        try:
            fn(work)
            print(f"[{n}] PASS ({time.time() - t:.0f} s)", flush=True)
            for root, _, files in os.walk(work):
                for f in files:
                    if f.endswith((".img", ".fd")):
                        os.unlink(os.path.join(root, f))
            q.kill_all()
            return 0 if attempt == 1 else 3
        except Exception as e:
            q.kill_all()
            print(f"[{n}] FAIL ({time.time() - t:.0f} s): {e}", flush=True)
            if not isinstance(e, Failure):
                traceback.print_exc()
            log = os.path.join(work, "console.log")
            if os.path.exists(log):
                print(f"[{n}] last console lines ({log}):")
                print("".join(open(log, errors="replace").readlines()[-25:]))
            if attempt == 1 and isinstance(e, Failure) and "timed out" in str(e):
                kept = os.path.join(OUT, f"{n}.first-attempt.log")
                if os.path.exists(log):
                    shutil.copy(log, kept)
                print(f"[{n}] the guest stalled; retrying once (first console log: {kept})", flush=True)
                continue
            return 1
    return 1


# The longest first, so the two lanes end together.
LONGEST_FIRST = "qkmnrtvusopwhcilfbejagd"


def main(argv):
    if argv[:1] == ["--one"]:
        return run_one(argv[1])
    jobs = int(os.environ.get("LIFEBOAT_QEMU_JOBS", "2"))
    names = argv or sorted(SCENARIOS, key=lambda n: LONGEST_FIRST.find(n) % 100)
    if not os.path.exists(q.LIFEBOAT) or not os.path.exists(q.RESCUE):
        print(f"no static lifeboat at {q.LIFEBOAT} or {q.RESCUE}: ./scripts/build.sh builds both")
        return 2
    subprocess.run([os.path.join(q.HERE, "fetch.sh")], check=True)
    failed, flaky = [], []
    # Two guests at once (one per core): each scenario in a process of its own,
    # its output printed whole when it ends.
    pending = list(names)
    running = {}
    os.makedirs(OUT, exist_ok=True)
    start = time.time()
    while pending or running:
        while pending and len(running) < jobs:
            n = pending.pop(0)
            out = open(os.path.join(OUT, f"{n}.out"), "w+")
            proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--one", n], stdout=out,
                                    stderr=subprocess.STDOUT)
            running[n] = (proc, out)
        time.sleep(1)
        for n, (proc, out) in list(running.items()):
            code = proc.poll()
            if code is None:
                continue
            del running[n]
            out.seek(0)
            sys.stdout.write(out.read())
            sys.stdout.flush()
            out.close()
            if code == 3:
                flaky.append(n)
            elif code != 0:
                failed.append(n)
    if flaky:
        print(f"flaky (passed or failed on a second try): {' '.join(flaky)}")
    print(f"{len(names) - len(failed)}/{len(names)} scenarios passed in {time.time() - start:.0f} s"
          + (f"; failed: {' '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
