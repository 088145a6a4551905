"""Table and figure of the δ_Down dose-response study that experiments/dose_response/run.sh runs: per radius, the
final return, the falls during training and the final share of falls of SHAPO-TRPO-Lag on Walker2d-v4 (a fall
costs 1 and ends the episode, so the cumulative training cost counts the falls and the mean episodic cost of the
last episodes is the share of them that ended in a fall), each against δ_Down = 0 paired by seed, and the
perturbation's own diagnostics averaged over the training epochs. Means over seeds with plot.py's 95 % bootstrap
interval over seeds.

    python experiments/dose_response/dose_response.py --runs-dir sweeps/dose_response/runs \
        --out-dir experiments/dose_response

Runs are recognised by `delta_down=<d>` in their exp-name, as sweep.py --grid names them; runs that have not
reached --steps are left out and listed. plot.py --baseline delta-down=0 gives the probability of improvement.
"""

import sys
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tyro  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import plot  # noqa: E402
import sweep  # noqa: E402

# plot.final_values' measure -> its name in the table and figure
MEASURES = {"return": "final return", "cumulative_cost": "falls during training", "cost": "final share of falls"}
# diagnostic tag -> its name in the table: each run's mean over its epochs
DIAGNOSTICS = {
    "shapo/w_mean_negative_adv": "mean w, A < 0",
    "shapo/w_mean_positive_adv": "mean w, A > 0",
    "shapo/cos_sim": "cos(g, g~)",
    "shapo/kl": "KL reached",
}


@dataclass
class Args:
    runs_dir: str = "sweeps/dose_response/runs"
    """folder holding the runs of experiments/dose_response/run.sh"""
    out_dir: str = "experiments/dose_response"
    """where dose_response.png and results.md go"""
    last_episodes: int = 20
    """final return and share of falls: mean over each run's last this many episodes"""
    steps: int = 1_000_000
    """read every run up to this step; runs that have not reached it are left out"""


def load(args: Args) -> tuple:
    """({delta_down: [runs cut at args.steps, each with .final and .diagnostics]}, names of unfinished runs)."""
    groups, unfinished = {}, []
    for path in plot.find_run_dirs(Path(args.runs_dir)):
        settings = sweep.split_exp_name(plot.RUN_NAME.match(path.name)["exp_name"])[1]
        run = plot.load_run(path, args.last_episodes) if "delta-down" in settings else None
        if run is None:
            continue
        if run.epoch_steps[-1] < args.steps:
            unfinished.append(f"{path.name} ({run.epoch_steps[-1]} steps)")
            continue
        episodes, epochs = run.episode_steps <= args.steps, run.epoch_steps <= args.steps
        run.episode_steps = run.episode_steps[episodes]
        run.episode_return = run.episode_return[episodes]
        run.episode_cost = run.episode_cost[episodes]
        run.epoch_steps = run.epoch_steps[epochs]
        run.cumulative_cost = run.cumulative_cost[epochs]
        run.final = plot.final_values(run, args.last_episodes)
        run.diagnostics = training_means(path, args.steps)
        groups.setdefault(float(settings["delta-down"]), []).append(run)
    return groups, unfinished


def training_means(path: Path, steps: int) -> dict:
    """{diagnostic tag: the mean of its per-epoch values up to `steps`} for the tags the run logged."""
    events = EventAccumulator(str(path), size_guidance={"scalars": 0})
    events.Reload()
    logged = set(events.Tags()["scalars"])
    means = {}
    for tag in DIAGNOSTICS:
        values = [event.value for event in events.Scalars(tag) if event.step <= steps] if tag in logged else []
        if values:
            means[tag] = float(np.mean(values))
    return means


def paired(runs: list, base: dict, key: str) -> list:
    """Per seed that δ_Down = 0 also ran: this run's final value minus the base's."""
    return [run.final[key] - base[run.seed].final[key] for run in runs if run.seed in base]


