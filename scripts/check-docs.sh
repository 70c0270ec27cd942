#!/usr/bin/env bash
# The repository stands on its own: no tracked file may cite design documents that are not in it.
#
# Fails, listing file:line, when a tracked file mentions
#   - "seed" / "seeds" as a word (case-insensitive; "_" counts as a word boundary, so `seed_x`,
#     `SEED_YAML` and "seed 004" are caught, while "seeded" is not),
#   - DESIGN (upper case, as in "DESIGN's table"), shared/DESIGN, shared/TOOLCHAIN, TOOLCHAIN.md,
#     or another path under shared/ that held the old design notes.
# The design lives in docs/design.md: a comment states the requirement itself and points at a
# section there (`docs/design.md#permissions`).
#
# Not checked: CHANGELOG.md (history may keep its wording), and the test fixture path
# "../shared/plugins" in crates/plugd-manifest/src/host.rs (it is not a reference; the patterns
# below do not match it).
#
# Allowed: lines where "seed" is the ordinary technical term, not a citation — an ed25519 secret
# key is a 32-byte seed (crates/plugd-pkg/src/keys.rs), and a migration that inserts fixture rows
# is a seed migration (`0010_seed.sql`). Keep this list short; reword instead when you can.
#
# Usage: scripts/check-docs.sh   (from anywhere; exit 0 when clean, 1 with the offenders)
set -euo pipefail

cd "$(dirname "$0")/.."

# Case-insensitive: "seed" or "seeds" as a word.
seed_word='(^|[^a-z])seeds?([^a-z]|$)'
# Case-sensitive: the old notes by name.
old_notes='(^|[^A-Za-z_])DESIGN([^A-Za-z_]|$)|shared/(DESIGN|TOOLCHAIN|STYLE|seeds|reviews|hooks)|TOOLCHAIN\.md'
# Lines where "seed" is the ordinary term (see above).
allowed='32-byte seed|let mut seed\b|\(&mut seed\)|from_bytes\(&seed\)|[0-9]+_seed\.sql|the seed row'

exclude=(':!CHANGELOG.md' ':!scripts/check-docs.sh')

found=$(
    {
        git grep -n -I -i -E "$seed_word" -- . "${exclude[@]}" || true
        git grep -n -I -E "$old_notes" -- . "${exclude[@]}" || true
    } | grep -v -E "$allowed" | sort -t: -k1,1 -k2,2n -u || true
)

if [[ -n "$found" ]]; then
    echo "check-docs: these lines cite design notes that are not in the repository." >&2
    echo "State the requirement itself and point at docs/design.md#<section> instead:" >&2
    echo "$found" >&2
    echo "check-docs: $(printf '%s\n' "$found" | wc -l) line(s)" >&2
    exit 1
fi
echo "check-docs: ok (no citations of design notes outside the repository)"
