#!/bin/bash
# The grid of issue 10 (evidence at a meaningful budget), ordered so that what finishes first is useful
# on its own. Not run yet: about 12 core-hours. Run it in slices, e.g. `timeout 2h bash docs/evidence.sh`,
# and again until it ends: sweep.py skips finished runs and resumes the others from their checkpoints.
#   [WORKERS=16] bash docs/evidence.sh [out-dir]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-sweeps/evidence}
SWEEP="python sweep.py --workers ${WORKERS:-2} --threads-per-run 1 --out-dir $OUT --save-every 1"
PAPER="--lagrangian pid --cost-limit 10 --exp-name-suffix paper"

# 1. the paper's comparison, TRPO-PID pair, seeds 0-2 on two tasks first (1 000 000 steps)
$SWEEP --scripts trpo_lag trpo_lag_shapo --env-ids Walker2d-v4 SafetyPointGoal1-v0 --seeds 0 1 2 \
  --total-timesteps 1000000 $PAPER
# 2. baselines against OmniSafe's 1M-step recipe (1 env, 2 048 steps per epoch, 500 epochs, cost limit 25),
#    with a deterministic evaluation at the end, as its tables report
$SWEEP --scripts ppo_lag trpo_lag --env-ids SafetyHopperVelocity-v1 SafetyWalker2dVelocity-v1 --seeds 0 1 2 \
  --num-envs 1 --steps-per-epoch 2048 --total-timesteps 1024000 --eval-episodes 10 --eval-every 500 \
  --exp-name-suffix omnisafe1m
# 3. the rest of the paper's comparison: the TRPO-PID pair to 5 seeds on all four tasks, then the PPO pair
$SWEEP --scripts trpo_lag trpo_lag_shapo --env-ids Walker2d-v4 SafetyPointGoal1-v0 SafetyPointButton1-v0 Ant-v4 \
  --seeds 0 1 2 3 4 --total-timesteps 1000000 $PAPER
$SWEEP --scripts ppo_lag ppo_lag_shapo --env-ids SafetyPointGoal1-v0 Walker2d-v4 --seeds 0 1 2 \
  --total-timesteps 500000 --cost-limit 10 --exp-name-suffix paper
# figures and tables (95 % bootstrap intervals; SHAPO minus base per pair)
python plot.py --runs-dir "$OUT/runs" --out-dir docs/evidence --table docs/evidence/results.md --last-episodes 20
