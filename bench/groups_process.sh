#!/usr/bin/env bash
# Whole-process comparison, in one run, on generated hosts (lib/testing/host_generator.ts):
#   A  passthrough groups --json --sysfs TREE   (Deno start-up, sysfs discovery, one lspci run)
#   B  baseline: `deno run` of an empty script plus one `lspci -nnk` over the same tree
#   C  the classic per-device shell loop:
#        for d in TREE/kernel/iommu_groups/*/devices/*; do lspci -O sysfs.path=... -nns ${d##*/}; done
# Targets: A within 2x of B; A at least 10x faster than C at 1,024 functions; A grows linearly.
# Uses hyperfine when installed (apt-get install hyperfine), else a bash timing loop.
#
# Usage: bench/groups_process.sh            (SIZES="256 1024 4096" LOOP_SIZES="1024" RUNS=5)
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES=${SIZES:-"256 1024 4096"}
LOOP_SIZES=${LOOP_SIZES:-"1024"}
RUNS=${RUNS:-5}
LOOP_RUNS=${LOOP_RUNS:-2}
# The documented permission set (bin/passthrough, README "Permissions").
FLAGS=$(grep -oE -- "--(no-prompt|allow-[a-z-]+(=[^ \\]+)?)" bin/passthrough | tr "\n" " ")
work=$(mktemp -d /tmp/passthrough-groups-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
: >"$work/empty.ts"
export NO_COLOR=1

# Seconds (mean) for one shell command.
measure() {
  local runs=$1 cmd=$2
  if command -v hyperfine >/dev/null; then
    hyperfine --style none --warmup 1 --runs "$runs" --export-json "$work/h.json" "$cmd" >/dev/null 2>&1
    sed -nE 's/.*"mean": *([0-9.eE+-]+).*/\1/p' "$work/h.json" | head -n1
  else
    bash -c "$cmd" >/dev/null 2>&1 # warm-up
    local start end
    start=$(date +%s%N)
    for ((i = 0; i < runs; i++)); do bash -c "$cmd" >/dev/null 2>&1; done
    end=$(date +%s%N)
    awk -v s="$start" -v e="$end" -v r="$runs" 'BEGIN { printf "%.6f", (e - s) / r / 1e9 }'
  fi
}

for n in $SIZES; do
  deno eval "import { generateHost } from './lib/testing/host_generator.ts';
    import { buildHostTree } from './lib/testing/host_tree.ts';
    buildHostTree(generateHost($n), '$work/$n');"
done
deno cache --quiet main.ts "$work/empty.ts" 2>/dev/null || true

echo "tool: $(command -v hyperfine >/dev/null && hyperfine --version || echo 'bash loop'); runs: $RUNS (loop: $LOOP_RUNS); $(nproc) CPUs; load: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-9s %10s %10s %10s %8s %8s %12s\n' functions "A groups" "B base" "C loop" "A/B" "C/A" "A us/fn"
declare -A A_TIME
for n in $SIZES; do
  tree="$work/$n"
  a=$(measure "$RUNS" "deno run --quiet $FLAGS main.ts groups --json --sysfs $tree >/dev/null")
  b=$(measure "$RUNS" "deno run --quiet $work/empty.ts && lspci -O sysfs.path=$tree/bus/pci -nnk >/dev/null 2>&1")
  c="-"
  if [[ " $LOOP_SIZES " == *" $n "* ]]; then
    c=$(measure "$LOOP_RUNS" "for d in $tree/kernel/iommu_groups/*/devices/*; do lspci -O sysfs.path=$tree/bus/pci -nns \${d##*/}; done >/dev/null 2>&1")
  fi
  A_TIME[$n]=$a
  awk -v n="$n" -v a="$a" -v b="$b" -v c="$c" 'BEGIN {
    ca = (c == "-") ? "-" : sprintf("%.1fx", c / a)
    cs = (c == "-") ? "-" : sprintf("%.3fs", c)
    printf "%-9s %9.3fs %9.3fs %10s %7.2fx %8s %12.1f\n", n, a, b, cs, a / b, ca, a / n * 1e6
  }'
done
first=""
for n in $SIZES; do
  if [[ -z "$first" ]]; then first=$n; continue; fi
  awk -v n="$n" -v f="$first" -v a="${A_TIME[$n]}" -v af="${A_TIME[$first]}" \
    'BEGIN { printf "growth A %s->%s functions: %.1fx functions, %.2fx time\n", f, n, n / f, a / af }'
done