def main(args: Args) -> None:
    groups, unfinished = load(args)
    if 0.0 not in groups or len(groups) < 2:
        sys.exit(f"dose_response.py: error: need finished runs at delta_down=0 and another radius in {args.runs_dir}")
    base = {run.seed: run for run in groups[0.0]}
    deltas = sorted(groups)
    lines = [
        f"SHAPO-TRPO-Lag on Walker2d-v4 (PID multiplier, cost limit 10), {args.steps} steps per run. Mean over "
        "seeds [95 % percentile-bootstrap interval over seeds, plot.py]; final values over each run's last "
        f"{args.last_episodes} episodes; Δ: the per-seed difference to δ_Down = 0 (same seed), its mean and interval "
        "(* the interval excludes 0).",
        "",
        "| δ_Down | seeds | "
        + " | ".join(MEASURES.values())
        + " | "
        + " | ".join(f"Δ {name}" for name in MEASURES.values())
        + " |",
        "|-" * (2 + 2 * len(MEASURES)) + "|",
    ]
    points = {key: [] for key in MEASURES}  # (delta, mean, interval) per measure, for the figure
    for delta in deltas:
        runs = groups[delta]
        cells = []
        for key in MEASURES:
            point, interval = plot.mean_interval([run.final[key] for run in runs])
            points[key].append((delta, point, interval))
            cells.append(plot.format_interval(point, interval))
        for key in MEASURES:
            differences = paired(runs, base, key) if delta else []
            cells.append(plot.format_interval(*plot.mean_interval(differences), signed=True) if differences else "")
        seeds = ", ".join(str(seed) for seed in sorted(run.seed for run in runs))
        lines.append(f"| {delta:g} | {seeds} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "The perturbation's diagnostics (spec §5): each run's mean over its training epochs, then the mean over seeds "
        "[95 % bootstrap interval]. w = pi_theta0+epsilon(a|s) / pi_theta0(a|s); KL reached: mean KL(pi_theta0 || "
        "pi_theta0+epsilon) after the backtracking.",
        "",
        "| δ_Down | " + " | ".join(DIAGNOSTICS.values()) + " |",
        "|-" * (1 + len(DIAGNOSTICS)) + "|",
    ]
    for delta in deltas:
        cells = []
        for tag in DIAGNOSTICS:
            values = [run.diagnostics[tag] for run in groups[delta] if tag in run.diagnostics]
            cells.append(format_small(*plot.mean_interval(values)) if values else "")
        lines.append(f"| {delta:g} | " + " | ".join(cells) + " |")
    if unfinished:
        lines += ["", f"Left out, short of {args.steps} steps: " + ", ".join(unfinished) + "."]
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    draw(points, args.steps, out / "dose_response.png")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {out / 'dose_response.png'} and {out / 'results.md'}")


def format_small(point: float, interval) -> str:
    """Like plot.format_interval, with the significant digits that values near 0 or 1 need."""
    if interval is None:
        return f"{point:.6g} [n/a]"
    return f"{point:.6g} [{interval[0]:.6g}, {interval[1]:.6g}]"


def draw(points: dict, steps: int, path: Path) -> None:
    """One panel per measure against δ_Down on a log axis; δ_Down = 0 as a horizontal line with its band."""
    figure, axes = plt.subplots(1, len(MEASURES), figsize=(5 * len(MEASURES), 4))
    for axis, (key, name) in zip(axes, MEASURES.items()):
        radii = [(delta, point, interval) for delta, point, interval in points[key] if delta > 0]
        x = [delta for delta, _, _ in radii]
        y = [point for _, point, _ in radii]
        low = [interval[0] if interval else point for _, point, interval in radii]
        high = [interval[1] if interval else point for _, point, interval in radii]
        axis.errorbar(x, y, yerr=[np.subtract(y, low), np.subtract(high, y)], marker="o", capsize=4, label="SHAPO")
        (_, point0, interval0) = points[key][0]
        axis.axhline(point0, color="black", linestyle="--", label="δ_Down = 0 (TRPO-Lag)")
        if interval0:
            axis.axhspan(*interval0, color="black", alpha=0.1)
        axis.set_xscale("log")
        axis.set_xlabel("δ_Down")
        axis.set_title(name)
        axis.legend(fontsize=8)
    figure.suptitle(f"SHAPO-TRPO-Lag, Walker2d-v4, {steps} steps: mean over seeds, 95 % bootstrap interval")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


if __name__ == "__main__":
    main(tyro.cli(Args))
