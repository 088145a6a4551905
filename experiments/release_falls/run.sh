#!/bin/bash
# The falls TRPO-PID-Lag pays early on Walker2d-v4 in the authors' release
# (montrealrobotics/shapo, branch safepo, commit 1bb7704, safepo/single_agent/trpo_pid.py, run unchanged
# by experiments/release_falls/run_release.py) and in trpo_lag.py --lagrangian pid, seeds 0-9, 80 000 steps each
# (four epochs of 20 000 steps in 5 envs, the defaults of both; cost limit 10 as in the release's
# commands), and trpo_lag.py once more from the release's initial weights (release_init.py), then
# experiments/release_falls/results.md. One run at a time, one thread each. Needs network for the
# release and its venv (our requirements plus wandb and joblib).
#   [SEEDS="10 11"] bash experiments/release_falls/run.sh [out-dir]
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
OUT=${1:-sweeps/release_falls}
SEEDS=${SEEDS:-0 1 2 3 4 5 6 7 8 9}
if [ ! -d "$OUT/release" ]; then
  git clone -q --branch safepo https://github.com/montrealrobotics/shapo "$OUT/release"
  git -C "$OUT/release" checkout -q 1bb770437bbbe40a89938661343744243e164bf9
fi
if [ ! -d "$OUT/venv" ]; then
  python3 -m venv "$OUT/venv"
  "$OUT/venv/bin/pip" install -q -r requirements.txt joblib==1.6.0 wandb==0.31.0
  "$OUT/venv/bin/pip" install -q --no-deps safety-gymnasium==1.0.0
fi
for seed in $SEEDS; do
  [ -f "$OUT/release_seed$seed.csv" ] && continue
  OMP_NUM_THREADS=1 WANDB_MODE=disabled WANDB_DIR="$OUT" RELEASE_SRC="$OUT/release" "$OUT/venv/bin/python" \
    experiments/release_falls/run_release.py "$OUT/release_seed$seed.csv.part" -- --task Walker2d-v4 --seed "$seed" \
    --cost-limit 10 --total-steps 80000 --log-dir "$OUT/release_logs/seed$seed" > "$OUT/release_seed$seed.log" 2>&1
  mv "$OUT/release_seed$seed.csv.part.release_totalcost.csv" "$OUT/release_totalcost_seed$seed.csv"
  mv "$OUT/release_seed$seed.csv.part" "$OUT/release_seed$seed.csv"
done
python sweep.py --scripts trpo_lag --env-ids Walker2d-v4 --seeds $SEEDS --workers 1 --threads-per-run 1 --out-dir "$OUT" \
  --total-timesteps 80000 --lagrangian pid --cost-limit 10 --exp-name-suffix pid
# ours again, from the release's initial weights for each seed (needs the release's venv for its model)
for seed in $SEEDS; do
  grep -qs "^epoch 4/4" "$OUT/release_init_seed$seed.log" && continue
  (cd "$OUT" && OMP_NUM_THREADS=1 RELEASE_SRC=release venv/bin/python "$ROOT/experiments/release_falls/release_init.py" "$seed" \
    > "release_init_seed$seed.log" 2>&1)
done
python experiments/release_falls/compare.py --out-dir "$OUT" | tee experiments/release_falls/results.md
