"""plot.py on synthetic TensorBoard logs (values chosen by hand): the table's means and bootstrap
intervals over seeds (checked against a percentile bootstrap written here with NumPy), the SHAPO-minus-base
differences and their markers, grid points as columns and --baseline pairs, the IQM and probability of
improvement per task and across tasks (against hand computations and a stratified bootstrap written here),
the common step grid, the cost limit, the figure, and the Pareto frontier."""

import re
import subprocess
import sys

import matplotlib.image
import numpy as np
import pytest
from torch.utils.tensorboard import SummaryWriter

import plot
from conftest import ROOT

ENV = "TestEnv-v0"
EPOCH_ENDS = (100, 200, 300, 400)
COST_LIMIT = 5.0
# (algorithm, seed) -> episodes as (end step, return, cost), cumulative cost at each epoch end
RUNS = {
    ("algo_a", 0): ([(40, 1, 10), (90, 2, 10), (180, 3, 8), (260, 4, 6), (330, 5, 4), (400, 6, 2)], [20, 28, 34, 40]),
    ("algo_a", 1): ([(60, 2, 12), (150, 4, 9), (250, 6, 6), (350, 8, 3), (390, 10, 0)], [15, 25, 30, 32]),
    ("algo_b", 0): ([(100, 0, 30), (200, 1, 20), (300, 1, 20), (400, 3, 10)], [30, 50, 70, 80]),
    ("algo_b", 1): ([(50, 1, 25), (120, 1, 25), (310, 2, 15), (380, 5, 20)], [25, 50, 65, 85]),
}
# the settings plot.py documents, written out here so that a change there fails the tests
BOOTSTRAP = dict(method="percentile", confidence_level=0.95, n_resamples=10_000, random_state=0)
NUMBER = r"[+-]?\d+\.\d\d"
CELL = re.compile(rf"^(?P<point>{NUMBER}) \[(?:n/a|(?P<low>{NUMBER}), (?P<high>{NUMBER}))\](?P<mark> \*)?$")


def write_run(runs_dir, algorithm, seed, episodes, cumulative_costs, env=ENV):
    """Log one run the way the training scripts do, in step order."""
    writer = SummaryWriter(str(runs_dir / f"{env}__{algorithm}__{seed}__1700000000"))
    writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n|seed|{seed}|\n|cost_limit|{COST_LIMIT}|\n|gamma|0.99|")
    pending = list(episodes)
    for epoch_end, cumulative in zip(EPOCH_ENDS, cumulative_costs):
        while pending and pending[0][0] <= epoch_end:
            step, ret, cost = pending.pop(0)
            writer.add_scalar("charts/episodic_return", ret, step)
            writer.add_scalar("charts/episodic_cost", cost, step)
            writer.add_scalar("charts/episodic_length", 10, step)
        writer.add_scalar("charts/cumulative_cost", cumulative, epoch_end)
        writer.add_scalar("charts/lagrange_multiplier", 0.1, epoch_end)
    writer.close()


@pytest.fixture
def runs_dir(tmp_path):
    runs = tmp_path / "sweep" / "runs"
    for (algorithm, seed), (episodes, cumulative) in RUNS.items():
        write_run(runs, algorithm, seed, episodes, cumulative)
    return runs


def write_constant_run(runs_dir, algorithm, seed, final_return, final_cost, cumulative_cost, env=ENV):
    """A run whose every episode has the same return and cost: its final values are the arguments."""
    episodes = [(step, final_return, final_cost) for step in EPOCH_ENDS]
    write_run(runs_dir, algorithm, seed, episodes, [cumulative_cost * k / 4 for k in (1, 2, 3, 4)], env=env)


def table_rows(table):
    """{first cell: cells} of every row of the Markdown tables before the IQM section, header rows included."""
    return all_rows(table.split("\n#### ")[0])


def all_rows(table):
    """{first cell: cells} of every row of the Markdown tables, header rows included (a later row wins)."""
    rows = [line for line in table.splitlines() if line.startswith("|") and not line.startswith("|-")]
    return {cells[0]: cells[1:] for cells in ([c.strip() for c in row.strip("|").split("|")] for row in rows)}


