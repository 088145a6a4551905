"""Plot: learning curves, safety during training and a return-cost Pareto view of finished runs.

    python plot.py --runs-dir runs --out-dir experiments/evidence --table experiments/evidence/results.md

Reads the TensorBoard event files of every run folder <env-id>__<exp-name>__<seed>__<unix-time>
found under --runs-dir (at any depth) with TensorBoard's EventAccumulator, groups the runs by env id
and algorithm (= exp-name) and writes one figure <out-dir>/<env-id>.png per environment:

  (a) episodic return and (b) episodic cost against environment steps, (c) cumulative training
      cost (charts/cumulative_cost, every cost paid since the start) against environment steps:
      the mean over seeds as a line, with a shaded band of +-1 std over seeds (--spread std,
      population std, ddof=0) or min-max over seeds (--spread minmax). Panel (b) also shows the
      cost limit d, read from the `cost_limit` row of each run's hyperparameters text.
  (d) final episodic return against final cumulative cost, one point per run, and each
      algorithm's Pareto frontier (runs that no other run of that algorithm beats on both:
      higher return and lower cumulative cost), drawn as a staircase.

Common step grid. Episodes end at different steps in different runs, so before averaging every
run is put on the grid of epoch ends: the steps at which charts/cumulative_cost is logged (once
per epoch), taken from the group's run with the fewest epochs. An episodic curve takes, at
each grid step g_i, the mean of the run's episodes that ended in (g_{i-1}, g_i] (g_0 = 0), i.e.
the epoch's mean, as charts/epoch_mean_return; an epoch without a finished episode carries the
previous value forward (NaN before the first episode). The cumulative cost is interpolated
linearly onto the grid (exact when the runs share --steps-per-epoch). The mean over seeds skips
NaNs.

"Final" values (table and panel (d)), one per run: final episodic return / cost = mean over the
last --last-episodes episodes of the run (all envs together, in order of the step they ended at);
cumulative training cost = the last logged charts/cumulative_cost.

Grid points. An exp-name that sweep.py --grid gave, e.g. trpo_lag_shapo-delta_down=1e-4-critic_sam_rho=0,
is split back into its head and its settings (sweep.split_exp_name): the tables then show the head in
the algorithm column and one column per grid flag (e.g. delta-down), the rows sorted by head, then by
value (numerically where the values are numbers).

Markdown tables per environment (printed, and written to --table if given):
  * per algorithm: number of seeds, environment steps (last logged epoch; a range if the seeds
    differ), and for each of the three final values its mean over seeds with a 95 % confidence
    interval over seeds;
  * per base/SHAPO pair present (the SHAPO exp-name is the base one with `_shapo` inserted after
    `lag`: ppo_lag / ppo_lag_shapo, trpo_lag_pid / trpo_lag_shapo_pid): SHAPO's mean minus the
    base's mean of each final value with its 95 % interval, marked * where the interval excludes
    0. Higher return is better (> 0 favours SHAPO), lower cost is better (< 0 favours SHAPO);
  * the same pairs paired by seed: each seed's SHAPO-minus-base difference, and their mean with its
    95 % interval (a bootstrap over the per-seed differences).
  With --baseline the pairs are instead each algorithm and its baseline: --baseline EXPNAME compares
  every other algorithm of the task with that one; --baseline FLAG=VALUE (e.g. delta-down=0) compares
  each grid point with the point of the same head and other settings where FLAG is VALUE.
  * the statistics of Agarwal et al., "Deep reinforcement learning at the edge of the statistical
    precipice" (NeurIPS 2021, sections 4.2 and 4.3), for final return and cumulative training cost:
    per algorithm the interquartile mean over seeds (IQM: rliable's aggregate_iqm,
    scipy.stats.trim_mean cutting 25 % of the runs from each end, so with fewer than 4 runs the plain
    mean), and for each pair P(algorithm > its base), the probability of improvement (Mann-Whitney
    form: the mean over all pairs of a run x of the algorithm and a run y of the base of
    1[x > y] + 0.5 * 1[x = y]; for cost "improvement" is lower, 1[x < y]).
  * across tasks (two or more environments): the same on normalised values, each task's final return
    and cumulative cost mapped to [0, 1] by min-max over all runs of that task in the table (0 the
    lowest, 1 the highest; all 0 where every run is equal), so that tasks can be pooled: the IQM over
    all runs of all tasks, and P averaged over the tasks both algorithms ran. An algorithm's runs
    there are the seeds it ran on each of its tasks (the runs form a seeds x tasks matrix).
  Their 95 % intervals are rliable's stratified bootstrap (STRATIFIED below: percentile, 2,000
  resamples, numpy RandomState(0)): runs are resampled within each task, and each algorithm's on its
  own. The bootstrap and the IQM are rliable's; P is computed here (rliable's version calls
  scipy.stats.mannwhitneyu once per task and resample, about 2.7 ms each), to the same definition.
Every interval is scipy.stats.bootstrap's percentile interval (BOOTSTRAP below: confidence level
0.95, 10,000 resamples, random_state=0, so the tables are reproducible), resampling seeds; for a
difference the two algorithms' seeds are resampled independently (unpaired) and the statistic is
the difference of the means. Percentile rather than BCa: with a handful of seeds BCa's jackknife
acceleration is unstable and it is undefined for constant samples. With fewer than 2 seeds (on
either side of a difference) the interval is "n/a"; if all seeds are equal it is the point itself.
With few seeds the percentile interval is optimistic (with 2 seeds it is about [min, max] of them).
"""

