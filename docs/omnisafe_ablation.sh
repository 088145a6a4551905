#!/bin/bash
# Which of OmniSafe's TRPOLag settings lowers its cost at the 1M-step recipe (issue 10, point 2)? Our
# trpo_lag.py with them switched on (docs/omnisafe_ablation.py) on SafetyHopperVelocity-v1, seeds 0-2,
# then the table beside the published numbers and the plain runs of docs/evidence.sh's second slice:
#   [WORKERS=2] bash docs/omnisafe_ablation.sh [out-dir] [evidence runs-dir]
# 9 runs of about 9 minutes on one core each. These runs do not resume: a run cut off starts again.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=$(realpath -m "${1:-sweeps/ablation}")
EVIDENCE=${2:-sweeps/evidence/runs}
mkdir -p "$OUT"
OMNI="--env-id SafetyHopperVelocity-v1 --num-envs 2 --steps-per-epoch 2048 --total-timesteps 1024000 --eval-episodes 10 --eval-every 500"
for seed in 0 1 2; do
  echo "costnorm $seed cost-norm"; echo "jcwindow $seed jc-window"; echo "all $seed cost-norm jc-window reset obs-clip"
done | OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 xargs -P "${WORKERS:-2}" -L 1 bash -c \
  "cd '$OUT' && python '$PWD/docs/omnisafe_ablation.py' --ablation \${@:2} -- $OMNI --seed \$1 \
   --exp-name trpo_lag_omnisafe1m_\$0 > \$0_\$1.log 2>&1"
python docs/omnisafe_tables.py --runs-dir "$OUT/runs" --table docs/evidence/omnisafe_ablation.md
python docs/omnisafe_tables.py --runs-dir "$EVIDENCE"  # the plain runs, for comparison