def parse_cell(cell):
    """'point [low, high]( *)' -> point, low, high (None for n/a), marked."""
    match = CELL.match(cell)
    assert match, cell
    low, high = (None, None) if match["low"] is None else (float(match["low"]), float(match["high"]))
    return float(match["point"]), low, high, match["mark"] is not None


def test_table_mean_and_interval_over_seeds(runs_dir, tmp_path, capsys):
    table_file = tmp_path / "results.md"
    tables = plot.main(
        plot.Args(runs_dir=str(runs_dir), out_dir=str(tmp_path / "docs"), last_episodes=2, table=str(table_file))
    )
    # by hand, last 2 episodes of each run:
    #   algo_a: return (5+6)/2=5.5 and (8+10)/2=9 -> 7.25; cost (4+2)/2=3 and (3+0)/2=1.5 -> 2.25;
    #           cumulative 40 and 32 -> 36
    #   algo_b: return (1+3)/2=2 and (2+5)/2=3.5 -> 2.75; cost (20+10)/2=15 and (15+20)/2=17.5 -> 16.25;
    #           cumulative 80 and 85 -> 82.5
    # With 2 seeds a resample's mean is the min, the mean or the max with probability 1/4, 1/2, 1/4, so the
    # 2.5 % and 97.5 % percentiles of 10,000 resamples are the min and the max of the two seeds.
    rows = [line for line in tables[ENV].split("\n#### ")[0].splitlines() if line.startswith("| algo_")]
    assert rows == [
        "| algo_a | 2 | 400 | 7.25 [5.50, 9.00] | 2.25 [1.50, 3.00] | 36.00 [32.00, 40.00] |",
        "| algo_b | 2 | 400 | 2.75 [2.00, 3.50] | 16.25 [15.00, 17.50] | 82.50 [80.00, 85.00] |",
    ]
    assert "SHAPO" not in tables[ENV]  # no base/SHAPO pair among algo_a, algo_b
    assert tables[ENV] in capsys.readouterr().out
    assert table_file.read_text().strip() == tables[ENV].strip()


def test_table_columns_state_seeds_steps_direction_and_bootstrap(tmp_path):
    runs = tmp_path / "runs"
    for seed in range(2):
        write_constant_run(runs, "ppo_lag", seed, 1.0 + seed, 2.0, 10.0)
        write_constant_run(runs, "ppo_lag_shapo", seed, 3.0 + seed, 1.0, 5.0)
    table = plot.main(plot.Args(runs_dir=str(runs), out_dir=str(tmp_path / "docs"), last_episodes=3))[ENV]
    rows = table_rows(table)
    assert rows["algorithm"] == [
        "seeds",
        "env steps",
        "final return ↑ (last 3 ep.)",
        "final episodic cost ↓ (last 3 ep.)",
        "cumulative training cost ↓",
    ]
    assert rows["SHAPO − base"] == [
        "seeds (SHAPO / base)",
        "Δ final return (> 0: SHAPO better)",
        "Δ final episodic cost (< 0: SHAPO better)",
        "Δ cumulative training cost (< 0: SHAPO better)",
    ]
    assert rows["ppo_lag"][:2] == ["2", "400"] and rows["ppo_lag_shapo"][:2] == ["2", "400"]
    assert rows["ppo_lag_shapo − ppo_lag"][0] == "2 / 2"
    assert "95 % CI: percentile bootstrap over seeds, 10000 resamples, random_state=0" in table


def numpy_percentile_bootstrap(samples, statistic, resamples=20_000, seed=1):
    """An independent percentile bootstrap: resample each sample with replacement on its own, take the
    statistic, and read the 2.5 % and 97.5 % quantiles."""
    rng = np.random.default_rng(seed)
    draws = [statistic(*(rng.choice(sample, size=len(sample)) for sample in samples)) for _ in range(resamples)]
    return np.quantile(draws, [0.025, 0.975])