import re
import sys
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Literal, Optional, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import scipy.stats  # noqa: E402
import tyro  # noqa: E402
from rliable import library as rliable_library  # noqa: E402
from rliable import metrics as rliable_metrics  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

import sweep  # noqa: E402

RUN_NAME = re.compile(r"^(?P<env_id>.+?)__(?P<exp_name>.+)__(?P<seed>-?\d+)__(?P<time>\d+)$")
EPISODE_TAGS = {"return": "charts/episodic_return", "cost": "charts/episodic_cost"}
CUMULATIVE_COST_TAG = "charts/cumulative_cost"
HYPERPARAMETERS_TAG = "hyperparameters/text_summary"
MEASURES = ("return", "cost", "cumulative_cost")  # the keys of Run.final
Interval = Optional[Tuple[float, float]]  # (low, high) of a confidence interval; None: n/a
# settings of every confidence interval in the tables (keyword arguments of scipy.stats.bootstrap)
BOOTSTRAP = {"method": "percentile", "confidence_level": 0.95, "n_resamples": 10_000, "random_state": 0}
# settings of the stratified-bootstrap intervals of IQM and P(X > Y) (rliable's get_interval_estimates)
STRATIFIED = {"method": "percentile", "confidence_interval_size": 0.95, "reps": 2_000, "seed": 0}


@dataclass
class Args:
    runs_dir: str = "runs"
    """folder searched (recursively) for run folders <env-id>__<exp-name>__<seed>__<unix-time>"""
    out_dir: str = "plots"
    """where the figures <env-id>.png go"""
    env_ids: Tuple[str, ...] = ()
    """only these environments; empty: all found"""
    algorithms: Tuple[str, ...] = ()
    """only these algorithms, i.e. exp-names; empty: all found"""
    last_episodes: int = 10
    """'final' episodic return and cost of a run = mean over its last this many episodes"""
    spread: Literal["std", "minmax"] = "std"
    """shaded band around the mean over seeds: +-1 std (ddof=0) or min-max"""
    table: Optional[str] = None
    """also write the Markdown tables to this file"""
    baseline: Optional[str] = None
    """compare with this instead of SHAPO with its base: an exp-name (every other algorithm compared with it),
    or FLAG=VALUE of sweep.py --grid (each grid point with its twin whose FLAG is VALUE), e.g. delta-down=0"""


@dataclass
class Run:
    """The logged data of one run. Steps are global environment steps (all envs together)."""

    env_id: str
    algorithm: str
    seed: int
    path: Path
    episode_steps: np.ndarray  # (num_episodes,) step at which each episode ended
    episode_return: np.ndarray  # (num_episodes,) undiscounted episodic return
    episode_cost: np.ndarray  # (num_episodes,) undiscounted episodic cost
    epoch_steps: np.ndarray  # (num_epochs,) step at the end of each epoch
    cumulative_cost: np.ndarray  # (num_epochs,) total cost paid up to that step
    cost_limit: Optional[float] = None  # d from the hyperparameters text; None if absent
    final: Dict[str, float] = field(default_factory=dict)  # keys: return, cost, cumulative_cost


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------
def parse_cost_limit(markdown: str) -> Optional[float]:
    """The value of the `|cost_limit|<value>|` row of the scripts' hyperparameters table."""
    match = re.search(r"^\|cost_limit\|([^|]*)\|", markdown, flags=re.MULTILINE)
    try:
        return float(match.group(1)) if match else None
    except ValueError:
        return None


def find_run_dirs(runs_dir: Path) -> List[Path]:
    """Folders under runs_dir (any depth, runs_dir itself included) named like a run and holding event files."""
    candidates = [runs_dir, *runs_dir.rglob("*")]
    return sorted(
        path
        for path in candidates
        if path.is_dir() and RUN_NAME.match(path.name) and any(path.glob("events.out.tfevents.*"))
    )


