#!/usr/bin/env python3
"""Resident memory of a process by kind of mapping, from /proc/<pid>/smaps.

    python3 scripts/lib/smaps-groups.py <pid> [plugins]

Adjacent anonymous mappings are joined into regions (the pooling allocator's reservations for
linear memories, tables and fiber stacks are each one region of many mappings), files are grouped
by name (a `.cwasm`: compiled code from plugd's compile cache), and every group's Rss, its
private dirty bytes and its anonymous bytes are printed in KiB, with the figure per plugin when
the count of plugins is given. A benchmark tool (scripts/bench.sh --only scale), not a test.
"""
import re
import sys

HEADER = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \d+\s*(.*)$")


def mappings(pid):
    current = None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            m = HEADER.match(line)
            if m:
                if current:
                    yield current
                current = {
                    "start": int(m.group(1), 16),
                    "end": int(m.group(2), 16),
                    "perms": m.group(3),
                    "name": m.group(4).strip(),
                }
                continue
            key, _, value = line.partition(":")
            value = value.strip()
            if value.endswith(" kB"):
                current[key] = int(value[:-3])
    if current:
        yield current


def kind_of(name):
    if name.endswith(".cwasm"):
        return "compiled code (.cwasm files, mapped)"
    if name.startswith("/memfd:"):
        return "memfd (" + name.split()[0][7:] + ")"
    if name in ("[heap]", "[stack]", "[vdso]", "[vvar]", "[vsyscall]"):
        return name
    if name.startswith("/"):
        return "other files (binary, libraries)"
    return name or "anonymous"


def main():
    pid = sys.argv[1]
    plugins = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    groups = {}
    region = None  # adjacent anonymous mappings: [start, end, rss, dirty, anon, count]
    regions = []
    for m in mappings(pid):
        rss, dirty, anon = m.get("Rss", 0), m.get("Private_Dirty", 0), m.get("Anonymous", 0)
        if not m["name"]:
            if region and region[1] == m["start"]:
                region[1] = m["end"]
                region[2] += rss
                region[3] += dirty
                region[4] += anon
                region[5] += 1
            else:
                region = [m["start"], m["end"], rss, dirty, anon, 1]
                regions.append(region)
            continue
        g = groups.setdefault(kind_of(m["name"]), [0, 0, 0, 0, 0])
        g[0] += m["end"] - m["start"]
        g[1] += rss
        g[2] += dirty
        g[3] += anon
        g[4] += 1
    for start, end, rss, dirty, anon, count in regions:
        size = end - start
        # The pool's reservations are GiB-sized; glibc's arenas are 64 MiB; the rest is small.
        if size > 130 << 20:
            label = f"anonymous region of {size / (1 << 20):.0f} MiB at {start:x} (a pool reservation)"
        elif size >= 32 << 20:
            label = "anonymous regions of 32-130 MiB (malloc arenas)"
        else:
            label = "anonymous regions < 32 MiB (malloc, thread stacks, small maps)"
        g = groups.setdefault(label, [0, 0, 0, 0, 0])
        g[0] += size
        g[1] += rss
        g[2] += dirty
        g[3] += anon
        g[4] += count
    total = sum(g[1] for g in groups.values())
    per = f" | per plugin KiB" if plugins else ""
    print(f"| mapping | size MiB | Rss KiB | Private_Dirty KiB | Anonymous KiB | mappings{per} |")
    print("|---|---|---|---|---|---|" + ("---|" if plugins else ""))
    for label, (size, rss, dirty, anon, count) in sorted(groups.items(), key=lambda kv: -kv[1][1]):
        if rss == 0 and size <= 130 << 20:
            continue
        extra = f" | {rss / plugins:.1f}" if plugins else ""
        print(f"| {label} | {size / (1 << 20):.1f} | {rss} | {dirty} | {anon} | {count}{extra} |")
    extra = f" | {total / plugins:.1f}" if plugins else ""
    print(f"| total | | {total} | | | {extra} |")


if __name__ == "__main__":
    main()
