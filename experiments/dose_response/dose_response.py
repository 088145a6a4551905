"""Table and figure of the δ_Down dose-response study that experiments/dose_response/run.sh runs: per radius, the
final return, the falls during training and the final share of falls of SHAPO-TRPO-Lag on Walker2d-v4 (a fall
costs 1 and ends the episode, so the cumulative training cost counts the falls and the mean episodic cost of the
last episodes is the share of them that ended in a fall), each against δ_Down = 0 paired by seed, their IQM and
probability of improvement over δ_Down = 0, and the perturbation's own diagnostics averaged over the training
epochs. Means over seeds with plot.py's 95 % bootstrap interval over seeds.

    python experiments/dose_response/dose_response.py --runs-dir sweeps/dose_response/runs \
        --out-dir experiments/dose_response --rows experiments/dose_response/runs.csv

Runs are recognised by `delta_down=<d>` in their exp-name, as sweep.py --grid names them; runs that have not
reached --steps are left out and listed. Each finished run becomes a row of <out-dir>/runs.csv, which is small
enough to commit: with --rows, the rows of an earlier runs.csv join those of the run folders (a run folder
replaces the row of its radius and seed), so that seeds run in different sessions make one table.
"""

import csv
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

# column of runs.csv (with spaces: its name in the table and figure) -> the key of plot.final_values
MEASURES = {"final_return": "return", "falls_during_training": "cumulative_cost", "final_share_of_falls": "cost"}
# diagnostic tag (a column of runs.csv) -> its name in the table: each run's mean over its epochs
DIAGNOSTICS = {
    "shapo/w_mean_negative_adv": "mean w, A < 0",
    "shapo/w_mean_positive_adv": "mean w, A > 0",
    "shapo/cos_sim": "cos(g, g~)",
    "shapo/kl": "KL reached",
}
BETTER = {"final_return": 1.0, "falls_during_training": -1.0, "final_share_of_falls": -1.0}  # sign of better
COLUMNS = ("delta_down", "seed", *MEASURES, *DIAGNOSTICS, "run")  # of runs.csv; an empty cell: not logged


@dataclass
class Args:
    runs_dir: str = "sweeps/dose_response/runs"
    """folder holding the runs of experiments/dose_response/run.sh"""
    out_dir: str = "experiments/dose_response"
    """where dose_response.png, results.md and runs.csv go"""
    rows: str = ""
    """an earlier runs.csv of this script: its rows join those of the run folders (empty: none)"""
    last_episodes: int = 20
    """final return and share of falls: mean over each run's last this many episodes"""
    steps: int = 1_000_000
    """read every run up to this step; runs that have not reached it are left out"""


def load(args: Args) -> tuple:
    """(rows of runs.csv, one per run folder that reached args.steps, its values cut there; names of the others)."""
    rows, unfinished = [], []
    for path in plot.find_run_dirs(Path(args.runs_dir)):
        settings = sweep.split_exp_name(plot.RUN_NAME.match(path.name)["exp_name"])[1]
        run = plot.load_run(path, args.last_episodes) if "delta-down" in settings else None
        if run is None:
            continue
        if run.epoch_steps[-1] < args.steps:
            unfinished.append(f"{path.name} ({run.epoch_steps[-1]} steps)")
            continue
        episodes = run.episode_steps <= args.steps
        epochs = run.epoch_steps <= args.steps
        run.episode_steps = run.episode_steps[episodes]
        run.episode_return = run.episode_return[episodes]
        run.episode_cost = run.episode_cost[episodes]
        run.epoch_steps = run.epoch_steps[epochs]
        run.cumulative_cost = run.cumulative_cost[epochs]
        final = plot.final_values(run, args.last_episodes)
        row = {"delta_down": float(settings["delta-down"]), "seed": run.seed, "run": path.name}
        row.update({column: final[key] for column, key in MEASURES.items()})
        row.update(training_means(path, args.steps))
        rows.append(row)
    return rows, unfinished


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


def read_rows(path: str) -> list:
    """The rows of a runs.csv (as write_rows writes it): numbers as floats, the seed an int, empty cells left out."""
    with open(path, newline="") as file:
        rows = list(csv.DictReader(file))
    for row in rows:
        for column in list(row):
            if row[column] == "":
                del row[column]
            elif column != "run":
                row[column] = int(row[column]) if column == "seed" else float(row[column])
    return rows


def write_rows(path: Path, rows: list) -> None:
    """rows as a CSV of COLUMNS at path; a value a row lacks is an empty cell, a key not in COLUMNS is left out."""
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=COLUMNS, restval="", extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def merge(earlier: list, rows: list) -> list:
    """earlier's rows and rows, one per (δ_Down, seed): a row of `rows` replaces an earlier one. Sorted."""
    merged = {(row["delta_down"], row["seed"]): row for row in [*earlier, *rows]}
    return [merged[key] for key in sorted(merged)]


