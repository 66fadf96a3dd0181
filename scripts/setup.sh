#!/usr/bin/env bash
# Installs what passthrough needs, idempotently: Deno (pinned in tools/deno/package-lock.json; a deno
# already on PATH is used when it is that version, else it comes from npm) and,
# when running as root, the Debian packages (libvirt, lspci, the QEMU driver for the e2e tests).
# Usage: scripts/setup.sh [runtime|test]
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${1:-runtime}
# A mistyped profile (`tests`) would otherwise go on as runtime, the test packages left out unsaid.
case "$profile" in
  runtime | test) ;;
  *)
    echo "setup: unknown profile \"$profile\": usage: scripts/setup.sh [runtime|test]" >&2
    exit 2
    ;;
esac

# The pinned version, from the lock's own entry for the deno package.
pinned=$(awk '/"node_modules\/deno"/ { found = 1 } found && /"version"/ { gsub(/[",]/, "", $2); print $2; exit }' \
  tools/deno/package-lock.json)
on_path=$(command -v deno 2>/dev/null || true)
installed=tools/deno/node_modules/.bin/deno
version_of() { "$1" --version 2>/dev/null | awk 'NR == 1 { print $2 }'; }
# Makes the directory $2 hold the tree $1, never missing a file that a process may run: an
# installed start guard runs the deno binary under tools/deno/node_modules by its own path (the
# real one, which no symbolic link swap would keep) at every VM start, and refuses the start when
# it is missing. A directory cannot be replaced at once (renaming the old one aside and the new one
# in leaves an instant with neither), a file can: each file is renamed over its old self, then
# what the new tree does not have goes.
replace_tree() {
  local new=$1 old=$2 path kept
  kept=$(cd "$new" && find . -mindepth 1 | LC_ALL=C sort)
  while IFS= read -r path; do
    if [ -d "$new/$path" ] && [ ! -L "$new/$path" ]; then
      if [ -e "$old/$path" ] && { [ -L "$old/$path" ] || [ ! -d "$old/$path" ]; }; then
        rm -f "$old/$path"
      fi
      mkdir -p "$old/$path"
    else
      if [ -d "$old/$path" ] && [ ! -L "$old/$path" ]; then rm -rf "$old/$path"; fi
      mv -fT "$new/$path" "$old/$path"
    fi
  done <<<"$kept"
  (cd "$old" && find . -mindepth 1 -depth) | while IFS= read -r path; do
    if ! printf '%s\n' "$kept" | grep -qxF -- "$path"; then rm -rf "$old/$path"; fi
  done
}
if [ -x "$installed" ] && [ "$(version_of "$installed")" = "$pinned" ]; then
  : # installed by an earlier run
elif [ ! -x "$installed" ] && [ -n "$on_path" ] && [ "$(version_of "$on_path")" = "$pinned" ]; then
  # bin/passthrough and quickstart.sh fall back to the deno on PATH, so one of the pinned version
  # is used as is.
  echo "setup: using deno $pinned from PATH ($on_path)" >&2
else
  command -v npm >/dev/null || { echo "setup: npm is required (install Node.js first), or put deno $pinned on PATH" >&2; exit 1; }
  echo "setup: installing Deno $pinned from npm (pinned in tools/deno/package-lock.json)" >&2
  # `npm ci`: exactly the lock (version and integrity of deno and of its binary for this
  # platform), and it never writes the lock, which lists every platform's optional binary so
  # that no npm has one to add (tests/cli/setup_script_test.ts checks that ci accepts it).
  # Into a directory of its own, put in place only when whole: npm ci first removes the
  # node_modules it installs into, and an installed start guard runs tools/deno's deno at every VM
  # start: an install that fails (no network) would leave none, and every start refused.
  staging=tools/deno.new.$$
  previous=tools/deno/node_modules.old.$$
  trap 'rm -rf "$staging" "$previous"' EXIT
  rm -rf "$staging"
  mkdir "$staging"
  cp tools/deno/package.json tools/deno/package-lock.json "$staging/"
  npm ci --prefix "$staging" --no-audit --no-fund --loglevel=error >&2
  if [ -d tools/deno/node_modules ] && [ ! -L tools/deno/node_modules ]; then
    replace_tree "$staging/node_modules" tools/deno/node_modules
  else
    # Nothing installed here that a start could be running (a symbolic link, as a shared checkout
    # has, is replaced, not written through).
    if [ -L tools/deno/node_modules ]; then mv -T tools/deno/node_modules "$previous"; fi
    mv -T "$staging/node_modules" tools/deno/node_modules
  fi
fi

runtime_pkgs=(libvirt0 pciutils)
test_pkgs=(libvirt-clients libxml2-utils libvirt-daemon qemu-system-x86 qemu-utils util-linux ansible-core)
pkgs=("${runtime_pkgs[@]}")
[ "$profile" = test ] && pkgs+=("${test_pkgs[@]}")

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing Debian packages: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  else
    echo "setup: missing Debian packages: ${missing[*]}" >&2
    echo "setup: run as root, or: sudo apt-get install --no-install-recommends ${missing[*]}" >&2
    exit 1
  fi
fi

# bin/passthrough runs this bundle, which starts faster than the sources, while no source is
# newer; stale or missing, it runs the sources. The start guard's hook runs its check. Rebuilt
# here unless it was built from these very sources (by content: an update that kept old file
# times, as tar, rsync -a or cp -p do, would fool a comparison of times).
if [ "$(cat dist/bin/.sources 2>/dev/null)" != "$(scripts/bundle_bin.sh --sources-digest)" ]; then
  scripts/bundle_bin.sh >&2 ||
    echo "setup: scripts/bundle_bin.sh failed: bin/passthrough runs the sources, and an installed start guard keeps the check it had" >&2
else
  # Built from these sources, though some file is newer (touched, checked out again): told so,
  # bin/passthrough runs the bundle again instead of the sources.
  touch dist/bin/main.js
fi
