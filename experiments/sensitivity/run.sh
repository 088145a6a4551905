#!/bin/bash
# Sensitivity of SHAPO-TRPO-Lag to delta_Down and rho_critic on Walker2d-v4 (the analogue of the paper's
# sensitivity figure): one sweep over the grid, then its figure and tables (experiments/sensitivity/):
#   [WORKERS=2] [STEPS=500000] bash experiments/sensitivity/run.sh [out-dir]
# delta_Down in {0, 1e-6, 1e-5, 1e-4, 1e-3} x rho_critic in {0, 0.05}, seeds 0-2, $STEPS steps each, the
# release's baseline multiplier and cost limit (--lagrangian pid --cost-limit 10). The runs are named
# trpo_lag_shapo_pid-delta_down=<d>-critic_sam_rho=<r> and go seed by seed, $WORKERS at a time with one
# PyTorch thread each: about 5.5 hours on 2 cores. Stopped or cut off? Run it again: finished runs are
# skipped and the others resume from their checkpoints (sweep.py).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-sweeps/sensitivity}
STEPS=${STEPS:-500000}
python sweep.py --scripts trpo_lag_shapo --env-ids Walker2d-v4 --seeds 0 1 2 --workers "${WORKERS:-2}" \
  --threads-per-run 1 --out-dir "$OUT" --exp-name-suffix pid --grid delta-down=0,1e-6,1e-5,1e-4,1e-3 \
  critic-sam-rho=0,0.05 --total-timesteps "$STEPS" --save-every 1 --lagrangian pid --cost-limit 10
python experiments/sensitivity/sensitivity.py --runs-dir "$OUT/runs" --out-dir experiments/sensitivity --steps "$STEPS"
python plot.py --runs-dir "$OUT/runs" --out-dir experiments/sensitivity --last-episodes 20 \
  --baseline delta-down=0 --table experiments/sensitivity/statistics.md
