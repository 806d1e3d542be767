#!/usr/bin/env bash
# Choose SimA's timestep on a CALIBRATION split, never on the evaluation labels:
# train a shadow DDPM on its own split (seed 1) and sweep t over SIMA_T_GRID on it.
# The shadow is deliberately only moderately overfit (256 members, 800 steps): on a model every t
# separates perfectly (AUC 1.0 at all t) and the sweep cannot choose. Results: benchmarks/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-calibration-out}
mkdir -p "$OUT"
.venv/bin/genleak data split --source digits:8 --members 256 --nonmembers 256 --seed 1 --name shadow --out "$OUT/shadow-split.json"
.venv/bin/genleak train ddpm --split "$OUT/shadow-split.json" --out "$OUT/shadow" --steps 800 --channels 16,32 --seed 1 --threads 1
.venv/bin/genleak sweep --target "$OUT/shadow" --split "$OUT/shadow-split.json" --attack sima --vary t --grid 0,10,20,50,100