def test_interval_is_a_percentile_bootstrap_and_contains_the_mean():
    """plot.py's intervals against a bootstrap written out here with NumPy: equal up to the Monte Carlo error of
    the two resamplings (a BCa, a normal or a t interval would differ by more on these skewed samples)."""
    assert plot.BOOTSTRAP == BOOTSTRAP
    sample = np.array([3.1, 4.7, 5.0, 6.2, 8.9, 2.4, 14.0])
    mean, (low, high) = plot.mean_interval(sample)
    expected = numpy_percentile_bootstrap([sample], np.mean)
    assert mean == pytest.approx(sample.mean())
    assert (low, high) == pytest.approx(tuple(expected), abs=0.03 * (high - low))
    assert low < mean < high

    shapo, base = np.array([5.0, 7.5, 6.0, 9.0, 20.0]), np.array([4.0, 6.5, 3.0, 5.5, 4.5])
    diff, (low, high) = plot.difference_interval(shapo, base)
    expected = numpy_percentile_bootstrap([shapo, base], lambda x, y: x.mean() - y.mean())
    assert diff == pytest.approx(shapo.mean() - base.mean())
    assert (low, high) == pytest.approx(tuple(expected), abs=0.03 * (high - low))
    assert low < diff < high


def test_interval_narrows_as_seeds_agree():
    sample = np.array([3.1, 4.7, 5.0, 6.2, 8.9, 2.4])
    widths = []
    for shrink in (1.0, 0.5, 0.1, 0.0):  # the seeds pulled towards their mean; 0: all equal
        values = sample.mean() + shrink * (sample - sample.mean())
        mean, (low, high) = plot.mean_interval(values)
        assert low <= mean <= high
        widths.append(high - low)
    assert widths[0] > widths[1] > widths[2] > widths[3] == 0
    assert plot.mean_interval([2.5, 2.5, 2.5]) == (2.5, (2.5, 2.5))
    assert plot.difference_interval([3.0, 3.0], [1.0, 1.0]) == (2.0, (2.0, 2.0))


def test_shapo_difference_sign_and_marker(tmp_path):
    runs = tmp_path / "runs"
    # ppo: SHAPO clearly better on all three (higher return, lower costs, no overlap between the seeds);
    # trpo (with a suffix, as sweep.py --exp-name-suffix pid names them): the seeds overlap on all three.
    values = {  # algorithm: per seed (final return, final cost, cumulative cost)
        "ppo_lag": [(10, 20, 200), (11, 22, 210), (12, 21, 220), (13, 23, 205)],
        "ppo_lag_shapo": [(20, 5, 100), (21, 6, 105), (22, 4, 95), (23, 5, 110)],
        "trpo_lag_pid": [(10, 5, 100), (14, 9, 140), (12, 7, 120), (16, 3, 90)],
        "trpo_lag_shapo_pid": [(11, 6, 110), (15, 4, 95), (9, 8, 130), (13, 2, 105)],
    }
    for algorithm, seeds in values.items():
        for seed, (ret, cost, cumulative) in enumerate(seeds):
            write_constant_run(runs, algorithm, seed, ret, cost, cumulative)
    rows = table_rows(plot.main(plot.Args(runs_dir=str(runs), out_dir=str(tmp_path / "docs")))[ENV])
    assert [name for name in rows if "−" in name] == [
        "SHAPO − base",
        "ppo_lag_shapo − ppo_lag",
        "trpo_lag_shapo_pid − trpo_lag_pid",
        "SHAPO − base, paired",
        "ppo_lag_shapo − ppo_lag (paired)",
        "trpo_lag_shapo_pid − trpo_lag_pid (paired)",
    ]

    better = [parse_cell(cell) for cell in rows["ppo_lag_shapo − ppo_lag"][1:]]
    assert [point for point, *_ in better] == [10.0, -16.5, -106.25]  # differences of the means by hand
    (ret, ret_low, _, ret_mark), *costs = better
    assert ret_low > 0 and ret_mark
    assert all(high < 0 and mark for _, _, high, mark in costs)

    overlap = [parse_cell(cell) for cell in rows["trpo_lag_shapo_pid − trpo_lag_pid"][1:]]
    assert [point for point, *_ in overlap] == [-1.0, -1.0, -2.5]
    assert all(low < 0 < high and not mark for _, low, high, mark in overlap)


