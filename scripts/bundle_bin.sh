#!/usr/bin/env bash
# Builds what bin/passthrough runs while no source is newer: main.ts bundled into DEST (default
# dist/bin) with one chunk per command, so a command loads only its own code, as from the sources;
# and the start guard's check into DEST/hook/, which `hook install` run from DEST/main.js makes the
# hook run (libvirt waits for it at every VM start: it loads only the check's own code, minified,
# which loads faster).
# `--platform browser` picks each npm package's ES-module build: yaml's "node" build is CommonJS
# and would load Node compatibility (require, process, Buffer) at every start.
# Usage: scripts/bundle_bin.sh [DEST] | --sources-digest
set -euo pipefail
cd "$(dirname "$0")/.."
# What the bundle is built from, as one digest (written to DEST/.sources; setup.sh compares):
# demo/ too, whose files cli/demo.ts embeds. lib/guard/hook_file.ts computes it alike.
sources_digest() {
  find main.ts cli lib ffi demo deno.json deno.lock scripts/bundle_bin.sh \
    tools/deno/package-lock.json \
    -type f -print0 | LC_ALL=C sort -z |
    xargs -0 sha256sum | sha256sum | cut -d' ' -f1
}
if [ "${1:-}" = --sources-digest ]; then sources_digest; exit 0; fi
dest=${1:-dist/bin}
while [ "$dest" != / ] && [ "${dest%/}" != "$dest" ]; do dest=${dest%/}; done
deno=tools/deno/node_modules/.bin/deno
[ -x "$deno" ] || deno=deno
# Built beside DEST and put in its place only when whole: an installed start guard runs
# DEST/hook/hook_check.js at every VM start, and a missing one refuses every start. A failed
# build leaves the previous bundle as it was.
out="$dest.new.$$"
trap 'rm -rf "$out"' EXIT
rm -rf "$out"
# Taken before the build reads them, and main.js dated then: a source that changes while it runs
# (a pull meanwhile) is newer than the bundle, so bin/passthrough runs the sources, and differs
# from the digest recorded, so setup.sh builds again, rather than taking a bundle of the old
# contents for one of the new.
started=$(date +%s.%N)
digest=$(sources_digest)
"$deno" bundle --quiet --code-splitting --platform browser --outdir "$out" main.ts
"$deno" bundle --quiet --minify --code-splitting --platform browser --outdir "$out/hook" \
  cli/hook_check.ts
# Deno reads every module that a dynamic import names with a string literal when it starts (its
# module graph), so every command would read every other command's chunks. Named through
# String(), a chunk is read only when its import runs. A bundle without such an import means the
# bundler's output changed shape: stop rather than ship the slower start unnoticed.
unanalyzable_imports() {
  grep -l 'import("\./' "$@" | while read -r file; do
    sed -i 's/import("\(\.\/[A-Za-z0-9_.-]*\.js\)")/import(String("\1"))/g' "$file"
  done
  if grep -q 'import("' "$@"; then
    echo "bundle_bin.sh: a dynamic import left with a literal specifier" >&2
    exit 1
  fi
  if ! grep -q 'import(String("\./' "$@"; then
    echo "bundle_bin.sh: no dynamic import of a chunk found: has the bundler's output changed?" >&2
    exit 1
  fi
}
unanalyzable_imports "$out"/*.js
unanalyzable_imports "$out"/hook/*.js
echo "$digest" >"$out/.sources"
touch -d "@$started" "$out/main.js"
# A process of the previous build still running (a VM start's check, a command) imports its
# chunks by name after its entry loaded, from DEST: the previous build's own chunks (listed in
# its .chunks) are kept beside the new ones for one build. Entries (main.js, hook_check.js) are
# the new build's; chunk names carry a hash of their content.
own_chunks() { (cd "$1" && find . -name '*-*.js' -type f | LC_ALL=C sort); }
own_chunks "$out" >"$out/.chunks"
# Two builds at once (setup.sh run twice, a build by hand meanwhile) put theirs in place one after
# the other, each holding a lock on DEST: otherwise the second, reading DEST's chunks before the
# first had put its own in, deleted them, and the first's entries were left importing chunks that
# are gone (every VM start refused).
mkdir -p "$dest"
exec 9<"$dest"
flock 9
# A bundle from before .chunks existed: its chunks are all its own.
previous=$(if [ -f "$dest/.chunks" ]; then cat "$dest/.chunks"; else own_chunks "$dest"; fi)
# Put in place in DEST itself, never missing: a VM start's check loads DEST/hook/hook_check.js
# and then its chunks at any moment (with DEST renamed aside and the new one renamed in, a start
# between the two renames was refused). The new chunks go in first, beside the old (their names
# are their content: one already there is the same); then each entry and record is renamed over
# the old one (rename(2) replaces a file at once); last, the chunks of neither this build nor the
# previous one go.
mkdir -p "$dest/hook"
while IFS= read -r chunk; do
  if [ ! -e "$dest/$chunk" ]; then mv "$out/$chunk" "$dest/$chunk"; fi
done <"$out/.chunks"
for entry in hook/hook_check.js main.js .chunks .sources; do
  mv -f "$out/$entry" "$dest/$entry"
done
own_chunks "$dest" | while IFS= read -r chunk; do
  if grep -qxF -- "$chunk" "$dest/.chunks"; then continue; fi
  if printf '%s\n' "$previous" | grep -qxF -- "$chunk"; then continue; fi
  rm -f "$dest/$chunk"
done
