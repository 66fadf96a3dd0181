#!/usr/bin/env bash
# Installs what bench/whole_process.ts compares against and measures with, idempotently, when
# running as root: the seed-style Python baseline's Debian packages (python3-libvirt,
# python3-lxml, python3-yaml) and GNU time (peak RSS). These are the benchmark's own needs, not
# the CLI's (scripts/setup.sh); without them the benchmark skips what it cannot measure and says so.
# Usage: bench/setup.sh
set -euo pipefail
pkgs=(python3-libvirt python3-lxml python3-yaml time)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "bench/setup.sh: installing Debian packages: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
else
  echo "bench/setup.sh: missing Debian packages: ${missing[*]}" >&2
  echo "bench/setup.sh: run as root, or: sudo apt-get install --no-install-recommends ${missing[*]}" >&2
  exit 1
fi
