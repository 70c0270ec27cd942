#!/usr/bin/env python3
"""Where the guests' time goes, from a perf profile of plugd run with PLUGD_WASM_PROFILER=perfmap.

    perf report -i perf.data --sort dso,symbol --stdio | perf-guest-groups.py

Reads perf's flat report on stdin, keeps the samples in guest code (the "[JIT]" dso, named
through the perf map plugd writes) and prints a Markdown table of their shares by kind of code.
"""

import re
import sys

# (kind of guest code, test on the symbol), first match wins.
GROUPS = [
    ("the guests' allocator (dlmalloc, dlfree, realloc)",
     lambda s: re.search(r"dlmalloc|dlfree|dispose_chunk|\brealloc\b|^malloc$|^free$|cabi_realloc", s)),
    ("plugin logic inlined into the exports (plugd:plugin/guest#...)",
     lambda s: s.startswith("plugd:plugin/guest")),
    ("formatting (format!, Display)",
     lambda s: re.search(r"fmt|format|Display|pad_integral", s)),
    ("serde_json (building and serializing values)",
     lambda s: re.search(r"serde_json|btree|BTreeMap", s, re.IGNORECASE)),
    ("hashing and MACs (sha1, hmac)", lambda s: re.search(r"sha1|sha2|hmac|digest", s)),
    ("hex decoding", lambda s: re.search(r"\bhex\b|GenericShunt", s)),
]
OTHER = "trampolines, adapters, memory.copy, the rest"


def main():
    if len(sys.argv) != 1:
        sys.exit(__doc__)
    groups, total, everything = {}, 0.0, 0.0
    for line in sys.stdin:
        m = re.match(r"\s*([\d.]+)%\s+(\S.*?)\s+\[\.\]\s+(.*?)(\s+-\s+-)?\s*$", line)
        if not m:
            continue
        share, dso, symbol = float(m.group(1)), m.group(2), m.group(3).strip()
        everything += share
        if "[JIT]" not in dso:
            continue
        total += share
        name = next((g for g, test in GROUPS if test(symbol)), OTHER)
        groups[name] = groups.get(name, 0.0) + share
    if total == 0:
        sys.exit("no samples in guest code (was plugd run with PLUGD_WASM_PROFILER=perfmap?)")
    print(f"Guest code: {total:.1f} % of the server's samples (user space: {everything:.1f} %).")
    print()
    print("| guest code | share |")
    print("|---|---|")
    for name, share in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"| {name} | {100 * share / total:.0f} % |")


if __name__ == "__main__":
    main()
