"""Table of docs/release_falls.sh: falls of TRPO-PID-Lag on Walker2d-v4 in the first four epochs
(80 000 steps), the authors' release against trpo_lag.py, per seed and as the mean over seeds with a
95 % percentile-bootstrap interval (plot.py), the difference of the means with its own interval, and
Welch's t-test (scipy).

    python docs/release_falls/compare.py --out-dir sweeps/release_falls

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


def release_falls(path: Path) -> float:
    """Falls in the first EPOCHS epochs of one release run, from its episode tally."""
    with open(path) as file:
        return float(sum(int(row["terminated"]) for row in csv.DictReader(file) if int(row["epoch"]) <= EPOCHS))


def main(out_dir: str = "sweeps/release_falls") -> None:
    """Print the Markdown table for the runs under out_dir."""
    out = Path(out_dir)
    release = {int(p.stem.removeprefix("release_seed")): release_falls(p) for p in out.glob("release_seed*.csv")}
    ours = {}
    for path in plot.find_run_dirs(out / "runs"):
        run = plot.load_run(path, 20)
        if run is not None and run.epoch_steps[-1] >= EARLY_STEPS:  # runs still under way are left out
            ours[run.seed] = float(np.interp(EARLY_STEPS, run.epoch_steps, run.cumulative_cost))
    seeds = sorted(set(release) | set(ours))
    print("| seed | " + " | ".join(str(seed) for seed in seeds) + " | mean [95 % CI] |")
    print("|-" * (len(seeds) + 2) + "|")
    for label, falls in (("release (1bb7704)", release), ("trpo_lag.py", ours)):
        cells = [f"{falls[seed]:.0f}" if seed in falls else "" for seed in seeds]
        print(f"| {label} | " + " | ".join(cells) + f" | {plot.format_interval(*plot.mean_interval(list(falls.values())))} |")
    difference = plot.format_interval(*plot.difference_interval(list(ours.values()), list(release.values())), signed=True)
    test = ttest_ind(list(ours.values()), list(release.values()), equal_var=False)
    print(f"\nFalls in epochs 1-{EPOCHS} ({EARLY_STEPS} steps), {len(ours)} seeds of ours and {len(release)} of the release. "
          f"Ours minus the release: {difference} (bootstrap, unpaired); Welch's t-test p = {test.pvalue:.2f}.")


if __name__ == "__main__":
    tyro.cli(main)
