#!/usr/bin/env bash
# Checks that every crate meant for crates.io packages: `cargo package` for the workspace's
# published crates (every member but plugd-cli, which is installed from the repository: it
# embeds templates/, wit/, schemas/ and scripts/ from outside its folder) and for the guest SDK
# (sdk/rust, plugd-guest, a workspace of its own). Packaging resolves each crate as a user of
# crates.io would: path dependencies by their versions, the unpublished ones from a local
# overlay of the others. Run by scripts/test.sh.
#
#   scripts/package.sh            # package only (about a minute: no compile)
#   scripts/package.sh --verify   # also build each package from its .crate, as `cargo publish`
#                                 # does (a release-sized build of wasmtime; not in CI)
#
# Besides cargo's own checks it refuses what cargo cannot see without building: library code
# (outside #[cfg(test)]) of a published crate that reads a file outside the crate's folder
# through include_str!, include_bytes! or a bindgen `path:`, which would break the published
# crate. The .crate files are in $CARGO_TARGET_DIR/package (target/package).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
started=$SECONDS
verify=(--no-verify)
[[ "${1:-}" == --verify ]] && verify=()
failed=0

unpublished=(plugd-cli)
published_dirs=()
for manifest in crates/*/Cargo.toml; do
    grep -q '^publish = false' "$manifest" && continue
    published_dirs+=("$(dirname "$manifest")")
done
published_dirs+=(sdk/rust)

# Library code reading files outside its crate.
for dir in "${published_dirs[@]}"; do
    crate_root="$(realpath "$dir")"
    while IFS= read -r -d '' file; do
        # Only the code before the file's test module (tests sit at the bottom of their file).
        # include_* paths are relative to the file, a bindgen macro's `path:` to the crate.
        while IFS=' ' read -r kind target; do
            case "$kind" in
                include) resolved="$(realpath -m "$(dirname "$file")/$target")" ;;
                *) resolved="$(realpath -m "$crate_root/$target")" ;;
            esac
            if [[ "$resolved" != "$crate_root"/* ]]; then
                echo "package: ${file#"$root"/} reads $target, outside $dir: a published crate holds its own files (copy it in, as crates/plugd-wasm/wit)" >&2
                failed=1
            fi
        done < <(awk '/#\[cfg\(test\)\]/ { exit } { print }' "$file" \
            | grep -oE 'include_(str|bytes)!\("[^"]+"\)|^\s*path: *"[^"]+"' \
            | sed -E 's/^include_[a-z]+!\("([^"]+)"\)$/include \1/; s/^\s*path: *"([^"]+)"$/bindgen \1/' || true)
    done < <(find "$crate_root/src" -name '*.rs' -print0)
done

# --allow-dirty: the check is about what would be published, not about a clean work tree.
echo "==> cargo package (workspace, without ${unpublished[*]})"
exclude=()
for name in "${unpublished[@]}"; do exclude+=(--exclude "$name"); done
cargo package --workspace "${exclude[@]}" --locked --allow-dirty "${verify[@]}" || failed=1

echo "==> cargo package (sdk/rust)"
cargo package --manifest-path sdk/rust/Cargo.toml --allow-dirty "${verify[@]}" || failed=1

if ((failed)); then
    echo "package: FAILED" >&2
    exit 1
fi
echo "package: ok (${#published_dirs[@]} crates, $((SECONDS - started))s)"
