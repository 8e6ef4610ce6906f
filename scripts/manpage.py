#!/usr/bin/env python3
"""Writes lifeboat(8), in roff, from the help text of a built lifeboat binary.

    scripts/manpage.py BINARY [--version V] [--date YYYY-MM-DD] > lifeboat.8

The page is generated, never edited by hand, so it cannot drift from the
binary: every command's usage, description and options are the ones its own
`--help` prints (argh's layout: a `Usage:` line, the description, then sections
such as `Options:` and `Commands:` whose items are a name in column 3 and a text
column, continued on deeper-indented lines). The command tree is walked from the
top-level `Commands:` section. What `--help` cannot say (files, environment,
exit status) is the fixed text below. scripts/install.sh and scripts/deb.sh run
this; scripts/test_package.sh checks that `man -l` renders the packaged page
without a warning and that it names every command the packaged binary lists.
"""

import argparse
import datetime
import os
import subprocess
import sys


def helptext(binary, path):
    """The `--help` of the command `path` (a list of words), run as `lifeboat`."""
    r = subprocess.run(["lifeboat", *path, "--help"], executable=binary, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"manpage: {binary} {' '.join(path)} --help failed ({r.returncode}): {r.stderr.strip()}")
    return r.stdout


def parse(text, path):
    """(usage arguments, description, {section: [(name, text)]}) of one help text."""
    lines = text.splitlines()
    usage = ""
    i = 0
    while i < len(lines) and not lines[i].startswith("Usage:"):
        i += 1
    if i == len(lines):
        sys.exit(f"manpage: no 'Usage:' line in the help of {' '.join(['lifeboat', *path])}")
    prefix = " ".join(["lifeboat", *path])
    usage = lines[i][len("Usage:"):].strip()
    if not usage.startswith(prefix):
        sys.exit(f"manpage: usage line {usage!r} does not start with {prefix!r}")
    usage = usage[len(prefix):].strip()
    i += 1
    desc = []
    while i < len(lines) and not (lines[i] and not lines[i][0].isspace() and lines[i].endswith(":")):
        desc.append(lines[i].strip())
        i += 1
    sections = {}
    current = None
    for line in lines[i:]:
        if line and not line[0].isspace() and line.endswith(":"):
            current = sections.setdefault(line[:-1], [])
        elif current is None or not line.strip():
            continue
        elif line.startswith("  ") and not line.startswith("   "):
            name, _, rest = line.strip().partition("  ")
            current.append([name.strip(), rest.strip()])
        elif current:
            current[-1][1] = (current[-1][1] + " " + line.strip()).strip()
    return usage, " ".join(d for d in desc if d), sections


def esc(s):
    """Roff text: backslashes and minus signs escaped, no line read as a request."""
    s = s.replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + s if s.startswith((".", "'")) else s


def items(out, entries):
    for name, text in entries:
        if name.startswith("--help"):
            continue
        out.append(".TP")
        out.append(f".B {esc(name)}")
        out.append(esc(text))


# Sections every command's help carries, the same each time (`disk` and
# `initrd` list fewer global options: OPTIONS says so).
SAID_ONCE = ("Global Options", "Exit Status")


