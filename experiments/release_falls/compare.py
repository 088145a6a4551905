"""Table of experiments/release_falls/run.sh: falls of TRPO-PID-Lag on Walker2d-v4 in the first four epochs
(80 000 steps), the authors' release against trpo_lag.py, per seed and per epoch, and as the mean over
seeds with a 95 % percentile-bootstrap interval (plot.py), the difference of the means with its own
interval, and Welch's t-test (scipy).

    python experiments/release_falls/compare.py --out-dir sweeps/release_falls

The release's falls come from the episode tally of run_release.py (<out-dir>/release_seed<s>.csv: one row
per finished episode, `terminated` 1 for a fall); ours from each run's cumulative cost in TensorBoard.
"""

import csv
import sys
from pathlib import Path

import numpy as np
import tyro
from scipy.stats import ttest_ind

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import plot  # noqa: E402

EARLY_STEPS, EPOCHS = 80_000, 4


def release_falls(path: Path) -> np.ndarray:
    """Falls in each of the first EPOCHS epochs of one release run [EPOCHS], from its episode tally."""
    with open(path) as file:
        epochs = [int(row["epoch"]) for row in csv.DictReader(file) if int(row["terminated"])]
    return np.bincount(epochs, minlength=EPOCHS + 1)[1 : EPOCHS + 1].astype(float)


def our_falls(run: plot.Run) -> np.ndarray:
    """Falls in each of the first EPOCHS epochs of one of our runs [EPOCHS], from its cumulative cost."""
    return np.diff(
        np.interp(np.arange(EPOCHS + 1) * EARLY_STEPS / EPOCHS, run.epoch_steps, run.cumulative_cost, left=0.0)
    )


def main(out_dir: str = "sweeps/release_falls") -> None:
    """Print the Markdown tables for the runs under out_dir: the release's, and each of our experiments
    (trpo_lag_pid: our script as it is; trpo_lag_release_init: from the release's initial weights)."""
    out = Path(out_dir)
    tallies = {p.stem.removeprefix("release_seed"): p for p in out.glob("release_seed*.csv")}  # not *.csv.part*
    arms = {"release (1bb7704)": {int(seed): release_falls(path) for seed, path in tallies.items() if seed.isdigit()}}
    for path in plot.find_run_dirs(out / "runs"):
        run = plot.load_run(path, 20)
        if run is not None and run.epoch_steps[-1] >= EARLY_STEPS:  # runs still under way are left out
            arms.setdefault(run.algorithm, {})[run.seed] = our_falls(run)
    print("| seed | " + " | ".join(f"{arm}: epochs 1-{EPOCHS} (per epoch)" for arm in arms) + " |")
    print("|-" * (len(arms) + 1) + "|")
    for seed in sorted(set().union(*arms.values())):
        cells = [
            f"{f[seed].sum():.0f} ({' / '.join(f'{x:.0f}' for x in f[seed])})" if seed in f else ""
            for f in arms.values()
        ]
        print(f"| {seed} | " + " | ".join(cells) + " |")
    release = arms.pop("release (1bb7704)")
    for arm, ours in arms.items():
        print(
            f"\n{arm} ({len(ours)} seeds) against the release ({len(release)} seeds): mean over seeds [95 % CI], "
            "difference of the means [95 % CI, bootstrap, unpaired], Welch's t-test, and over the seeds both ran, "
            "the mean paired difference:\n"
        )
        print(f"| falls in | release | {arm} | difference | Welch p | paired difference |\n|-|-|-|-|-|-|")
        shared = sorted(set(release) & set(ours))
        for label, columns in [(f"epochs 1-{EPOCHS}", slice(None))] + [(f"epoch {e + 1}", e) for e in range(EPOCHS)]:
            r, o = ([np.sum(x[columns]) for x in falls.values()] for falls in (release, ours))
            cells = [plot.format_interval(*plot.mean_interval(x)) for x in (r, o)]
            cells.append(plot.format_interval(*plot.difference_interval(o, r), signed=True))
            paired = np.mean([np.sum(ours[seed][columns]) - np.sum(release[seed][columns]) for seed in shared])
            print(
                f"| {label} | "
                + " | ".join(cells)
                + f" | {ttest_ind(o, r, equal_var=False).pvalue:.2f} | {paired:+.1f} |"
            )


if __name__ == "__main__":
    tyro.cli(main)
