"""Our PPO-Lag and TRPO-Lag on OmniSafe's recipes beside OmniSafe's published numbers.
--recipe 1m: the runs of experiments/evidence/run.sh's second slice (exp-names ppo_lag_omnisafe1m,
trpo_lag_omnisafe1m) and of experiments/omnisafe/omnisafe_ablation.py (exp-names
<algorithm>_omnisafe1m_<variant>, one row per variant); --recipe 10m: those of its fourth slice
(trpo_lag_omnisafe10m[_<variant>]).

    python experiments/omnisafe/omnisafe_tables.py --runs-dir sweeps/evidence/runs \
        --table experiments/evidence/omnisafe1m.md

Per algorithm and task, mean ± std over seeds (numpy's std, ddof=0) of: the final deterministic
evaluation (10 episodes of the Gaussian's mean at the last step: eval/mean_return, eval/mean_cost),
and the last --last-episodes training episodes (plot.py's final values). Only runs that reached the
recipe's last step count. The published numbers are those of OmniSafe's benchmarks/on-policy/README.md:
for 1m its PPOLag(1M) and TRPOLag(1M) tables at commit 65ed5cab (2023-04-19), for 10m its Table 2 at
3799d6d3 (2023-05-19; 1e7 steps, seeds 0, 5, 10, 15, 20, "evaluation following 1e7 training steps").
The README says neither which std nor, for 1m, whether training or evaluation episodes.
"""

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import tyro
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import plot  # noqa: E402

OURS = re.compile(r"^(?P<algorithm>ppo_lag|trpo_lag)_omnisafe(?P<recipe>1m|10m)(?:_(?P<variant>\w+))?$")
# recipe -> (the step a run must reach, {(algorithm, task): ((return mean, std), (cost mean, std))})
PUBLISHED = {
    "1m": (
        1_024_000,
        {  # OmniSafe 65ed5cab
            ("ppo_lag", "SafetyHopperVelocity-v1"): ((1630.06, 253.7), (28.31, 25.87)),
            ("ppo_lag", "SafetyWalker2dVelocity-v1"): ((2256.96, 944.06), (25.47, 17.36)),
            ("trpo_lag", "SafetyHopperVelocity-v1"): ((1013.93, 18.01), (1.63, 2.31)),
            ("trpo_lag", "SafetyWalker2dVelocity-v1"): ((1821.26, 98.57), (0.0, 0.0)),
        },
    ),
    "10m": (
        10_000_000,
        {  # OmniSafe 3799d6d3, Table 2
            ("ppo_lag", "SafetyHopperVelocity-v1"): ((961.92, 752.87), (13.96, 19.33)),
            ("ppo_lag", "SafetyWalker2dVelocity-v1"): ((2982.27, 681.55), (13.49, 14.55)),
            ("trpo_lag", "SafetyHopperVelocity-v1"): ((1391.79, 269.07), (11.22, 9.97)),
            ("trpo_lag", "SafetyWalker2dVelocity-v1"): ((3207.10, 7.88), (14.98, 9.27)),
        },
    ),
}


@dataclass
class Args:
    runs_dir: str = "sweeps/evidence/runs"
    """folder searched (recursively) for the runs"""
    table: Optional[str] = None
    """also write the Markdown table to this file"""
    recipe: Literal["1m", "10m"] = "1m"
    """OmniSafe's 1M-step recipe (65ed5cab) or its 1e7-step Table 2 (3799d6d3)"""
    last_episodes: int = 20
    """training values: mean over each run's last this many episodes"""


def spread(values) -> str:
    return f"{np.mean(values):.1f} ± {np.std(values):.1f}"


def main(args: Args) -> None:
    steps, published = PUBLISHED[args.recipe]
    rows = {}  # (algorithm, task, variant) -> [(eval return, eval cost, train return, train cost)] over seeds
    for path in plot.find_run_dirs(Path(args.runs_dir)):
        name = OURS.match(plot.RUN_NAME.match(path.name)["exp_name"])
        if not name or name["recipe"] != args.recipe:
            continue  # other slices of the grid
        run = plot.load_run(path, args.last_episodes)
        if run is None or run.epoch_steps[-1] < steps:
            continue
        events = EventAccumulator(str(path), size_guidance={"scalars": 0})
        events.Reload()
        if "eval/mean_return" not in events.Tags()["scalars"]:
            continue
        evaluation = [events.Scalars(f"eval/mean_{key}")[-1].value for key in ("return", "cost")]
        key = (name["algorithm"], run.env_id, name["variant"] or "")
        rows.setdefault(key, []).append((*evaluation, run.final["return"], run.final["cost"]))
    if not rows:
        sys.exit(
            f"omnisafe_tables.py: error: no finished *_omnisafe{args.recipe}* runs with an evaluation "
            f"under {args.runs_dir}"
        )
    lines = [
        "| algorithm | task | seeds | return: OmniSafe | eval. | training | cost: OmniSafe | eval. | training |",
        "|-|-|-|-|-|-|-|-|-|",
    ]
    for (algorithm, task, variant), values in sorted(rows.items()):
        values = np.array(values)
        (ret, ret_std), (cost, cost_std) = published.get((algorithm, task), ((np.nan,) * 2,) * 2)
        label = f"{algorithm} + {variant}" if variant else algorithm
        lines.append(
            f"| {label} | {task} | {len(values)} | {ret:.1f} ± {ret_std:.1f} | {spread(values[:, 0])} | "
            f"{spread(values[:, 2])} | {cost:.1f} ± {cost_std:.1f} | {spread(values[:, 1])} | {spread(values[:, 3])} |"
        )
    print("\n".join(lines))
    if args.table:
        Path(args.table).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(tyro.cli(Args))
