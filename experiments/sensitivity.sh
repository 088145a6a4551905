#!/bin/bash
# Sensitivity of SHAPO-TRPO-Lag to delta_Down and rho_critic on Walker2d-v4 (the analogue of the paper's
# sensitivity figure), then its figure and table (experiments/sensitivity/):
#   bash experiments/sensitivity.sh [out-dir]
# delta_Down in {0, 1e-6, 1e-5, 1e-4, 1e-3} x rho_critic in {0, 0.05}, seeds 0-2, $STEPS steps each
# (500 000 unless set), the release's baseline multiplier and cost limit (--lagrangian pid --cost-limit 10).
# Two chains (one per rho_critic) of one run at a time, one PyTorch thread each, seed by seed: about
# 5.5 hours on 2 cores. Stopped or cut off? Run it again: finished runs are skipped and the others resume
# from their checkpoints (sweep.py).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-sweeps/sensitivity}
STEPS=${STEPS:-500000}
run() {  # run <delta_down> <rho_critic> <seed>
  python sweep.py --scripts trpo_lag_shapo --env-ids Walker2d-v4 --seeds "$3" --workers 1 --threads-per-run 1 \
    --out-dir "$OUT" --exp-name-suffix "delta$1-rho${2/./p}" --total-timesteps "$STEPS" --save-every 1 \
    --lagrangian pid --cost-limit 10 --delta-down "$1" --critic-sam-rho "$2"
}
for rho in 0 0.05; do  # seed by seed, so that a grid cut short holds whole seeds
  (for s in 0 1 2; do for d in 0 1e-6 1e-5 1e-4 1e-3; do run "$d" "$rho" "$s"; done; done) &
done
wait
python experiments/sensitivity.py --runs-dir "$OUT/runs" --out-dir experiments/sensitivity --steps "$STEPS"