def main(args: Args) -> None:
    rows, unfinished = load(args)
    rows = merge(read_rows(args.rows) if args.rows else [], rows)
    groups = {}
    for row in rows:
        groups.setdefault(row["delta_down"], []).append(row)
    if 0.0 not in groups or len(groups) < 2:
        sys.exit(f"dose_response.py: error: need finished runs at delta_down=0 and another radius in {args.runs_dir}")
    base = {row["seed"]: row for row in groups[0.0]}
    deltas = sorted(groups)
    names = [column.replace("_", " ") for column in MEASURES]
    lines = [
        f"SHAPO-TRPO-Lag on Walker2d-v4 (PID multiplier, cost limit 10), {args.steps} steps per run. Mean over "
        "seeds [95 % percentile-bootstrap interval over seeds, plot.py]; final values over each run's last "
        f"{args.last_episodes} episodes; Δ: the per-seed difference to δ_Down = 0 (same seed), its mean and interval "
        "(* the interval excludes 0); better: the seeds on which it beat δ_Down = 0 (higher return, fewer falls, lower "
        "share; a tie is not better).",
        "",
        "| δ_Down | seeds | " + " | ".join(names) + " | " + " | ".join(f"Δ {name}" for name in names) + " | better |",
        "|-" * (3 + 2 * len(MEASURES)) + "|",
    ]
    points = {column: [] for column in MEASURES}  # (delta, mean, interval) per measure, for the figure
    for delta in deltas:
        cells = []
        for column in MEASURES:
            point, interval = plot.mean_interval([row[column] for row in groups[delta]])
            points[column].append((delta, point, interval))
            cells.append(plot.format_interval(point, interval))
        wins = []
        for column in MEASURES:
            differences = [row[column] - base[row["seed"]][column] for row in groups[delta] if row["seed"] in base]
            cells.append(
                plot.format_interval(*plot.mean_interval(differences), signed=True) if delta and differences else ""
            )
            wins.append(f"{sum(BETTER[column] * difference > 0 for difference in differences)}/{len(differences)}")
        cells.append(", ".join(wins) if delta else "")
        lines.append(f"| {delta:g} | {seeds(groups[delta])} | " + " | ".join(cells) + " |")
    lines += ["", *improvement_table(groups), ""]
    lines += [
        "The perturbation's diagnostics (spec §5): each run's mean over its training epochs, then the mean over seeds "
        "[95 % bootstrap interval]. w = pi_theta0+epsilon(a|s) / pi_theta0(a|s); KL reached: mean KL(pi_theta0 || "
        "pi_theta0+epsilon) after the backtracking.",
        "",
        "| δ_Down | seeds | " + " | ".join(DIAGNOSTICS.values()) + " |",
        "|-" * (2 + len(DIAGNOSTICS)) + "|",
    ]
    for delta in deltas:
        logged = [row for row in groups[delta] if any(tag in row for tag in DIAGNOSTICS)]
        cells = []
        for tag in DIAGNOSTICS:
            values = [row[tag] for row in logged if tag in row]
            cells.append(format_small(*plot.mean_interval(values)) if values else "")
        lines.append(f"| {delta:g} | {seeds(logged)} | " + " | ".join(cells) + " |")
    if unfinished:
        lines += ["", f"Left out, short of {args.steps} steps: " + ", ".join(unfinished) + "."]
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    draw(points, args.steps, out / "dose_response.png")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    write_rows(out / "runs.csv", rows)
    print("\n".join(lines))
    print(f"wrote {out / 'dose_response.png'}, {out / 'results.md'} and {out / 'runs.csv'}")


def seeds(rows: list) -> str:
    return ", ".join(str(seed) for seed in sorted(row["seed"] for row in rows))


def improvement_table(groups: dict) -> list:
    """Per radius the IQM of the final return and of the falls, and P(X > δ_Down = 0) for each (fewer falls is
    better), with plot.py's stratified-bootstrap intervals (one task: its runs resampled)."""
    signs = {column: BETTER[column] for column in ("final_return", "falls_during_training")}
    columns = [
        "δ_Down",
        "seeds",
        "IQM final return ↑",
        "IQM falls ↓",
        "P(return > δ_Down 0's) ↑",
        "P(falls < δ_Down 0's) ↑",
    ]
    lines = [plot.stratified_caption(pooled=False), "", "| " + " | ".join(columns) + " |", "|-" * len(columns) + "|"]
    base = {column: np.array([[row[column]] for row in groups[0.0]]) for column in signs}
    for delta, rows in sorted(groups.items()):
        values = {column: np.array([[row[column]] for row in rows]) for column in signs}
        cells = [plot.statistic_cell([values[column]], plot.iqm) for column in signs]
        for column, sign in signs.items():
            samples = [sign * values[column], sign * base[column]]
            cells.append(plot.statistic_cell(samples, plot.probability_of_improvement) if delta else "")
        lines.append(f"| {delta:g} | {seeds(rows)} | " + " | ".join(cells) + " |")
    return lines


def format_small(point: float, interval) -> str:
    """Like plot.format_interval, with the significant digits that values near 0 or 1 need."""
    if interval is None:
        return f"{point:.6g} [n/a]"
    return f"{point:.6g} [{interval[0]:.6g}, {interval[1]:.6g}]"


def draw(points: dict, steps: int, path: Path) -> None:
    """One panel per measure against δ_Down on a log axis; δ_Down = 0 as a horizontal line with its band."""
    figure, axes = plt.subplots(1, len(MEASURES), figsize=(5 * len(MEASURES), 4))
    for axis, key in zip(axes, MEASURES):
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
        axis.set_title(key.replace("_", " "))
        axis.legend(fontsize=8)
    figure.suptitle(f"SHAPO-TRPO-Lag, Walker2d-v4, {steps} steps: mean over seeds, 95 % bootstrap interval")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


if __name__ == "__main__":
    main(tyro.cli(Args))
