"""sweep.py end to end: a real tiny local sweep, a failing run among good ones, the missing optional
Ray backend, and bad input."""

import importlib.util
import re
import subprocess
import sys

import pytest
from conftest import ROOT

TINY = ["--total-timesteps", "400", "--steps-per-epoch", "200", "--num-envs", "2"]
PROGRESS = re.compile(r"^\[(\d+)/(\d+)\] (\S+) (\S+) seed (\d+): exit (-?\d+) in \d+\.\d s( \| .+)?$")


def sweep(*flags, out_dir):
    return subprocess.run(
        [sys.executable, str(ROOT / "sweep.py"), "--out-dir", str(out_dir), *flags],
        capture_output=True, text=True, timeout=300,
    )


def progress_lines(stdout):
    return [PROGRESS.match(line).groups() for line in stdout.splitlines() if PROGRESS.match(line)]


def test_local_sweep_runs_the_whole_grid(tmp_path):
    scripts = ("ppo_lag", "trpo_lag_shapo")
    result = sweep("--scripts", *scripts, "--env-ids", "Walker2d-v4", "--seeds", "0", "1", "--workers", "2", *TINY,
                   out_dir=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    runs = sorted(p.name.rsplit("__", 1)[0] for p in (tmp_path / "runs").iterdir())
    assert runs == [f"Walker2d-v4__{s}__{seed}" for s in scripts for seed in (0, 1)]
    assert all(any(p.glob("events.out.tfevents.*")) for p in (tmp_path / "runs").iterdir())
    lines = progress_lines(result.stdout)
    assert len(lines) == 4
    assert [int(k) for k, *_ in lines] == [1, 2, 3, 4] and {n for _, n, *_ in lines} == {"4"}
    assert sorted((s, env, int(seed), code) for _, _, s, env, seed, code, _ in lines) == [
        (s, "Walker2d-v4", seed, "0") for s in scripts for seed in (0, 1)
    ]
    # the pass-through flags reached every run: two epochs of 200 steps
    for script in scripts:
        for seed in (0, 1):
            log = (tmp_path / "sweep_logs" / f"{script}__Walker2d-v4__{seed}.log").read_text()
            assert "epoch 2/2 step 400" in log
    assert result.stdout.strip().splitlines()[-1].startswith("sweep: all 4 runs succeeded")


def test_failing_run_does_not_stop_the_others(tmp_path):
    # one worker and the failing run first in the grid: the good run must still start and finish
    result = sweep("--scripts", "ppo_lag", "--env-ids", "NoSuchEnv-v0", "Walker2d-v4", "--seeds", "3",
                   "--workers", "1", "--total-timesteps", "200", "--steps-per-epoch", "200", "--num-envs", "2",
                   out_dir=tmp_path)
    assert result.returncode != 0
    lines = progress_lines(result.stdout)
    assert [(env, code) for _, _, _, env, _, code, _ in lines] == [("NoSuchEnv-v0", "1"), ("Walker2d-v4", "0")]
    assert "NoSuchEnv-v0" in lines[0][-1]  # the run's own error message is shown
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert run_dir.name.startswith("Walker2d-v4__ppo_lag__3__")
    stderr = result.stderr.strip().splitlines()
    assert len(stderr) == 1 and stderr[0].startswith("sweep.py: error: 1 of 2 runs failed")


@pytest.mark.skipif(importlib.util.find_spec("ray") is not None, reason="ray is installed")
def test_exp_name_suffix_names_runs_and_logs_apart(tmp_path):
    result = sweep("--scripts", "trpo_lag", "--env-ids", "Walker2d-v4", "--seeds", "0", "--exp-name-suffix", "pid",
                   "--lagrangian", "pid", *TINY, out_dir=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert run_dir.name.startswith("Walker2d-v4__trpo_lag_pid__0__")
    log = (tmp_path / "sweep_logs" / "trpo_lag_pid__Walker2d-v4__0.log").read_text()
    assert "--lagrangian pid" in log.splitlines()[0] and "epoch 2/2 step 400" in log


def test_ray_backend_without_ray_is_a_one_line_error(tmp_path):
    result = sweep("--backend", "ray", "--scripts", "ppo_lag", "--env-ids", "Walker2d-v4", "--seeds", "0", *TINY,
                   out_dir=tmp_path)
    assert result.returncode != 0
    stderr = result.stderr.strip().splitlines()
    assert len(stderr) == 1 and "ray" in stderr[0] and "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--scripts", "ppo_lagg"], "unknown script 'ppo_lagg'"),
        (["--seeds"], "--seeds needs at least one value"),
        (["--workers", "0"], "--workers must be at least 1"),
        (["--seed", "1"], "--seed is set by the sweep"),
        (["--exp-name", "mine"], "--exp-name is set by the sweep"),
        (["--exp-name-suffix", "a__b"], "--exp-name-suffix takes letters, digits and '-' only"),
    ],
)
def test_bad_input_is_a_one_line_error(flags, message, tmp_path):
    result = sweep(*flags, out_dir=tmp_path)
    assert result.returncode != 0
    stderr = result.stderr.strip().splitlines()
    assert len(stderr) == 1 and message in stderr[0], result.stderr
    assert result.stdout == "" and not (tmp_path / "runs").exists()
