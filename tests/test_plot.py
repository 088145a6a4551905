"""plot.py on synthetic TensorBoard logs (two algorithms x two seeds, values chosen by hand): the
table's mean +- std, the common step grid, the cost limit, the figure, and the Pareto frontier."""

import subprocess
import sys

import matplotlib.image
import numpy as np
import pytest
from conftest import ROOT
from torch.utils.tensorboard import SummaryWriter

import plot

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


def write_run(runs_dir, algorithm, seed, episodes, cumulative_costs):
    """Log one run the way the training scripts do, in step order."""
    writer = SummaryWriter(str(runs_dir / f"{ENV}__{algorithm}__{seed}__1700000000"))
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


def test_table_mean_std_over_seeds(runs_dir, tmp_path, capsys):
    table_file = tmp_path / "results.md"
    tables = plot.main(plot.Args(runs_dir=str(runs_dir), out_dir=str(tmp_path / "docs"), last_episodes=2,
                                 table=str(table_file)))
    # by hand, last 2 episodes of each run; std over the 2 seeds = |x0 - x1| / 2 (ddof=0)
    #   algo_a: return (5+6)/2=5.5 and (8+10)/2=9 -> 7.25 +- 1.75; cost (4+2)/2=3 and (3+0)/2=1.5 -> 2.25 +- 0.75;
    #           cumulative 40 and 32 -> 36 +- 4
    #   algo_b: return (1+3)/2=2 and (2+5)/2=3.5 -> 2.75 +- 0.75; cost (20+10)/2=15 and (15+20)/2=17.5 -> 16.25 +- 1.25;
    #           cumulative 80 and 85 -> 82.5 +- 2.5
    rows = [line for line in tables[ENV].splitlines() if line.startswith("| algo_")]
    assert rows == [
        "| algo_a | 2 | 400 | 7.25 ± 1.75 | 2.25 ± 0.75 | 36.00 ± 4.00 |",
        "| algo_b | 2 | 400 | 2.75 ± 0.75 | 16.25 ± 1.25 | 82.50 ± 2.50 |",
    ]
    assert tables[ENV] in capsys.readouterr().out
    assert table_file.read_text().strip() == tables[ENV].strip()


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
    assert result.stderr.strip().splitlines() == [f"plot.py: error: no runs with episodes and charts/cumulative_cost "
                                                  f"found under {str(tmp_path)!r}"]
