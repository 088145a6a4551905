#!/bin/bash
# Does PyTorch's default initialisation (this code) pay fewer falls early in training than the
# orthogonal one with output gain 0.01 that the scripts used up to commit 592eaf5? TRPO-Lag with the PID
# multiplier on Walker2d-v4, seeds 0-4, $STEPS steps (an earlier comparison with the authors' release ran
# 300 000; its excess falls were in the first four epochs), each version, then experiments/init_falls/results.md:
#   [STEPS=300000] bash experiments/init_falls/run.sh [out-dir]
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-sweeps/init_falls}
STEPS=${STEPS:-100000}
OLD=$(mktemp -d)/old && git worktree add --detach "$OLD" 592eaf5 >/dev/null
FLAGS="--env-ids Walker2d-v4 --seeds 0 1 2 3 4 --workers 1 --threads-per-run 1 --total-timesteps $STEPS --lagrangian pid"
python sweep.py --scripts trpo_lag $FLAGS --out-dir "$OUT/new" &
# the old sweep.py knows no resume; its scripts take the same flags
python "$OLD/sweep.py" --python "$(command -v python)" --scripts trpo_lag $FLAGS --out-dir "$OUT/old" &
wait
git worktree remove --force "$OLD"
python - "$OUT" <<'PY' | tee experiments/init_falls/results.md
import sys
from pathlib import Path
import numpy as np
sys.path.insert(0, ".")
import plot
print("| initialisation | seeds | falls in epochs 1-4 (80 000 steps) | falls in the whole run | final return (last 20 ep.) |")
print("|-|-|-|-|-|")
for label, folder in (("orthogonal, output gain 0.01 (592eaf5)", "old"), ("PyTorch default (this commit)", "new")):
    runs = [plot.load_run(p, 20) for p in plot.find_run_dirs(Path(sys.argv[1]) / folder / "runs")]
    early = [float(np.interp(80_000, r.epoch_steps, r.cumulative_cost)) for r in runs]
    cells = [plot.format_interval(*plot.mean_interval(v)) for v in (early, [r.final["cumulative_cost"] for r in runs],
                                                                      [r.final["return"] for r in runs])]
    print(f"| {label} | {len(runs)} | " + " | ".join(cells) + " |")
PY
