#!/usr/bin/env bash
# The two README commands:
#   ./quickstart.sh demo   set up, then run the main job on the bundled demo host and VM world
#   ./quickstart.sh test   set up, then run the whole test suite
set -euo pipefail
cd "$(dirname "$0")"
what=${1:-demo}
case "$what" in
  demo)
    scripts/setup.sh runtime
    export PATH="$PWD/tools/deno/node_modules/.bin:$PATH"
    exec deno task --quiet demo
    ;;
  test)
    scripts/setup.sh test
    export PATH="$PWD/tools/deno/node_modules/.bin:$PATH"
    exec deno task --quiet test
    ;;
  *)
    echo "usage: ./quickstart.sh demo|test" >&2
    exit 2
    ;;
esac
