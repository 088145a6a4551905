"""sweep.py end to end: a real tiny local sweep, a failing run among good ones, skipping finished runs,
resuming interrupted ones in their folders, stopping a sweep with SIGTERM, the Ray backend on a real
local Ray instance and without Ray, parameter grids (names, resuming, skipping, on both backends), and
bad input."""

import importlib.util
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import sweep as sweep_module
from conftest import ROOT

TINY = ["--total-timesteps", "400", "--steps-per-epoch", "200", "--num-envs", "2"]
PROGRESS = re.compile(
    r"^\[(?P<k>\d+)/(?P<n>\d+)\] (?P<script>\S+) (?P<env_id>\S+) seed (?P<seed>-?\d+): "
    r"(?:skipped, finished at step (?P<finished>\d+) in (?P<folder>\S+)"
    r"|(?:fresh|resumed at step (?P<resumed>\d+)), exit (?P<code>-?\d+) in \d+\.\d s(?P<stopped>, stopped)?"
    r"(?: \| (?P<error>.+))?)$"
)
GRID = ["--scripts", "ppo_lag", "trpo_lag_shapo", "--env-ids", "Walker2d-v4", "--seeds", "0", "1", "--workers", "2"]


def sweep_command(*flags, out_dir):
    return [sys.executable, str(ROOT / "sweep.py"), "--out-dir", str(out_dir), *flags]


def sweep(*flags, out_dir):
    return subprocess.run(sweep_command(*flags, out_dir=out_dir), capture_output=True, text=True, timeout=300)


def progress_lines(stdout):
    return [match.groupdict() for line in stdout.splitlines() if (match := PROGRESS.match(line))]


def run_dirs(out_dir):
    return sorted((out_dir / "runs").iterdir())


def global_step(run_dir):
    return torch.load(run_dir / "checkpoint.pt", weights_only=False)["global_step"]


def epoch_steps(run_dir):
    """Steps of the per-epoch scalar charts/lagrange_multiplier, as plot.py's reader sees them."""
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return [event.step for event in events.Scalars("charts/lagrange_multiplier")]


