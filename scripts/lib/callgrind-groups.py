#!/usr/bin/env python3
"""Where a server's instructions per request go, by component.

    callgrind-groups.py SHORT.out LONG.out N

SHORT.out and LONG.out are callgrind files of the same server serving a few and N more requests
(scripts/bench.sh's profile section: 200 and 1200). Each function's self cost in SHORT is
subtracted from its cost in LONG and divided by N, which removes start-up and shutdown; the
functions are then grouped by the component they belong to and printed as a Markdown table.
"""

import re
import subprocess
import sys
from collections import Counter

# (component, test on the function's symbol), first match wins. JIT code has no symbol
# ("???:0x..."): in plugd that is the guests' compiled code with their allocator and bindings
# glue, and wasmtime's trampolines.
GROUPS = [
    ("guest code (compiled wasm: the plugins, their allocator and bindings, trampolines)",
     lambda s: s.startswith("???:0x")),
    ("allocator (malloc, free)",
     lambda s: re.search(r"malloc|[^a-z]free|arena\.c|__rdl_|__rust_(alloc|dealloc|realloc)", s)),
    ("wasmtime (host calls: entry, lifting, lowering, resources; guest calls: set-up, fiber)",
     lambda s: "wasmtime" in s or "cranelift" in s),
    ("log formatting (tracing-subscriber)",
     lambda s: re.search(r"tracing|core::fmt|fmt::Write|nu_ansi_term|write_char|write_str", s)),
    ("plugd (dispatch, instance pool, host functions, exchange)", lambda s: "plugd" in s),
    ("hyper, tokio, axum, HTTP parsing, system calls",
     lambda s: re.search(r"hyper|tokio|axum|tower|mio|httparse|matchit|sysdeps/unix", s)),
    ("http and bytes (header maps)", lambda s: re.search(r"http::|bytes::", s)),
    ("memcpy, memmove, memset, memcmp", lambda s: re.search(r"mem(cpy|move|set|cmp)", s)),
    ("hashing", lambda s: re.search(r"hash|sip::", s, re.IGNORECASE)),
]
OTHER = "other (UTF-8 checks, clocks, std)"


def self_costs(path):
    out = subprocess.run(
        ["callgrind_annotate", "--threshold=100", path],
        capture_output=True, text=True, check=True,
    ).stdout
    costs = Counter()
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(.*)", line)
        if m and "PROGRAM TOTALS" not in m.group(2):
            # "???:symbol [/path/to/binary]": group on the symbol, not the binary's path.
            costs[m.group(2).split(" [")[0].strip()] += int(m.group(1).replace(",", ""))
    return costs


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    short, long_, n = self_costs(sys.argv[1]), self_costs(sys.argv[2]), int(sys.argv[3])
    groups = Counter()
    # Over the symbols of both runs: JIT code has no names, only addresses, which may differ
    # between two processes; its group nets out even when the addresses do not match.
    for symbol in long_.keys() | short.keys():
        per_request = (long_.get(symbol, 0) - short.get(symbol, 0)) / n
        name = next((g for g, test in GROUPS if test(symbol)), OTHER)
        groups[name] += per_request
    total = sum(groups.values())
    print("| component | instructions per request | share |")
    print("|---|---|---|")
    for name, cost in groups.most_common():
        print(f"| {name} | {cost:,.0f} | {100 * cost / total:.0f} % |")
    print(f"| total | {total:,.0f} | |")


if __name__ == "__main__":
    main()
