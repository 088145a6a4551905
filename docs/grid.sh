#!/bin/bash
# The runs behind the README's results (about 2 h on 2 cores; there several of these sweeps
# ran side by side), then their figures and tables (docs/*.png, docs/results.md; the PID
# pair in docs/pid/):
#   bash docs/grid.sh [out-dir]
# Every run: default hyperparameters (SPEC), cost limit 25, 5 envs in one process, one PyTorch
# thread, two runs at a time. Stopped (Ctrl-C) or cut off? Run it again: sweep.py skips the
# finished runs and resumes the others from their checkpoints.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-sweeps/grid}
SWEEP="python sweep.py --threads-per-run 1 --out-dir $OUT --seeds 0 1 2"
TRPO="--total-timesteps 200000"

# TRPO-Lag vs SHAPO-TRPO-Lag, 200 000 steps on the navigation tasks
$SWEEP --workers 2 $TRPO --scripts trpo_lag trpo_lag_shapo --env-ids SafetyPointGoal1-v0
$SWEEP --workers 2 $TRPO --scripts trpo_lag trpo_lag_shapo --env-ids SafetyPointButton1-v0
# the fall-cost MuJoCo tasks at half that budget: all that fitted
$SWEEP --workers 2 --total-timesteps 100000 --scripts trpo_lag trpo_lag_shapo --env-ids Walker2d-v4 Ant-v4
# the same pair with the PID Lagrange multiplier (SPEC §8), runs named trpo_lag_pid, trpo_lag_shapo_pid
$SWEEP --workers 2 $TRPO --scripts trpo_lag trpo_lag_shapo --env-ids SafetyPointGoal1-v0 --lagrangian pid \
  --exp-name-suffix pid

# PPO-Lag vs SHAPO-PPO-Lag, 40 000 steps (2 epochs): all that fitted, SHAPO-PPO's update is slow
$SWEEP --workers 2 --scripts ppo_lag ppo_lag_shapo --total-timesteps 40000 \
  --env-ids SafetyPointGoal1-v0 SafetyPointButton1-v0 Walker2d-v4 Ant-v4

# figures and tables: the final values are the mean of each run's last 20 episodes
PLOT="python plot.py --runs-dir $OUT/runs --last-episodes 20"
$PLOT --out-dir docs --table docs/results.md --algorithms ppo_lag ppo_lag_shapo trpo_lag trpo_lag_shapo
$PLOT --out-dir docs/pid --table docs/pid/results.md --env-ids SafetyPointGoal1-v0 \
  --algorithms trpo_lag trpo_lag_shapo trpo_lag_pid trpo_lag_shapo_pid