def load_run(path: Path, last_episodes: int) -> Optional[Run]:
    """Read one run folder; None (with a warning) if it lacks episodes or per-epoch cumulative cost."""
    name = RUN_NAME.match(path.name)
    # size_guidance 0 keeps every event; the default keeps a random sample of 10,000 per tag
    events = EventAccumulator(str(path), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    tags = events.Tags()
    missing = [tag for tag in (*EPISODE_TAGS.values(), CUMULATIVE_COST_TAG) if tag not in tags["scalars"]]
    if missing:
        print(f"plot.py: warning: skipping {path} (no {', '.join(missing)})", file=sys.stderr)
        return None

    def scalars(tag: str) -> Tuple[np.ndarray, np.ndarray]:
        logged = events.Scalars(tag)
        return np.array([e.step for e in logged], dtype=np.int64), np.array([e.value for e in logged])

    episode_steps, episode_return = scalars(EPISODE_TAGS["return"])
    cost_steps, episode_cost = scalars(EPISODE_TAGS["cost"])
    if not np.array_equal(episode_steps, cost_steps):
        print(f"plot.py: warning: skipping {path} (episodic return and cost do not pair up)", file=sys.stderr)
        return None
    epoch_steps, cumulative_cost = scalars(CUMULATIVE_COST_TAG)
    cost_limit = None
    if HYPERPARAMETERS_TAG in tags["tensors"]:
        text = events.Tensors(HYPERPARAMETERS_TAG)[0].tensor_proto.string_val[0].decode()
        cost_limit = parse_cost_limit(text)
    run = Run(
        env_id=name["env_id"],
        algorithm=name["exp_name"],
        seed=int(name["seed"]),
        path=path,
        episode_steps=episode_steps,
        episode_return=episode_return,
        episode_cost=episode_cost,
        epoch_steps=epoch_steps,
        cumulative_cost=cumulative_cost,
        cost_limit=cost_limit,
    )
    run.final = final_values(run, last_episodes)
    return run


def final_values(run: Run, last_episodes: int) -> Dict[str, float]:
    """Mean episodic return and cost over the last `last_episodes` episodes, last cumulative cost."""
    order = np.argsort(run.episode_steps, kind="stable")[-last_episodes:]
    nan = float("nan")
    return {
        "return": float(run.episode_return[order].mean()) if len(order) else nan,
        "cost": float(run.episode_cost[order].mean()) if len(order) else nan,
        "cumulative_cost": float(run.cumulative_cost[-1]) if len(run.cumulative_cost) else nan,
    }


# ---------------------------------------------------------------------------------------------
# Common step grid, statistics, Pareto frontier
# ---------------------------------------------------------------------------------------------
def bin_to_grid(steps: np.ndarray, values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Episodic values (steps, values: (n,)) on the grid (m,) of epoch-end steps -> (m,).

    Entry i is the mean of the values whose step lies in (grid[i-1], grid[i]] (grid[-1] := 0);
    a bin without values takes the previous entry (NaN before the first non-empty bin).
    """
    bins = np.searchsorted(grid, steps, side="left")  # bin i holds grid[i-1] < step <= grid[i]
    keep = bins < len(grid)  # episodes after the last grid step are dropped
    sums = np.bincount(bins[keep], weights=values[keep], minlength=len(grid))
    counts = np.bincount(bins[keep], minlength=len(grid))
    out = np.full(len(grid), np.nan)
    last = np.nan
    for i in range(len(grid)):
        last = sums[i] / counts[i] if counts[i] else last
        out[i] = last
    return out


def grid_curves(runs: Sequence[Run]) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
    """Put a group's runs on one grid: returns the grid (m,) and for each of return, cost and
    cumulative_cost an array (num_runs, m)."""
    grid = min((run.epoch_steps for run in runs), key=len)
    curves = {
        "return": np.stack([bin_to_grid(r.episode_steps, r.episode_return, grid) for r in runs]),
        "cost": np.stack([bin_to_grid(r.episode_steps, r.episode_cost, grid) for r in runs]),
        "cumulative_cost": np.stack(
            [np.interp(grid, np.r_[0, r.epoch_steps], np.r_[0.0, r.cumulative_cost]) for r in runs]
        ),
    }
    return grid, curves


def mean_and_band(curves: np.ndarray, spread: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(num_runs, m) -> mean, lower, upper (m,) over runs, skipping NaNs (all-NaN columns stay NaN)."""
    out = np.full((3, curves.shape[1]), np.nan)
    ok = ~np.all(np.isnan(curves), axis=0)
    c = curves[:, ok]
    mean = np.nanmean(c, axis=0)
    if spread == "std":
        std = np.nanstd(c, axis=0)
        out[:, ok] = mean, mean - std, mean + std
    else:
        out[:, ok] = mean, np.nanmin(c, axis=0), np.nanmax(c, axis=0)
    return out[0], out[1], out[2]


def difference_of_means(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def bootstrap_interval(samples: Sequence[Sequence[float]], statistic) -> Tuple[float, Interval]:
    """statistic(*samples) and its bootstrap confidence interval (BOOTSTRAP settings; every sample is
    resampled on its own, i.e. unpaired). The interval is None when a sample has fewer than 2 values
    and the point itself when every sample is constant."""
    samples = [np.asarray(sample, dtype=float) for sample in samples]
    point = float(statistic(*samples))
    if min(len(sample) for sample in samples) < 2:
        return point, None
    if all(np.all(sample == sample[0]) for sample in samples):
        return point, (point, point)
    ci = scipy.stats.bootstrap(samples, statistic, vectorized=True, paired=False, **BOOTSTRAP).confidence_interval
    return point, (float(ci.low), float(ci.high))


def mean_interval(values: Sequence[float]) -> Tuple[float, Interval]:
    """Mean over seeds and its bootstrap confidence interval."""
    return bootstrap_interval([values], np.mean)


def difference_interval(shapo: Sequence[float], base: Sequence[float]) -> Tuple[float, Interval]:
    """mean(shapo) - mean(base) over seeds and its bootstrap interval (two independent samples)."""
    return bootstrap_interval([shapo, base], difference_of_means)


def paired_differences(shapo: Sequence[Run], base: Sequence[Run], key: str) -> Dict[int, float]:
    """{seed: SHAPO's final value minus the base's} for every seed both algorithms ran (a seed run twice counts
    its last run found)."""
    base_by_seed = {run.seed: run.final[key] for run in base}
    shapo_by_seed = {run.seed: run.final[key] for run in shapo}
    return {seed: shapo_by_seed[seed] - base_by_seed[seed] for seed in sorted(shapo_by_seed) if seed in base_by_seed}


def shapo_pairs(algorithms: Sequence[str]) -> List[Tuple[str, str]]:
    """(base, shapo) exp-name pairs present in algorithms: the SHAPO name is the base name with
    `_shapo` inserted after `lag` (ppo_lag / ppo_lag_shapo, trpo_lag_pid / trpo_lag_shapo_pid)."""
    names = set(algorithms)
    bases = {name: name.replace("lag_shapo", "lag", 1) for name in names if "lag_shapo" in name}
    return sorted((base, shapo) for shapo, base in bases.items() if base in names)


def baseline_pairs(algorithms: Sequence[str], baseline: str) -> List[Tuple[str, str]]:
    """(baseline, algorithm) pairs of --baseline, sorted like the table's rows. If `baseline` is one of the
    exp-names, every other algorithm is paired with it; else it is FLAG=VALUE (dashes or underscores in
    FLAG), and each grid point whose FLAG has another value is paired with its twin: the exp-name with the
    same head and other settings and FLAG=VALUE (sweep.py --grid names), where that twin is present."""
    names = set(algorithms)
    if baseline in names:
        return sorted(((baseline, name) for name in names if name != baseline), key=lambda pair: row_key(pair[1]))
    flag, _, value = baseline.partition("=")
    flag = flag.replace("_", "-")
    pairs = []
    for name in names:
        head, settings = sweep.split_exp_name(name)
        twin = sweep.join_exp_name(head, {**settings, flag: value})
        if settings.get(flag, value) != value and twin in names:
            pairs.append((twin, name))
    return sorted(pairs, key=lambda pair: row_key(pair[1]))


def row_key(algorithm: str) -> tuple:
    """Sort key of an exp-name: its head, then its grid values, numbers by value and before words."""
    head, settings = sweep.split_exp_name(algorithm)
    values = []
    for value in settings.values():
        try:
            values.append((0, float(value), ""))
        except ValueError:
            values.append((1, 0.0, value))
    return head, values


def grid_flags(algorithms: Sequence[str]) -> List[str]:
    """The grid flags (with dashes) found in the exp-names, in order of first appearance."""
    flags: Dict[str, None] = {}
    for name in sorted(algorithms, key=row_key):
        flags.update(dict.fromkeys(sweep.split_exp_name(name)[1]))
    return list(flags)


def label_cells(algorithm: str, flags: Sequence[str]) -> List[str]:
    """The table's cells naming an algorithm: the exp-name if there are no grid flags, else its head and
    its value of each flag ('' where it has none)."""
    if not flags:
        return [algorithm]
    head, settings = sweep.split_exp_name(algorithm)
    return [head, *(settings.get(flag, "") for flag in flags)]


def iqm(scores: np.ndarray) -> float:
    """Interquartile mean of a (runs, tasks) array over all its entries: rliable's aggregate_iqm, i.e.
    scipy.stats.trim_mean with 25 % cut from each end (Agarwal et al. 2021, section 4.2). Raises
    ValueError on an empty array."""
    if scores.size == 0:
        raise ValueError("the IQM of no runs is undefined")
    return float(rliable_metrics.aggregate_iqm(scores))


def probability_of_improvement(x: np.ndarray, y: np.ndarray) -> float:
    """P(X > Y) of Agarwal et al. 2021, section 4.3: x (runs_x, tasks) and y (runs_y, tasks) on the same
    tasks; per task the mean over all (run of X, run of Y) pairs of 1[x > y] + 0.5 * 1[x = y] (the
    Mann-Whitney U statistic over runs_x * runs_y), then the mean over tasks. In [0, 1]; 0.5 means no
    difference in rank. Higher values are better: pass negated values for a cost."""
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or not (x.size and y.size):
        raise ValueError(f"P(X > Y) needs runs x tasks arrays on the same tasks, got {x.shape} and {y.shape}")
    wins = (x[:, None, :] > y[None, :, :]) + 0.5 * (x[:, None, :] == y[None, :, :])  # (runs_x, runs_y, tasks)
    return float(wins.mean(axis=(0, 1)).mean())


def stratified_interval(samples: Sequence[np.ndarray], statistic) -> Tuple[float, Interval]:
    """statistic(*samples) of (runs, tasks) arrays and its stratified-bootstrap confidence interval
    (rliable's get_interval_estimates with the STRATIFIED settings: each array's runs resampled with
    replacement within each task, each array on its own; Agarwal et al. 2021, section 4.1). The interval
    is None when an array has fewer than 2 runs and the point itself when every array is constant."""
    point = statistic(*samples)
    if min(len(sample) for sample in samples) < 2:
        return point, None
    if all(np.all(sample == sample.flat[0]) for sample in samples):
        return point, (point, point)
    settings = {key: value for key, value in STRATIFIED.items() if key != "seed"}
    with warnings.catch_warnings():  # arch deprecates the RandomState that rliable hands it
        warnings.simplefilter("ignore", FutureWarning)
        _, intervals = rliable_library.get_interval_estimates(
            {"x": list(samples) if len(samples) > 1 else samples[0]},
            lambda *arrays: np.array([statistic(*arrays)]),
            random_state=np.random.RandomState(STRATIFIED["seed"]),
            **settings,
        )
    return point, (float(intervals["x"][0, 0]), float(intervals["x"][1, 0]))


def score_matrix(by_task: Dict[str, Dict[int, float]], tasks: Sequence[str]) -> np.ndarray:
    """{task: {seed: value}} -> (seeds, tasks) array of the seeds present on every one of `tasks`, by seed."""
    seeds = sorted(set.intersection(*(set(by_task[task]) for task in tasks)))
    return np.array([[by_task[task][seed] for task in tasks] for seed in seeds]).reshape(len(seeds), len(tasks))


def statistics_table(
    values: Dict[str, Dict[str, Dict[str, Dict[int, float]]]], pairs: List[Tuple[str, str]], caption: str, pooled: bool
) -> List[str]:
    """The IQM and P(X > base) table: values[measure][algorithm][task][seed] for the measures return and
    cumulative_cost; pairs (base, algorithm). pooled: across tasks (a 'tasks × seeds' column), else one task."""
    algorithms = sorted(values["return"], key=row_key)
    flags = grid_flags(algorithms)
    base_of = {algorithm: base for base, algorithm in pairs}
    signs = {"return": 1.0, "cumulative_cost": -1.0}  # P counts lower cost as better
    size = "tasks × seeds" if pooled else "seeds"
    columns = [
        "algorithm",
        *flags,
        size,
        "IQM final return ↑",
        "IQM cumulative training cost ↓",
        "base",
        "P(final return > base's) ↑",
        "P(cumulative cost < base's) ↑",
    ]
    lines = [caption, "", "| " + " | ".join(columns) + " |", "|-" * len(columns) + "|"]
    for algorithm in algorithms:
        tasks = sorted(values["return"][algorithm])
        matrices = {key: score_matrix(values[key][algorithm], tasks) for key in signs}
        cells = [statistic_cell([matrices[key]], iqm) for key in signs]
        base = base_of.get(algorithm)
        cells.append(base or "")
        for key, sign in signs.items():
            common = sorted(set(tasks) & set(values[key][base])) if base else []
            if common:
                x = sign * score_matrix(values[key][algorithm], common)
                y = sign * score_matrix(values[key][base], common)
                cells.append(statistic_cell([x, y], probability_of_improvement))
            else:
                cells.append("")
        count = f"{len(tasks)} × {len(matrices['return'])}" if pooled else f"{len(matrices['return'])}"
        lines.append("| " + " | ".join([*label_cells(algorithm, flags), count, *cells]) + " |")
    return lines


def statistic_cell(samples: Sequence[np.ndarray], statistic) -> str:
    """'point [low, high]' of stratified_interval; 'n/a' if an array holds no run (no seed on all its tasks)."""
    if any(sample.size == 0 for sample in samples):
        return "n/a"
    return format_interval(*stratified_interval(samples, statistic))


def table_values(runs_by_env: Dict[str, Dict[str, List[Run]]], normalise: bool) -> Dict[str, Dict[str, dict]]:
    """values[measure][algorithm][task][seed] of final return and cumulative cost (a seed run twice counts
    its last run found). normalise: each task's values mapped to [0, 1] by min-max over all its runs, 0 the
    lowest and 1 the highest (all 0 where every run is equal)."""
    values: Dict[str, Dict[str, dict]] = {}
    for key in ("return", "cumulative_cost"):
        values[key] = defaultdict(dict)
        for env_id, groups in runs_by_env.items():
            finals = [run.final[key] for runs in groups.values() for run in runs]
            low, high = (min(finals), max(finals)) if normalise else (0.0, 1.0)
            scale = high - low or 1.0
            for algorithm, runs in groups.items():
                values[key][algorithm][env_id] = {run.seed: (run.final[key] - low) / scale for run in runs}
    return values


def pareto_frontier(costs: Sequence[float], returns: Sequence[float]) -> np.ndarray:
    """Indices of the points no other point dominates, sorted by cost (then by return, descending).

    Point j dominates point i when cost_j <= cost_i and return_j >= return_i with at least one
    strict: lower cost and higher return are better. Equal points do not dominate each other, so
    duplicates on the frontier are all kept. Points with a NaN coordinate are left out.
    """
    c, r = np.asarray(costs, dtype=float), np.asarray(returns, dtype=float)
    valid = ~(np.isnan(c) | np.isnan(r))
    no_worse = (c[None, :] <= c[:, None]) & (r[None, :] >= r[:, None])  # [i, j]: j at least as good as i
    better = (c[None, :] < c[:, None]) | (r[None, :] > r[:, None])
    dominated = np.any(no_worse & better & valid[None, :], axis=1)
    idx = np.flatnonzero(valid & ~dominated)
    return idx[np.lexsort((-r[idx], c[idx]))]


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------
def format_interval(point: float, interval: Interval, signed: bool = False) -> str:
    """'point [low, high]' ('[n/a]' without an interval); signed: every number with its sign and
    ' *' appended where the interval excludes 0."""
    number = "{:+.2f}" if signed else "{:.2f}"
    if interval is None:
        return f"{number.format(point)} [n/a]"
    text = f"{number.format(point)} [{number.format(interval[0])}, {number.format(interval[1])}]"
    return text + " *" if signed and (interval[0] > 0 or interval[1] < 0) else text


def stratified_caption(pooled: bool) -> str:
    """The caption of the IQM and P(X > base) table, stating its statistics, normalisation and bootstrap."""
    level = f"{100 * STRATIFIED['confidence_interval_size']:g} %"
    where = (
        "Across tasks, on values normalised per task by min-max over all runs of that task in this table "
        "(0: the task's lowest final return or cumulative cost, 1: its highest); IQM over all runs of all "
        "tasks, P averaged over the tasks both ran."
        if pooled
        else "Final values as above, in the task's units."
    )
    return (
        f"{where} IQM: interquartile mean over runs (25 % trimmed from each end). P(X > base): over all pairs "
        "of a run of the algorithm and one of its base, the share where the algorithm's is better (ties "
        f"count ½); for cost, better is lower. [{level} CI: {STRATIFIED['method']} stratified bootstrap, runs "
        f"resampled within each task, {STRATIFIED['reps']} resamples, RandomState({STRATIFIED['seed']}); "
        "Agarwal et al., NeurIPS 2021, with rliable.]"
    )


def markdown_table(
    env_id: str, groups: Dict[str, List[Run]], last_episodes: int, baseline: Optional[str] = None
) -> str:
    """The Markdown tables of one environment: per algorithm the final values (mean over seeds with
    bootstrap interval), then per pair (SHAPO and its base, or with `baseline` each algorithm and its
    baseline: see baseline_pairs) the differences, unpaired and paired by seed, then the IQM and
    probability-of-improvement table."""
    level = f"{100 * BOOTSTRAP['confidence_level']:g} %"
    method = (
        f"{BOOTSTRAP['method']} bootstrap over seeds, {BOOTSTRAP['n_resamples']} resamples, "
        f"random_state={BOOTSTRAP['random_state']}"
    )
    finals = {alg: {key: [run.final[key] for run in runs] for key in MEASURES} for alg, runs in groups.items()}
    flags = grid_flags(list(groups))
    columns = [
        "algorithm",
        *flags,
        "seeds",
        "env steps",
        f"final return ↑ (last {last_episodes} ep.)",
        f"final episodic cost ↓ (last {last_episodes} ep.)",
        "cumulative training cost ↓",
    ]
    lines = [
        f"### {env_id}",
        "",
        f"Mean over seeds [{level} CI: {method}; n/a with one seed]. ↑ higher is better, ↓ lower is better.",
        "",
        "| " + " | ".join(columns) + " |",
        "|-" * len(columns) + "|",
    ]
    for algorithm in sorted(groups, key=row_key):
        last_steps = sorted(int(run.epoch_steps[-1]) for run in groups[algorithm])
        steps = f"{last_steps[0]}" if last_steps[0] == last_steps[-1] else f"{last_steps[0]}–{last_steps[-1]}"
        cells = [format_interval(*mean_interval(finals[algorithm][key])) for key in MEASURES]
        row = [*label_cells(algorithm, flags), str(len(groups[algorithm])), steps, *cells]
        lines.append("| " + " | ".join(row) + " |")
    pairs = baseline_pairs(list(groups), baseline) if baseline else shapo_pairs(list(groups))
    ours, theirs = ("algorithm", "baseline") if baseline else ("SHAPO", "base")
    if pairs:
        lines += [
            "",
            f"{ours} − {theirs}: difference of the means over seeds [{level} CI: {method}, the two algorithms' "
            "seeds resampled independently]; * the interval excludes 0.",
            "",
            f"| {ours} − {theirs} | seeds ({ours} / {theirs}) | Δ final return (> 0: {ours} better) "
            f"| Δ final episodic cost (< 0: {ours} better) | Δ cumulative training cost (< 0: {ours} better) |",
            "|-|-|-|-|-|",
        ]
        for base, other in pairs:
            cells = [
                format_interval(*difference_interval(finals[other][key], finals[base][key]), signed=True)
                for key in MEASURES
            ]
            seeds = f"{len(groups[other])} / {len(groups[base])}"
            lines.append(f"| {other} − {base} | {seeds} | " + " | ".join(cells) + " |")
        lines += [
            "",
            f"Paired: per seed that both ran, the {ours}'s value minus the {theirs}'s, and the mean of those "
            f"differences [{level} CI: {method}, over the per-seed differences]; * the interval excludes 0.",
            "",
            f"| {ours} − {theirs}, paired | seed | Δ final return | Δ final episodic cost "
            "| Δ cumulative training cost |",
            "|-|-|-|-|-|",
        ]
        for base, other in pairs:
            differences = {key: paired_differences(groups[other], groups[base], key) for key in MEASURES}
            for seed in differences["return"]:
                cells = " | ".join(f"{differences[key][seed]:+.2f}" for key in MEASURES)
                lines.append(f"| {other} − {base} (paired) | {seed} | {cells} |")
            intervals = [mean_interval(list(differences[key].values())) for key in MEASURES]
            cells = " | ".join(format_interval(*interval, signed=True) for interval in intervals)
            lines.append(f"| {other} − {base} (paired) | mean of {len(differences['return'])} | {cells} |")
    values = table_values({env_id: groups}, normalise=False)
    lines += [
        "",
        f"#### {env_id}: IQM and probability of improvement",
        "",
        *statistics_table(values, pairs, stratified_caption(pooled=False), pooled=False),
    ]
    return "\n".join(lines) + "\n"


def pooled_table(runs_by_env: Dict[str, Dict[str, List[Run]]], baseline: Optional[str]) -> str:
    """The IQM and P(X > base) table across all tasks, on per-task min-max normalised values."""
    names = sorted({algorithm for groups in runs_by_env.values() for algorithm in groups})
    pairs = baseline_pairs(names, baseline) if baseline else shapo_pairs(names)
    values = table_values(runs_by_env, normalise=True)
    caption = stratified_caption(pooled=True)
    heading = f"### All tasks ({', '.join(sorted(runs_by_env))}): IQM and probability of improvement"
    lines = [heading, "", *statistics_table(values, pairs, caption, True)]
    return "\n".join(lines) + "\n"


def plot_env(env_id: str, groups: Dict[str, List[Run]], spread: str, out_path: Path) -> None:
    """The four-panel figure of one environment, saved as PNG."""
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    (ax_ret, ax_cost), (ax_cum, ax_pareto) = axes
    band_name = "±1 std" if spread == "std" else "min–max"
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, (algorithm, runs) in enumerate(sorted(groups.items())):
        color = colors[k % len(colors)]
        grid, curves = grid_curves(runs)
        for ax, key in ((ax_ret, "return"), (ax_cost, "cost"), (ax_cum, "cumulative_cost")):
            mean, low, high = mean_and_band(curves[key], spread)
            ax.plot(grid, mean, color=color, label=f"{algorithm} ({len(runs)} seeds)")
            ax.fill_between(grid, low, high, color=color, alpha=0.2, linewidth=0)
        costs = [run.final["cumulative_cost"] for run in runs]
        returns = [run.final["return"] for run in runs]
        ax_pareto.scatter(costs, returns, color=color, alpha=0.7, label=algorithm)
        front = pareto_frontier(costs, returns)
        ax_pareto.plot(np.take(costs, front), np.take(returns, front), color=color, drawstyle="steps-post")
        ax_pareto.scatter(np.take(costs, front), np.take(returns, front), s=150, facecolors="none", edgecolors=color)
    limits = sorted({run.cost_limit for runs in groups.values() for run in runs if run.cost_limit is not None})
    for limit in limits:
        ax_cost.axhline(limit, color="black", linestyle="--", linewidth=1, label=f"cost limit d = {limit:g}")

    ax_ret.set(title="(a) episodic return", xlabel="environment steps", ylabel="return")
    ax_cost.set(title="(b) episodic cost", xlabel="environment steps", ylabel="cost")
    ax_cum.set(title="(c) cumulative training cost", xlabel="environment steps", ylabel="total cost since start")
    ax_pareto.set(
        title="(d) final return vs cumulative cost\n(one point per run; ringed + line: Pareto frontier)",
        xlabel="cumulative training cost (lower is better)",
        ylabel="final episodic return (higher is better)",
    )
    ax_pareto.title.set_fontsize(10)
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{env_id}: mean over seeds, shaded {band_name} (per-epoch grid)")
    fig.tight_layout()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=100)
    plt.close(fig)


def main(args: Args) -> Dict[str, str]:
    """Read, plot and tabulate; return {env_id: markdown table}, with {"all tasks": ...} for two or more
    tasks. Raises ValueError with a one-line message on bad input or when no run is found."""
    runs_dir = Path(args.runs_dir)
    if not runs_dir.is_dir():
        raise ValueError(f"--runs-dir {args.runs_dir!r} is not a folder")
    if args.last_episodes < 1:
        raise ValueError(f"--last-episodes must be at least 1, got {args.last_episodes}")
    runs_by_env: Dict[str, Dict[str, List[Run]]] = defaultdict(lambda: defaultdict(list))
    for path in find_run_dirs(runs_dir):
        name = RUN_NAME.match(path.name)
        if args.env_ids and name["env_id"] not in args.env_ids:
            continue
        if args.algorithms and name["exp_name"] not in args.algorithms:
            continue
        run = load_run(path, args.last_episodes)
        if run is not None:
            runs_by_env[run.env_id][run.algorithm].append(run)
    if not runs_by_env:
        raise ValueError(f"no runs with episodes and charts/cumulative_cost found under {args.runs_dir!r}")
    names = sorted({algorithm for groups in runs_by_env.values() for algorithm in groups})
    if args.baseline and not baseline_pairs(names, args.baseline):
        raise ValueError(
            f"--baseline {args.baseline!r} is neither one of the algorithms found ({', '.join(names)}) "
            "nor a grid setting FLAG=VALUE that pairs any of them"
        )

    tables = {}
    for env_id, groups in sorted(runs_by_env.items()):
        out_path = Path(args.out_dir) / f"{env_id}.png"
        plot_env(env_id, groups, args.spread, out_path)
        tables[env_id] = markdown_table(env_id, groups, args.last_episodes, args.baseline)
        print(tables[env_id])
        print(f"wrote {out_path}\n", flush=True)
    if len(runs_by_env) > 1:
        tables["all tasks"] = pooled_table(runs_by_env, args.baseline)
        print(tables["all tasks"])
    if args.table:
        Path(args.table).parent.mkdir(parents=True, exist_ok=True)
        Path(args.table).write_text("\n".join(tables.values()))
        print(f"wrote {args.table}")
    return tables


if __name__ == "__main__":
    cli_args = tyro.cli(Args)
    try:
        main(cli_args)
    except ValueError as error:
        sys.exit(f"plot.py: error: {error}")
