#!/bin/sh
# Runs every test and prints one summary line "N passed, N failed".
# Usage: sh tests/run.sh BUILD_DIR   (GW_UPDATE=1 regenerates golden files)
B=${1:-build}
exec /usr/bin/python3 "$(dirname "$0")/run.py" "$B"
