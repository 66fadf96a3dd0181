#!/usr/bin/env bash
# Builds what bin/passthrough runs while no source is newer: main.ts bundled into DIR (default
# dist/bin) with one chunk per command, so a command loads only its own code, as from the sources;
# and the start guard's check into DIR/hook/, which `hook install` run from DIR/main.js makes the
# hook run (libvirt waits for it at every VM start: it loads only the check's own code, minified,
# which loads faster).
# `--platform browser` picks each npm package's ES-module build: yaml's "node" build is CommonJS
# and would load Node compatibility (require, process, Buffer) at every start.
# Usage: scripts/bundle_bin.sh [DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-dist/bin}
deno=tools/deno/node_modules/.bin/deno
[ -x "$deno" ] || deno=deno
rm -rf "$out"
"$deno" bundle --quiet --code-splitting --platform browser --outdir "$out" main.ts
"$deno" bundle --quiet --minify --code-splitting --platform browser --outdir "$out/hook" \
  cli/hook_check.ts
