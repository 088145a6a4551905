"""OmniSafe's own TRPOLag, as of the commit of its Table 2 (3799d6d3, 2023-05-19), on this machine's
stack: does OmniSafe's code reach Table 2's SafetyHopperVelocity-v1 return here,
where ours ends far below it? Its config at that commit unchanged (1 env, 20 000 steps per epoch, cost
limit 25, 1e7 steps) but for one PyTorch thread and the step count. A run cannot resume.

    git -C <omnisafe clone> archive 3799d6d3 | tar -x -C omnisafe-3799
    python3 -m venv omni-venv && . omni-venv/bin/activate
    echo "$PWD/.venv/lib/python3.11/site-packages" > omni-venv/lib/python3.11/site-packages/main.pth
    pip install --no-deps -e omnisafe-3799 && pip install rich typer seaborn "pandas<2.1" numpy==1.23.5
    OMP_NUM_THREADS=1 python experiments/omnisafe/omnisafe_trpolag.py SafetyHopperVelocity-v1 0 10000000 sweeps/omnisafe

The .pth file lends omni-venv this project's torch, gymnasium, MuJoCo and safety-gymnasium. Its results
land in LOG_DIR/TRPOLag-{ENV_ID}/seed-<seed>-<time>/progress.csv (Metrics/EpRet, Metrics/EpCost).
"""

import sys
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import trpo_lag  # noqa: E402,F401  (imports safety_gymnasium through our scripts' Python 3.11 shim, spec §11)

for unused in ("wandb", "gdown"):  # imported by OmniSafe, used only for W&B logging and offline data
    sys.modules.setdefault(unused, types.ModuleType(unused))
import omnisafe  # noqa: E402

if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit("usage: python experiments/omnisafe/omnisafe_trpolag.py ENV_ID SEED TOTAL_STEPS LOG_DIR")
    env_id, seed, total_steps, log_dir = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    train = {"total_steps": total_steps, "torch_threads": 1}
    algo = {"steps_per_epoch": min(total_steps, 20_000)}
    cfgs = {
        "seed": seed,
        "train_cfgs": train,
        "algo_cfgs": algo,
        "logger_cfgs": {"log_dir": log_dir, "use_wandb": False},
    }
    omnisafe.Agent("TRPOLag", env_id, custom_cfgs=cfgs).learn()
