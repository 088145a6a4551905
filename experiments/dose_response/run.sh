#!/bin/bash
# Does a larger radius make SHAPO safer? SHAPO-TRPO-Lag on Walker2d-v4 in the paper's setting (PID multiplier,
# cost limit 10, 1 000 000 steps) at delta_Down in {0, 1e-5, 1e-4, 1e-3, 1e-2} (0 is TRPO-Lag itself), seeds 0-4:
# 25 runs of 10-11 minutes on an idle core, about 2.5 hours on 2 cores. It resumes: run it again until it ends.
#   [WORKERS=2] [SEEDS="0 1 2 3 4"] bash experiments/dose_response/run.sh [out-dir]
# Then the tables and figure (dose_response.py): return, falls and share of falls against delta_Down, paired with
# delta_Down = 0 by seed, their IQM and probability of improvement over delta_Down = 0, and the perturbation's
# diagnostics. runs.csv keeps one row per finished run, so that seeds run in other sessions join the table: run a
# subset with SEEDS="2 3" and the committed rows of the others stay.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-sweeps/dose_response}
# shellcheck disable=SC2086 # SEEDS is a list of seeds
python sweep.py --scripts trpo_lag_shapo --env-ids Walker2d-v4 --seeds ${SEEDS:-0 1 2 3 4} --workers "${WORKERS:-2}" \
  --threads-per-run 1 --out-dir "$OUT" --exp-name-suffix pid --grid delta-down=0,1e-5,1e-4,1e-3,1e-2 \
  critic-sam-rho=0 --total-timesteps 1000000 --save-every 1 --lagrangian pid --cost-limit 10
python experiments/dose_response/dose_response.py --runs-dir "$OUT/runs" --out-dir experiments/dose_response \
  --steps 1000000 --rows experiments/dose_response/runs.csv