def test_paired_differences_per_seed_and_their_interval(tmp_path):
    """Pairs by seed: each seed's difference by hand, their mean, and the bootstrap interval over the differences
    (a NumPy bootstrap written here); a seed only one algorithm ran is left out."""
    runs = tmp_path / "runs"
    base = {0: (10, 8, 100), 1: (20, 6, 300), 2: (30, 9, 200), 3: (40, 7, 250), 4: (50, 5, 50)}
    shapo = {0: (13, 8, 90), 1: (21, 5, 310), 2: (35, 9, 180), 3: (41, 6, 255), 5: (99, 0, 0)}
    for algorithm, seeds in (("trpo_lag", base), ("trpo_lag_shapo", shapo)):
        for seed, (ret, cost, cumulative) in seeds.items():
            write_constant_run(runs, algorithm, seed, ret, cost, cumulative)
    table = plot.main(plot.Args(runs_dir=str(runs), out_dir=str(tmp_path / "out")))[ENV]
    paired = [line.split("|")[2:-1] for line in table.splitlines() if "(paired)" in line]
    assert [cells[0].strip() for cells in paired] == ["0", "1", "2", "3", "mean of 4"]
    assert [float(cells[1]) for cells in paired[:4]] == [3.0, 1.0, 5.0, 1.0]
    assert [float(cells[3]) for cells in paired[:4]] == [-10.0, 10.0, -20.0, 5.0]
    point, low, high, marked = parse_cell(paired[4][1].strip())
    expected = numpy_percentile_bootstrap([np.array([3.0, 1.0, 5.0, 1.0])], np.mean)
    assert point == 2.5 and (low, high) == pytest.approx(tuple(expected), abs=0.1) and marked
    assert parse_cell(paired[4][3].strip())[1] < 0 < parse_cell(paired[4][3].strip())[2]


def test_one_seed_gives_mean_and_na(tmp_path):
    runs = tmp_path / "runs"
    write_constant_run(runs, "trpo_lag", 0, 4.0, 3.0, 30.0)
    write_constant_run(runs, "trpo_lag_shapo", 0, 6.0, 1.0, 10.0)
    write_constant_run(runs, "trpo_lag_shapo", 1, 8.0, 2.0, 20.0)
    rows = table_rows(plot.main(plot.Args(runs_dir=str(runs), out_dir=str(tmp_path / "docs")))[ENV])
    assert rows["trpo_lag"] == ["1", "400", "4.00 [n/a]", "3.00 [n/a]", "30.00 [n/a]"]
    assert rows["trpo_lag_shapo"] == ["2", "400", "7.00 [6.00, 8.00]", "1.50 [1.00, 2.00]", "15.00 [10.00, 20.00]"]
    assert rows["trpo_lag_shapo − trpo_lag"] == ["2 / 1", "+3.00 [n/a]", "-1.50 [n/a]", "-15.00 [n/a]"]
    assert plot.mean_interval([7.0]) == (7.0, None)


def test_shapo_pairs_by_name():
    names = ["algo_a", "ppo_lag", "ppo_lag_shapo", "trpo_lag_shapo", "trpo_lag_pid", "trpo_lag_shapo_pid"]
    # trpo_lag_shapo has no trpo_lag here; algo_a has no SHAPO counterpart
    assert plot.shapo_pairs(names) == [("ppo_lag", "ppo_lag_shapo"), ("trpo_lag_pid", "trpo_lag_shapo_pid")]