def folder_state(out_dir):
    """Every file under runs/ and sweep_logs/ with its size and modification time."""
    return {(p, p.stat().st_size, p.stat().st_mtime_ns) for p in out_dir.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def tiny_grid(tmp_path_factory):
    """A finished grid ppo_lag, trpo_lag_shapo x Walker2d-v4 x seeds 0 1 of 400 steps; copy it to change it."""
    out_dir = tmp_path_factory.mktemp("grid")
    return out_dir, sweep(*GRID, *TINY, out_dir=out_dir)


def test_local_sweep_runs_the_whole_grid(tiny_grid):
    out_dir, result = tiny_grid
    scripts = ("ppo_lag", "trpo_lag_shapo")
    assert result.returncode == 0, result.stdout + result.stderr
    runs = sorted(p.name.rsplit("__", 1)[0] for p in run_dirs(out_dir))
    assert runs == [f"Walker2d-v4__{s}__{seed}" for s in scripts for seed in (0, 1)]
    assert all(any(p.glob("events.out.tfevents.*")) for p in run_dirs(out_dir))
    # every run was started with --save-model and ended with its checkpoint at the last epoch
    assert [global_step(p) for p in run_dirs(out_dir)] == [400] * 4
    lines = progress_lines(result.stdout)
    assert [int(line["k"]) for line in lines] == [1, 2, 3, 4] and {line["n"] for line in lines} == {"4"}
    assert sorted((line["script"], line["env_id"], int(line["seed"]), line["code"]) for line in lines) == [
        (s, "Walker2d-v4", seed, "0") for s in scripts for seed in (0, 1)
    ]
    assert all(line["resumed"] is None and line["stopped"] is None for line in lines)
    # the pass-through flags reached every run: two epochs of 200 steps
    for script in scripts:
        for seed in (0, 1):
            log = (out_dir / "sweep_logs" / f"{script}__Walker2d-v4__{seed}.log").read_text()
            assert "epoch 2/2 step 400" in log and "--save-model" in log.splitlines()[0]
    assert result.stdout.strip().splitlines()[-1].startswith("sweep: all 4 runs finished")


def test_finished_grid_is_skipped(tiny_grid, tmp_path):
    shutil.copytree(tiny_grid[0], tmp_path, dirs_exist_ok=True)
    before = folder_state(tmp_path)
    result = sweep(*GRID, *TINY, out_dir=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = progress_lines(result.stdout)
    assert len(lines) == 4 and all(line["finished"] == "400" for line in lines)
    # in grid order, a script and its twin side by side per seed, so a grid cut short still holds pairs
    order = [(s, seed) for seed in "01" for s in ("ppo_lag", "trpo_lag_shapo")]
    assert [(line["script"], line["seed"]) for line in lines] == order
    assert sorted(line["folder"] for line in lines) == [p.name for p in run_dirs(tmp_path)]
    assert folder_state(tmp_path) == before  # nothing ran: no new folder, event file, checkpoint or log line
    assert result.stdout.strip().splitlines()[-1].startswith("sweep: all 4 runs finished")
    assert result.stderr == ""


def test_interrupted_run_resumes_in_its_folder(tiny_grid, tmp_path):
    # the 400-step runs are interrupted runs of an 800-step budget (--total-timesteps may change on --resume);
    # an older folder of the same run without a checkpoint is left alone and does not count
    shutil.copytree(tiny_grid[0], tmp_path, dirs_exist_ok=True)
    stale = tmp_path / "runs" / "Walker2d-v4__ppo_lag__0__1"
    stale.mkdir()
    before = run_dirs(tmp_path)
    result = sweep(
        "--scripts",
        "ppo_lag",
        "trpo_lag_shapo",
        "--env-ids",
        "Walker2d-v4",
        "--seeds",
        "0",
        "--workers",
        "2",
        "--total-timesteps",
        "800",
        "--steps-per-epoch",
        "200",
        "--num-envs",
        "2",
        out_dir=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted((line["script"], line["resumed"], line["code"]) for line in progress_lines(result.stdout)) == [
        ("ppo_lag", "400", "0"),
        ("trpo_lag_shapo", "400", "0"),
    ]
    assert run_dirs(tmp_path) == before and not any(stale.iterdir())
    assert result.stderr.startswith("sweep.py: warning: left as they are: 1 run folder(s)"), result.stderr
    for run_dir in before:
        seed = run_dir.name.split("__")[2]
        if run_dir != stale:
            assert global_step(run_dir) == (800 if seed == "0" else 400)
            assert epoch_steps(run_dir) == ([200, 400, 600, 800] if seed == "0" else [200, 400])
    log = (tmp_path / "sweep_logs" / "ppo_lag__Walker2d-v4__0.log").read_text()
    assert "--resume" in log and "epoch 4/4 step 800" in log


def test_sigterm_stops_the_runs_at_a_checkpoint_and_a_rerun_completes_the_grid(tmp_path):
    # three runs of ten epochs, two at a time: stopped once both have logged their first epoch
    flags = (
        "--scripts ppo_lag --env-ids Walker2d-v4 --seeds 0 1 2 --total-timesteps 2000 --steps-per-epoch "
        "200 --num-envs 2"
    ).split()
    logs = [tmp_path / "sweep_logs" / f"ppo_lag__Walker2d-v4__{seed}.log" for seed in (0, 1, 2)]
    proc = subprocess.Popen(
        sweep_command(*flags, "--workers", "2", out_dir=tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while sum(log.exists() and "epoch 1/" in log.read_text() for log in logs) < 2:
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    sent = time.time()
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143 and time.time() - sent < 30, stdout + stderr
    lines = progress_lines(stdout)
    assert len(lines) == 2 and all(line["code"] == "0" and line["stopped"] for line in lines), stdout
    assert stderr.strip().splitlines()[-1].startswith("sweep.py: stopped by SIGTERM: 2 runs stopped")
    assert "1 not started" in stderr
    stopped = run_dirs(tmp_path)
    assert len(stopped) == 2 and not logs[2].exists()
    steps = {}
    for run_dir in stopped:
        seed = run_dir.name.split("__")[2]
        steps[seed] = global_step(run_dir)
        assert steps[seed] % 200 == 0 and 200 <= steps[seed] < 2000
        assert f"last good checkpoint (step {steps[seed]})" in logs[int(seed)].read_text()

    # as if a run of seed 2 had died before its first checkpoint: left alone, seed 2 starts fresh
    stale = tmp_path / "runs" / "Walker2d-v4__ppo_lag__2__1"
    stale.mkdir()
    result = sweep(*flags, "--workers", "3", out_dir=tmp_path)  # three at a time only to be quicker
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted((line["seed"], line["resumed"], line["code"]) for line in progress_lines(result.stdout)) == [
        *sorted((seed, str(step), "0") for seed, step in steps.items()),
        ("2", None, "0"),
    ]
    finished = run_dirs(tmp_path)
    assert len(finished) == 4 and set(stopped) < set(finished) and stale in finished and not any(stale.iterdir())
    for run_dir in set(finished) - {stale}:
        assert global_step(run_dir) == 2000
        assert epoch_steps(run_dir) == list(range(200, 2001, 200))


def test_ray_backend_runs_and_skips_on_a_local_ray_instance(tmp_path):
    if importlib.util.find_spec("ray") is None:
        pytest.skip("ray is not installed (it is in requirements.txt)")
    flags = [*"--backend ray --scripts ppo_lag --env-ids Walker2d-v4 --seeds 0 1 --workers 2".split(), *TINY]
    result = sweep(*flags, out_dir=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = progress_lines(result.stdout)
    assert sorted((line["seed"], line["code"], line["resumed"]) for line in lines) == [
        ("0", "0", None),
        ("1", "0", None),
    ]
    assert [global_step(p) for p in run_dirs(tmp_path)] == [400, 400]
    before = folder_state(tmp_path)
    again = sweep(*flags, out_dir=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert [(line["seed"], line["finished"]) for line in progress_lines(again.stdout)] == [("0", "400"), ("1", "400")]
    assert folder_state(tmp_path) == before


def test_failing_run_does_not_stop_the_others(tmp_path):
    # one worker and the failing run first in the grid: the good run must still start and finish
    result = sweep(
        "--scripts",
        "ppo_lag",
        "--env-ids",
        "NoSuchEnv-v0",
        "Walker2d-v4",
        "--seeds",
        "3",
        "--workers",
        "1",
        "--total-timesteps",
        "200",
        "--steps-per-epoch",
        "200",
        "--num-envs",
        "2",
        out_dir=tmp_path,
    )
    assert result.returncode != 0
    lines = progress_lines(result.stdout)
    assert [(line["env_id"], line["code"]) for line in lines] == [("NoSuchEnv-v0", "1"), ("Walker2d-v4", "0")]
    assert "NoSuchEnv-v0" in lines[0]["error"]  # the run's own error message is shown
    (run_dir,) = run_dirs(tmp_path)
    assert run_dir.name.startswith("Walker2d-v4__ppo_lag__3__")
    stderr = result.stderr.strip().splitlines()
    assert len(stderr) == 1 and stderr[0].startswith("sweep.py: error: 1 of 2 runs failed")


def test_exp_name_suffix_names_runs_and_logs_apart(tmp_path):
    result = sweep(
        "--scripts",
        "trpo_lag",
        "--env-ids",
        "Walker2d-v4",
        "--seeds",
        "0",
        "--exp-name-suffix",
        "pid",
        "--lagrangian",
        "pid",
        *TINY,
        out_dir=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (run_dir,) = run_dirs(tmp_path)
    assert run_dir.name.startswith("Walker2d-v4__trpo_lag_pid__0__")
    log = (tmp_path / "sweep_logs" / "trpo_lag_pid__Walker2d-v4__0.log").read_text()
    assert "--lagrangian pid" in log.splitlines()[0] and "epoch 2/2 step 400" in log


def test_ray_backend_without_ray_is_a_one_line_error(tmp_path):
    # `import ray` fails where sys.modules maps it to None, installed or not
    argv = sweep_command(
        "--backend", "ray", "--scripts", "ppo_lag", "--env-ids", "Walker2d-v4", "--seeds", "0", *TINY, out_dir=tmp_path
    )[1:]
    hide_ray = (
        f"import runpy, sys; sys.modules['ray'] = None; sys.argv = {argv!r}; "
        "runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    result = subprocess.run([sys.executable, "-c", hide_ray], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    stderr = result.stderr.strip().splitlines()
    assert len(stderr) == 1 and "needs the optional package ray" in stderr[0], result.stderr
    assert not (tmp_path / "runs").exists()


def test_grid_names_each_point_by_its_values_resumes_and_skips(tmp_path):
    # two grid points of one script; then a larger budget resumes both in their folders; then both are skipped
    flags = (
        "--scripts trpo_lag_shapo --env-ids Walker2d-v4 --seeds 0 --workers 2 --exp-name-suffix pid "
        "--grid delta-down=0,1e-4 --steps-per-epoch 200 --num-envs 2 --lagrangian pid"
    ).split()
    result = sweep(*flags, "--total-timesteps", "400", out_dir=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    names = ["trpo_lag_shapo_pid-delta_down=0", "trpo_lag_shapo_pid-delta_down=1e-4"]
    folders = run_dirs(tmp_path)
    assert [p.name.rsplit("__", 1)[0] for p in folders] == [f"Walker2d-v4__{name}__0" for name in names]
    assert [torch.load(p / "checkpoint.pt", weights_only=False)["args"]["delta_down"] for p in folders] == [0.0, 1e-4]
    assert result.stdout.startswith("sweep: 2 runs (1 scripts x 1 envs x 1 seeds x 2 grid points)")
    assert sorted(line["script"] for line in progress_lines(result.stdout)) == [
        "trpo_lag_shapo-delta_down=0",
        "trpo_lag_shapo-delta_down=1e-4",
    ]
    log = (tmp_path / "sweep_logs" / f"{names[1]}__Walker2d-v4__0.log").read_text()
    assert "--delta-down 1e-4" in log.splitlines()[0] and f"--exp-name {names[1]}" in log.splitlines()[0]

    longer = sweep(*flags, "--total-timesteps", "600", out_dir=tmp_path)
    assert longer.returncode == 0, longer.stdout + longer.stderr
    assert [(line["resumed"], line["code"]) for line in progress_lines(longer.stdout)] == [("400", "0")] * 2
    assert run_dirs(tmp_path) == folders and [global_step(p) for p in folders] == [600, 600]
    again = sweep(*flags, "--total-timesteps", "600", out_dir=tmp_path)
    assert [line["finished"] for line in progress_lines(again.stdout)] == ["600", "600"], again.stdout + again.stderr


def test_grid_points_on_the_ray_backend_resume_in_their_folders(tmp_path):
    if importlib.util.find_spec("ray") is None:
        pytest.skip("ray is not installed (it is in requirements.txt)")
    flags = (
        "--backend ray --scripts ppo_lag --env-ids Walker2d-v4 --seeds 1 --workers 2 --grid "
        "gamma=0.9,0.99 --steps-per-epoch 200 --num-envs 2"
    ).split()
    result = sweep(*flags, "--total-timesteps", "200", out_dir=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    folders = run_dirs(tmp_path)
    assert sorted(p.name.rsplit("__", 1)[0] for p in folders) == [
        "Walker2d-v4__ppo_lag-gamma=0.99__1",  # "9" sorts before "_"
        "Walker2d-v4__ppo_lag-gamma=0.9__1",
    ]
    again = sweep(*flags, "--total-timesteps", "400", out_dir=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert sorted((line["script"], line["resumed"]) for line in progress_lines(again.stdout)) == [
        ("ppo_lag-gamma=0.9", "200"),
        ("ppo_lag-gamma=0.99", "200"),
    ]
    assert run_dirs(tmp_path) == folders and [global_step(p) for p in folders] == [400, 400]


@pytest.mark.parametrize(
    "name, script, suffix, settings",
    [
        ("ppo_lag", "ppo_lag", "", {}),
        (
            "trpo_lag_shapo-delta_down=1e-4-critic_sam_rho=0",
            "trpo_lag_shapo",
            "",
            {"delta-down": "1e-4", "critic-sam-rho": "0"},
        ),
        # a suffix with '-', a value with '-' inside, a negative value
        (
            "trpo_lag_shapo_a-b-pessimism_schedule=sqrt-epoch-cost_limit=-1",
            "trpo_lag_shapo",
            "a-b",
            {"pessimism-schedule": "sqrt-epoch", "cost-limit": "-1"},
        ),
    ],
)
def test_exp_name_of_a_grid_point_splits_back(name, script, suffix, settings):
    job = sweep_module.Job(script, "Walker2d-v4", 0, tuple(settings.items()))
    assert sweep_module.exp_name(job, suffix) == name
    assert sweep_module.split_exp_name(name) == (f"{script}_{suffix}" if suffix else script, settings)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--grid"], "--grid needs at least one FLAG=V1,V2,..."),
        (["--grid", "seed=1,2"], "--seed is set by the sweep for each run and cannot be in --grid"),
        (
            ["--scripts", "trpo_lag_shapo", "--grid", "delta-down=0,1e-4", "--delta-down", "0"],
            "--delta-down is both in --grid and passed through",
        ),
        (["--scripts", "ppo_lag", "--grid", "delta-down=0"], "--grid: --delta-down is not a flag of ppo_lag"),
        (["--scripts", "trpo_lag_shapo", "--grid", "delta-down"], "--grid takes FLAG=V1,V2,..."),
        (["--grid", "delta-down=1e-4,a__b"], "values take letters, digits, '.', '+' and '-' only, got 'a__b'"),
        (["--grid", "delta-down=0,0"], "--grid delta-down has duplicate values"),
        (["--grid", "delta-down=0", "delta_down=1"], "--grid names delta-down twice"),
        (["--grid", "total-timesteps=1e3"], "--total-timesteps takes positive whole numbers"),
        (["--scripts", "ppo_lagg"], "unknown script 'ppo_lagg'"),
        (["--seeds"], "--seeds needs at least one value"),
        (["--workers", "0"], "--workers must be at least 1"),
        (["--seed", "1"], "--seed is set by the sweep"),
        (["--exp-name", "mine"], "--exp-name is set by the sweep"),
        (["--save-model"], "--save-model is set by the sweep"),
        (["--resume", "runs/x/checkpoint.pt"], "--resume is set by the sweep"),
        (["--total-timesteps", "1e6"], "--total-timesteps takes a positive whole number"),
        (["--exp-name-suffix", "a__b"], "--exp-name-suffix takes letters, digits and '-' only"),
    ],
)
def test_bad_input_is_a_one_line_error(flags, message, tmp_path):
    result = sweep(*flags, out_dir=tmp_path)
    assert result.returncode != 0
    stderr = result.stderr.strip().splitlines()
    assert len(stderr) == 1 and message in stderr[0], result.stderr
    assert result.stdout == "" and not (tmp_path / "runs").exists()
