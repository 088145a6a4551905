#!/bin/bash
# How SHAPO's perturbation reweights the samples, on an early and a late checkpoint of a SHAPO-TRPO-Lag run in
# the paper's setting (seed 0, PID multiplier, cost limit 10) on Walker2d-v4 (100 000 and 1 000 000 steps) and
# SafetyPointGoal1-v0 (60 000 and 320 000 steps). TRPO's update does not depend on --total-timesteps, so each
# shorter run's checkpoint is the longer run's at that step. About 1 h of training on 2 cores, then 5 minutes.
#   bash experiments/reweighting/run.sh [out-dir]
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=$(realpath -m "${1:-sweeps/reweighting}")
PAPER="--lagrangian pid --cost-limit 10 --exp-name-suffix paper --save-every 1"
for run in Walker2d-v4:100000 Walker2d-v4:1000000 SafetyPointGoal1-v0:60000 SafetyPointGoal1-v0:320000; do
  python sweep.py --workers 1 --out-dir "$OUT/${run/:/_}" --scripts trpo_lag_shapo --env-ids "${run%:*}" --seeds 0 \
    --total-timesteps "${run#*:}" $PAPER
done
checkpoint() { ls "$OUT/$1"/runs/*/checkpoint.pt | head -1; }
python experiments/reweighting/reweighting.py --delta-downs 1e-6 1e-5 1e-4 --out-dir experiments/reweighting \
  --checkpoints "walker-early=$(checkpoint Walker2d-v4_100000)" "walker-late=$(checkpoint Walker2d-v4_1000000)" \
  "goal-early=$(checkpoint SafetyPointGoal1-v0_60000)" "goal-late=$(checkpoint SafetyPointGoal1-v0_320000)"