def test_figure_is_a_valid_png(runs_dir, tmp_path):
    out_dir = tmp_path / "docs"
    plot.main(plot.Args(runs_dir=str(runs_dir), out_dir=str(out_dir)))
    assert sorted(p.name for p in out_dir.iterdir()) == [f"{ENV}.png"]
    png = out_dir / f"{ENV}.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(png)
    assert image.shape[0] >= 400 and image.shape[1] >= 600
    assert image[..., :3].std() > 0.05  # not a blank canvas


def test_runs_are_read_with_cost_limit_and_binned_per_epoch(runs_dir):
    (path,) = [p for p in plot.find_run_dirs(runs_dir.parent) if "algo_a__0" in p.name]
    run = plot.load_run(path, last_episodes=2)
    assert (run.env_id, run.algorithm, run.seed) == (ENV, "algo_a", 0)
    assert run.cost_limit == COST_LIMIT
    np.testing.assert_array_equal(run.epoch_steps, EPOCH_ENDS)
    np.testing.assert_array_equal(run.episode_steps, [40, 90, 180, 260, 330, 400])

    other = plot.load_run(next(p for p in plot.find_run_dirs(runs_dir) if "algo_a__1" in p.name), 2)
    grid, curves = plot.grid_curves([run, other])
    np.testing.assert_array_equal(grid, EPOCH_ENDS)
    # per-epoch means: seed 0 [1.5, 3, 4, 5.5], seed 1 [2, 4, 6, 9]
    mean, low, high = plot.mean_and_band(curves["return"], "std")
    np.testing.assert_allclose(mean, [1.75, 3.5, 5.0, 7.25])
    np.testing.assert_allclose(high - mean, [0.25, 0.5, 1.0, 1.75])
    mean, low, high = plot.mean_and_band(curves["cumulative_cost"], "minmax")
    np.testing.assert_allclose(low, [15, 25, 30, 32])
    np.testing.assert_allclose(high, [20, 28, 34, 40])


def test_bin_to_grid_averages_per_bin_and_carries_empty_bins_forward():
    grid = np.array([100, 200, 300, 400])
    out = plot.bin_to_grid(np.array([150, 160, 200, 350, 450]), np.array([2.0, 4.0, 6.0, 8.0, 99.0]), grid)
    # (0,100]: none -> NaN; (100,200]: 2,4,6 -> 4; (200,300]: none -> 4 carried; (300,400]: 8; 450 is past the grid
    np.testing.assert_array_equal(out, [np.nan, 4.0, 4.0, 8.0])


def test_pareto_frontier_on_a_tiny_point_set():
    costs = [1, 2, 3, 2, 4, 1, np.nan]
    returns = [1, 3, 2, 3, 5, 0, 9]
    # 2 (3,2) is beaten by 1 (2,3); 5 (1,0) by 0 (1,1); 1 and 3 are equal and both stay; 6 has a NaN
    assert plot.pareto_frontier(costs, returns).tolist() == [0, 1, 3, 4]
    assert plot.pareto_frontier([5.0], [1.0]).tolist() == [0]
    # one point better in both than all others: the frontier is that point alone
    assert plot.pareto_frontier([3, 1, 2], [1, 4, 2]).tolist() == [1]


def test_parse_cost_limit():
    assert plot.parse_cost_limit("|param|value|\n|-|-|\n|cost_limit|25.0|\n|seed|1|") == 25.0
    assert plot.parse_cost_limit("|param|value|\n|-|-|\n|seed|1|") is None


def test_cli_error_is_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "plot.py"), "--runs-dir", str(tmp_path)], capture_output=True, text=True
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"plot.py: error: no runs with episodes and charts/cumulative_cost found under {str(tmp_path)!r}"
    ]


