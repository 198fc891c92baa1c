#!/usr/bin/env bash
# Every benchmark with its defaults, then the plot. Each saves its latest
# result under benchmarks/results/; the plot goes to benchmarks/results/report.png.
#   benchmarks/run_all.sh            (a few minutes; run it on a quiet machine)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
"$PY" -m mc.cli bench fanout "$@"
"$PY" -m mc.cli bench relay "$@"
"$PY" -m mc.cli bench connections "$@"
"$PY" -m mc.cli bench connections --up 6 --conns 100000 "$@"
"$PY" -m mc.cli bench master "$@"
"$PY" -m mc.cli bench report