def walk(binary, path, out, seen):
    """The section of one command and then of each of its subcommands."""
    usage, desc, sections = parse(helptext(binary, path), path)
    subs = [name for name, _ in sections.get("Commands", []) if name != "help"]
    out.append(f'.SS "{esc(" ".join(["lifeboat", *path]))}"')
    if not subs:
        out.append(f".B {esc(' '.join(['lifeboat', *path]))}")
        if usage:
            out.append(esc(usage))
        out.append(".PP")
    out.append(esc(desc))
    for section, entries in sections.items():
        # The global options and exit statuses every command's help repeats
        # are said once, in OPTIONS and EXIT STATUS.
        if section == "Commands" or section.startswith(SAID_ONCE):
            continue
        shown = [e for e in entries if not e[0].startswith("--help")]
        if not shown:
            continue
        out.append(".PP")
        out.append(f"{esc(section)}:")
        out.append(".RS")
        items(out, shown)
        out.append(".RE")
    seen.append(path)
    for s in subs:
        walk(binary, [*path, s], out, seen)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("binary")
    ap.add_argument("--version", default="")
    ap.add_argument("--date", help="the page's date (default: SOURCE_DATE_EPOCH, else today, UTC)")
    a = ap.parse_args()
    if not os.access(a.binary, os.X_OK):
        sys.exit(f"manpage: {a.binary} is not an executable")
    date = a.date
    if not date:
        epoch = os.environ.get("SOURCE_DATE_EPOCH")
        when = datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc) if epoch else \
            datetime.datetime.now(datetime.timezone.utc)
        date = when.strftime("%Y-%m-%d")

    usage, desc, sections = parse(helptext(a.binary, []), [])
    out = [
        '.\\" Generated by scripts/manpage.py from the help text of lifeboat; do not edit.',
        f'.TH LIFEBOAT 8 "{date}" "lifeboat {esc(a.version)}" "System Administration"',
        ".SH NAME",
        "lifeboat \\- transactions, boot entries and rescue for atomic Linux systems",
        ".SH SYNOPSIS",
        ".B lifeboat",
        esc(usage),
        ".SH DESCRIPTION",
        "lifeboat keeps a compact state index of a system's transactions (the",
        ".I /usr",
        "trees of a moss / AerynOS style system), manages one Boot Loader Specification",
        "entry per retained transaction on the ESP or XBOOTLDR (reading GPT and FAT itself),",
        "and runs as PID 1 of a rescue initrd that rolls back to the transaction picked in",
        "the boot menu, repairs",
        ".I /usr",
        "from the content store, or opens a rescue shell.",
        ".PP",
        "The global options go before or after the command. Every command works on a",
        "system tree in any directory with",
        ".BR \\-\\-root ;",
        ".B \\-\\-json",
        "gives machine\\-readable output.",
        ".SH OPTIONS",
    ]
    items(out, sections.get("Options", []))
    out.append(".TP")
    out.append('.BR \\-\\-help ", " help')
    out.append("display usage information (after any command, too)")
    out.append(".PP")
    out.append("These go before or after the command.")
    out.append(".B lifeboat disk")
    out.append("and")
    out.append(".B lifeboat initrd")
    out.append("work on the images and files they are given: of these they take only")
    out.append(".BR \\-\\-json ,")
    out.append(".B lifeboat disk")
    out.append("also")
    out.append(".B \\-\\-wait")
    out.append("(for another writer of its image); the others are refused (exit status 64).")
    out.append(".SH COMMANDS")
    seen = []
    for name, _ in sections.get("Commands", []):
        if name != "help":
            walk(a.binary, [name], out, seen)
    out += [
        ".SH FILES",
        ".TP",
        ".I /etc/lifeboat/lifeboat.conf",
        "Machine settings:",
        ".BR esp ,",
        ".BR boot ,",
        ".BR keep ,",
        ".BR tries ,",
        ".BR timeout ,",
        ".B initrd",
        "and",
        ".BR initrd\\-modules ;",
        "every key is described in",
        ".IR /etc/lifeboat/lifeboat.conf.example .",
        "Command\\-line options win.",
        ".TP",
        ".I /usr/lib/lifeboat/lifeboat\\-rescue",
        "The rescue build of lifeboat (no SQLite), what",
        ".B lifeboat initrd build",
        "embeds as",
        ".I /init",
        "unless given",
        ".BR \\-\\-binary ,",
        "and what each kernel's rescue initrd carries from its transaction's tree.",
        ".TP",
        ".I /.moss/lifeboat/state.idx",
        "The state index (its previous generation is",
        ".IR state.idx.prev ).",
        ".TP",
        ".IR /usr/lib/lifeboat/health.d/ ", " /etc/lifeboat/health.d/",
        "The health checks",
        ".B lifeboat boot assess",
        "runs once the boot is complete",
        ".RI ( required.d",
        "gates the verdict,",
        ".I wanted.d",
        "is only recorded).",
        ".TP",
        ".I /usr/lib/systemd/system/lifeboat\\-*",
        "The systemd units (see their comments for what each is for).",
        ".TP",
        ".I /usr/lib/dracut/modules.d/90lifeboat/",
        "The dracut module: lifeboat in a systemd\\-based initrd",
        ".RB ( \"dracut \\-\\-add lifeboat\" ).",
        ".SH ENVIRONMENT",
        ".TP",
        ".B LIFEBOAT_MOSS_WAIT",
        "Seconds to wait for a running moss to release its lock (default 30).",
        ".SH EXIT STATUS",
        ".RS 0",
    ]
    exits = sections.get("Exit Status", [])
    if not exits:
        sys.exit("manpage: the top-level help lists no 'Exit Status:'")
    items(out, exits)
    out += [
        ".RE",
        ".SH SEE ALSO",
        ".BR bootctl (1),",
        ".BR systemd\\-boot (7),",
        ".BR kernel\\-install (8),",
        ".BR dracut (8)",
    ]
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