def test_iqm_and_probability_of_improvement_by_hand():
    # 3 runs x 2 tasks: sorted entries 1 2 3 10 20 30, one cut from each end -> (2 + 3 + 10 + 20) / 4
    assert plot.iqm(np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0]])) == pytest.approx(8.75)
    assert plot.iqm(np.array([[4.0], [1.0], [3.0], [100.0]])) == pytest.approx(3.5)  # the middle two, 3 and 4
    x = np.array([[1.0, 5.0], [3.0, 6.0], [2.0, 7.0]])
    y = np.array([[2.0, 5.0], [2.0, 6.0]])
    # task 0: 1 loses twice, 3 wins twice, 2 ties twice -> 3/6; task 1: 5 ties and loses, 6 wins and ties,
    # 7 wins twice -> 4/6; averaged over the two tasks
    assert plot.probability_of_improvement(x, y) == pytest.approx((3 / 6 + 4 / 6) / 2)
    assert plot.probability_of_improvement(y, x) == pytest.approx(1 - (3 / 6 + 4 / 6) / 2)
    with pytest.raises(ValueError, match="same tasks"):
        plot.probability_of_improvement(x, y[:, :1])


def numpy_stratified_bootstrap(samples, statistic, resamples=20_000, seed=1):
    """An independent stratified bootstrap: each (runs, tasks) array's runs resampled with replacement within
    each task column on their own, then the 2.5 % and 97.5 % quantiles of the statistic."""
    rng = np.random.default_rng(seed)

    def resample(sample):
        rows = rng.integers(0, len(sample), size=sample.shape)  # a row index per entry: per task on its own
        return np.take_along_axis(sample, rows, axis=0)

    draws = [statistic(*(resample(sample) for sample in samples)) for _ in range(resamples)]
    return np.quantile(draws, [0.025, 0.975])


def test_stratified_intervals_against_a_numpy_bootstrap():
    scores = np.array([[0.1, 0.9], [0.4, 0.2], [0.35, 0.8], [0.9, 0.5], [0.6, 0.55]])
    point, (low, high) = plot.stratified_interval([scores], plot.iqm)
    assert low < point < high
    assert (low, high) == pytest.approx(tuple(numpy_stratified_bootstrap([scores], plot.iqm)), abs=0.08 * (high - low))
    other = scores[:4] - 0.2
    point, (low, high) = plot.stratified_interval([scores, other], plot.probability_of_improvement)
    expected = numpy_stratified_bootstrap([scores, other], plot.probability_of_improvement)
    assert low <= point <= high and (low, high) == pytest.approx(tuple(expected), abs=0.05)
    assert plot.stratified_interval([scores[:1]], plot.iqm)[1] is None  # one run: n/a
    assert plot.stratified_interval([np.full((3, 2), 2.0)], plot.iqm) == (2.0, (2.0, 2.0))


def test_baseline_pairs_by_name_and_by_grid_setting():
    grid = [
        "trpo_lag_shapo-delta_down=0-critic_sam_rho=0",
        "trpo_lag_shapo-delta_down=1e-4-critic_sam_rho=0",
        "trpo_lag_shapo-delta_down=0-critic_sam_rho=0.05",
        "trpo_lag_shapo-delta_down=1e-4-critic_sam_rho=0.05",
    ]
    names = ["ppo_lag", *grid, "trpo_lag_shapo-delta_down=1e-5-critic_sam_rho=0.1"]  # the last has no twin
    assert plot.baseline_pairs(names, "delta-down=0") == [(grid[0], grid[1]), (grid[2], grid[3])]
    assert plot.baseline_pairs(names, "delta_down=0") == [(grid[0], grid[1]), (grid[2], grid[3])]
    # rows sorted by value, numerically: delta 0 < 1e-5 < 1e-4
    by_value = [grid[0], grid[2], names[-1], grid[1], grid[3]]
    assert plot.baseline_pairs(names, "ppo_lag") == [("ppo_lag", name) for name in by_value]
    assert plot.baseline_pairs(names, "gamma=0.9") == []


