#!/bin/bash
# The headline study: SHAPO-TRPO-Lag against TRPO-Lag in the paper's setting (PID multiplier, cost limit 10)
# on Walker2d-v4, 1 000 000 steps, 10 independent seeds (0-9): 20 runs of 15-20 minutes each on one core.
# It resumes where it stopped: run it again until it ends.   [WORKERS=2] bash experiments/walker10/run.sh [out-dir]
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=$(realpath -m "${1:-sweeps/walker10}")
python sweep.py --workers "${WORKERS:-2}" --threads-per-run 1 --out-dir "$OUT" --scripts trpo_lag trpo_lag_shapo \
  --env-ids Walker2d-v4 --seeds 0 1 2 3 4 5 6 7 8 9 --total-timesteps 1000000 \
  --lagrangian pid --cost-limit 10 --exp-name-suffix paper --save-every 1
# figure and tables: per algorithm, SHAPO minus base unpaired and paired by seed (95 % bootstrap intervals)
python plot.py --runs-dir "$OUT/runs" --algorithms trpo_lag_paper trpo_lag_shapo_paper --out-dir experiments/walker10 \
  --table experiments/walker10/results.md --last-episodes 20
