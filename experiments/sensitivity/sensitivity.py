"""Figure and table of the sensitivity study that experiments/sensitivity/run.sh runs: SHAPO-TRPO-Lag's final
return and cumulative training cost (on Walker2d-v4: falls) against delta_Down, one line per
rho_critic; mean over seeds with plot.py's 95 % bootstrap interval over seeds. Runs of one seed share
their initial policy and first rollout whatever delta_Down is, so the table also gives each measure's
difference to delta_Down = 0 (same rho_critic) paired by seed: the mean of the per-seed differences
with a bootstrap interval over seeds.

    python experiments/sensitivity/sensitivity.py --runs-dir sweeps/sensitivity/runs --out-dir experiments/sensitivity

Runs are recognised by the grid settings in their exp-name, `...-delta_down=<delta_down>-critic_sam_rho=<rho>`
as sweep.py --grid names them (read back with sweep.split_exp_name). plot.py --baseline delta-down=0 gives the
same pairs with the IQM and probability of improvement.
"""

import sys
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tyro  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import plot  # noqa: E402
import sweep  # noqa: E402

GRID = ("delta-down", "critic-sam-rho")  # the grid flags whose values each run's exp-name holds
MEASURES = {"return": "final return (last episodes)", "cumulative_cost": "cumulative training cost"}
PANELS = (("return", False), ("cumulative_cost", False), ("cumulative_cost", True))  # (measure, paired difference)


@dataclass
class Args:
    runs_dir: str = "sweeps/sensitivity/runs"
    """folder holding the runs of experiments/sensitivity/run.sh"""
    out_dir: str = "experiments/sensitivity"
    """where sensitivity.png and results.md go"""
    last_episodes: int = 20
    """final return: mean over each run's last this many episodes"""
    steps: int = 100_000
    """read every run up to this step (runs resumed past it are cut back to it)"""


def main(args: Args) -> None:
    groups = {}  # (rho, delta) -> runs
    for path in plot.find_run_dirs(Path(args.runs_dir)):
        settings = sweep.split_exp_name(plot.RUN_NAME.match(path.name)["exp_name"])[1]
        run = plot.load_run(path, args.last_episodes) if set(GRID) <= set(settings) else None
        if run is not None and run.epoch_steps[-1] >= args.steps:
            episodes, epochs = run.episode_steps <= args.steps, run.epoch_steps <= args.steps
            run.episode_steps, run.episode_return, run.episode_cost = (
                a[episodes] for a in (run.episode_steps, run.episode_return, run.episode_cost)
            )
            run.epoch_steps, run.cumulative_cost = run.epoch_steps[epochs], run.cumulative_cost[epochs]
            run.final = plot.final_values(run, args.last_episodes)
            groups.setdefault((float(settings["critic-sam-rho"]), float(settings["delta-down"])), []).append(run)
    if not groups:
        sys.exit(f"sensitivity.py: error: no runs named ...-delta_down=<d>-critic_sam_rho=<r> under {args.runs_dir}")
    deltas = sorted({delta for _, delta in groups})
    positions = {delta: i for i, delta in enumerate(deltas)}  # evenly spaced: 0 sits beside the powers of ten
    lines = [
        f"SHAPO-TRPO-Lag on Walker2d-v4, {args.steps} steps per run; mean over seeds "
        "[95 % percentile-bootstrap interval over seeds, plot.py]; "
        f"final return over the last {args.last_episodes} episodes.",
        "",
        "| rho_critic | delta_Down | seeds | final return | cumulative training cost "
        "| Δ return vs delta_Down 0 (same seed) | Δ cumulative cost vs delta_Down 0 (same seed) |",
        "|-|-|-|-|-|-|-|",
    ]
    figure, axes = plt.subplots(1, 3, figsize=(15, 4))
    for rho in sorted({rho for rho, _ in groups}):
        cells = {panel: [] for panel in PANELS}
        base = {run.seed: run for run in groups.get((rho, 0.0), [])}
        for delta in deltas:
            runs, row = groups.get((rho, delta), []), {}
            for key, paired in PANELS + (("return", True),):
                values = [
                    run.final[key] - base[run.seed].final[key] if paired else run.final[key]
                    for run in runs
                    if not paired or run.seed in base
                ]
                point, interval = plot.mean_interval(values) if values else (np.nan, None)
                cells.setdefault((key, paired), []).append((positions[delta], point, interval))
                row[key, paired] = (
                    plot.format_interval(point, interval, signed=paired) if values and (delta or not paired) else ""
                )
            if runs:
                cols = [
                    row["return", False],
                    row["cumulative_cost", False],
                    row["return", True],
                    row["cumulative_cost", True],
                ]
                lines.append(f"| {rho:g} | {delta:g} | {len(runs)} | " + " | ".join(cols) + " |")
        for axis, panel in zip(axes, PANELS):
            x, y, interval = zip(*[cell for cell in cells[panel] if not np.isnan(cell[1])])
            low = [i[0] if i else p for p, i in zip(y, interval)]
            high = [i[1] if i else p for p, i in zip(y, interval)]
            axis.plot(x, y, marker="o", label=f"rho_critic = {rho:g}")
            axis.fill_between(x, low, high, alpha=0.2)
    for axis, (key, paired) in zip(axes, PANELS):
        axis.set_xticks(range(len(deltas)), [f"{delta:g}" for delta in deltas])
        axis.set_xlabel("delta_Down")
        axis.set_title(
            f"{'Δ ' if paired else ''}{MEASURES[key]}{' vs delta_Down 0, same seed' if paired else ''}", fontsize=10
        )
        axis.legend()
    figure.suptitle(f"SHAPO-TRPO-Lag, Walker2d-v4, {args.steps} steps: mean over seeds, 95 % bootstrap interval")
    figure.tight_layout()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figure.savefig(out / "sensitivity.png", dpi=120)
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {out / 'sensitivity.png'} and {out / 'results.md'}")


if __name__ == "__main__":
    main(tyro.cli(Args))