def test_grid_columns_baseline_pairs_and_statistics_per_task_and_across_tasks(tmp_path):
    runs, other_env = tmp_path / "runs", "OtherEnv-v0"
    base, shapo = "trpo_lag_shapo-delta_down=0", "trpo_lag_shapo-delta_down=1e-4"
    values = {  # (env, algorithm): per seed (final return, cumulative cost)
        (ENV, base): [(10, 100), (20, 300)],
        (ENV, shapo): [(30, 200), (20, 400)],
        (other_env, base): [(0, 50), (4, 50)],
        (other_env, shapo): [(2, 10), (8, 90)],
    }
    for (env, algorithm), seeds in values.items():
        for seed, (ret, cumulative) in enumerate(seeds):
            write_constant_run(runs, algorithm, seed, ret, 1.0, cumulative, env=env)
    tables = plot.main(plot.Args(runs_dir=str(runs), out_dir=str(tmp_path / "out"), baseline="delta-down=0"))
    assert sorted(tables) == sorted([ENV, other_env, "all tasks"])

    lines = tables[ENV].splitlines()
    assert lines[4].startswith("| algorithm | delta-down | seeds | env steps |")
    assert [line.split(" | ")[:3] for line in lines[6:8]] == [
        ["| trpo_lag_shapo", "0", "2"],
        ["| trpo_lag_shapo", "1e-4", "2"],
    ]
    rows = table_rows(tables[ENV])
    assert rows["algorithm − baseline"][0] == "seeds (algorithm / baseline)"
    assert parse_cell(rows[f"{shapo} − {base}"][1])[0] == 10.0  # 25 - 15
    # per seed: return 30 - 10 and 20 - 20, episodic cost 0 and 0, cumulative cost 200 - 100 and 400 - 300
    assert rows[f"{shapo} − {base} (paired)"][1:] == [
        "+10.00 [+0.00, +20.00]",
        "+0.00 [+0.00, +0.00]",
        "+100.00 [+100.00, +100.00] *",
    ]

    # per task, by hand: P(return > base's) over the 4 pairs of runs: 30 > 10, 30 > 20, 20 > 10, 20 = 20 -> 3.5 / 4;
    # P(cost < base's): 200 < 300 only -> 1 / 4. IQM of 2 runs: their mean.
    stats = all_rows(tables[ENV].split("\n#### ")[1])
    assert stats["algorithm"][:3] == ["delta-down", "seeds", "IQM final return ↑"]
    shapo_row = stats["trpo_lag_shapo"]  # the later of the two rows so named: delta 1e-4
    assert shapo_row[0] == "1e-4" and shapo_row[4] == base
    assert [parse_cell(cell)[0] for cell in shapo_row[2:4]] == [25.0, 300.0]
    assert [parse_cell(cell)[0] for cell in shapo_row[5:]] == [0.88, 0.25]
    # across tasks: min-max per task; returns {10, 20, 30, 20} -> base 0, .5, 1e-4 1, .5; {0, 4, 2, 8} -> base 0, .5,
    # 1e-4 .25, 1. IQM of 4 entries = mean of the middle two: 1e-4 (.5 + 1) / 2, base (0 + .5) / 2. Costs
    # {100, 300, 200, 400} -> 0, 2/3 and 1/3, 1; {50, 50, 10, 90} -> .5, .5 and 0, 1: 1e-4 (1/3 + 1) / 2.
    # P averaged over tasks: return (3.5/4 + 3/4) / 2, cost (1/4 + 2/4) / 2.
    pooled = all_rows(tables["all tasks"])
    assert pooled["algorithm"][1] == "tasks × seeds"
    points = [parse_cell(cell)[0] for cell in pooled["trpo_lag_shapo"][2:4] + pooled["trpo_lag_shapo"][5:]]
    assert points == pytest.approx([0.75, 2 / 3, 0.8125, 0.375], abs=0.0051)
    assert "min-max over all runs of that task" in tables["all tasks"]


def test_bad_baseline_is_a_one_line_error(tmp_path):
    write_constant_run(tmp_path, "ppo_lag", 0, 1.0, 1.0, 1.0)
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "plot.py"),
            "--runs-dir",
            str(tmp_path),
            "--out-dir",
            str(tmp_path / "out"),
            "--baseline",
            "delta-down=0",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "plot.py: error: --baseline 'delta-down=0' is neither one of the "
        "algorithms found (ppo_lag) nor a grid setting FLAG=VALUE that "
        "pairs any of them"
    ]
