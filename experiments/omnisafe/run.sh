#!/bin/bash
# Which of OmniSafe's TRPOLag settings lowers its cost at the 1M-step recipe? Our trpo_lag.py with them
# switched on (experiments/omnisafe/omnisafe_ablation.py) on SafetyHopperVelocity-v1, seeds 0-2, then the table
# beside the published numbers and the plain runs of experiments/evidence/run.sh's second slice:
#   [WORKERS=2] bash experiments/omnisafe/run.sh [out-dir] [evidence runs-dir]
# Variants: costnorm (cost normalisation alone) and all (cost normalisation, reset per epoch, observation
# clip). Since 33a5831 trpo_lag.py takes J_c over a 50-episode window and uses OmniSafe's conjugate
# gradient itself, so the plain runs now have both, and the study's third variant of 2026-12-01
# (jcwindow, on the scripts at b451312) has no counterpart here. A run of this recipe took about 9 minutes
# on one core at b451312. Each run ends with 10 episodes of its deterministic policy (evaluate.py, through
# the patched trpo_lag). These runs do not resume: a run cut off starts again.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=$(realpath -m "${1:-sweeps/ablation}")
EVIDENCE=${2:-sweeps/evidence/runs}
mkdir -p "$OUT"
OMNI="--env-id SafetyHopperVelocity-v1 --num-envs 2 --steps-per-epoch 2048 --total-timesteps 1024000 --save-model"
for seed in 0 1 2; do
  echo "costnorm $seed cost-norm"; echo "all $seed cost-norm reset obs-clip"
done | OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 xargs -P "${WORKERS:-2}" -L 1 bash -c \
  "cd '$OUT' && python '$PWD/experiments/omnisafe/omnisafe_ablation.py' --ablation \${@:2} --eval-episodes 10 -- $OMNI \
   --seed \$1 --exp-name trpo_lag_omnisafe1m_\$0 > \$0_\$1.log 2>&1"
python experiments/omnisafe/omnisafe_tables.py --runs-dir "$OUT/runs" --table experiments/omnisafe/results.md
python experiments/omnisafe/omnisafe_tables.py --runs-dir "$EVIDENCE"  # the plain runs, for comparison
