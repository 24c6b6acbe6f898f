#!/bin/sh
# bench/run.sh BUILD_DIR [--quick] [--soak] [--only a,b] [--keep] ...
# gwd measured side by side with nginx and OpenResty; see docs/performance.md.
# Writes bench/results/latest.md (and latest.svg with gnuplot, latest.json).
set -e
if [ $# -lt 1 ]; then
    echo "usage: bench/run.sh BUILD_DIR [--quick] [--soak] [--only a,b] [--keep]" >&2
    exit 2
fi
exec /usr/bin/python3 "$(dirname "$0")/bench.py" "$@"
