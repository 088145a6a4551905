"""What users of other RL libraries bring: their own environments (any Gymnasium task that reports a cost) and
Weights & Biases tracking (--track, here offline)."""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from conftest import ROOT, load


class ToyCostEnv(gym.Env):
    """A 1-D walk: the action moves the state, the reward is -|state|, and a step with |state| > 1 costs 1."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float64)
    action_space = gym.spaces.Box(-0.5, 0.5, (1,), np.float32)

    def __init__(self, report_cost: bool = True, render_mode=None):  # render_mode: Gymnasium's convention
        self.report_cost, self.render_mode = report_cost, render_mode

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.state = self.np_random.uniform(-1.5, 1.5)
        return np.array([self.state, 0.0]), {}

    def step(self, action):
        self.state += float(np.clip(action[0], -0.5, 0.5))
        info = {"cost": float(abs(self.state) > 1.0)} if self.report_cost else {}
        return np.array([self.state, 1.0]), -abs(self.state), False, False, info


gym.register("ToyCost-v0", entry_point=ToyCostEnv, max_episode_steps=20)
gym.register("ToyNoCost-v0", entry_point=ToyCostEnv, max_episode_steps=20, kwargs={"report_cost": False})


@pytest.mark.parametrize("name", ("ppo_lag_shapo", "trpo_lag"))
def test_a_custom_gymnasium_task_with_a_cost_trains(name, tmp_path, monkeypatch):
    """A task registered by the user trains; its episodic costs are the sums of info["cost"] over the episode."""
    module = load(name)
    monkeypatch.chdir(tmp_path)
    flags = {"update_epochs": 2} if name.startswith("ppo") else {"critic_update_epochs": 2}
    args = module.Args(env_id="ToyCost-v0", num_envs=2, steps_per_epoch=80, total_timesteps=160, **flags)
    module.check_args(args)
    costs = []
    true_rollout = module.rollout

    def recording_rollout(*rollout_args):
        data, obs, episodes = true_rollout(*rollout_args)
        costs.append((data["cost"].sum().item(), sum(episode.cost for episode in episodes), len(episodes)))
        return data, obs, episodes

    monkeypatch.setattr(module, "rollout", recording_rollout)
    module.main(args)
    assert len(costs) == 2 and all(count == 4 for _, _, count in costs)  # 2 envs x 40 steps, episodes of 20 steps
    assert [rollout_cost for rollout_cost, _, _ in costs] == [episode_cost for _, episode_cost, _ in costs]
    assert sum(cost for cost, _, _ in costs) > 0  # starts beyond |1| cost something


def test_a_custom_task_is_named_by_its_module_on_the_command_line(tmp_path):
    """--env-id MODULE:ID imports the module that registers the task (Gymnasium's own syntax)."""
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "trpo_lag.py"),
            "--env-id",
            "test_ecosystem:ToyCost-v0",
            "--num-envs",
            "1",
            "--steps-per-epoch",
            "40",
            "--total-timesteps",
            "40",
            "--critic-update-epochs",
            "1",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("epoch 1/1 step 40 | episodes 2")


@pytest.mark.parametrize(
    "env_id, message",
    [
        ("ToyNoCost-v0", re.escape("ToyNoCost-v0 reports no cost: its step must return info['cost']")),
        ("CartPole-v1", "needs a flat Box observation space and a Box action space"),
        ("no_such_module:Toy-v0", "No module named .no_such_module."),
    ],
)
def test_a_task_without_a_cost_or_of_another_kind_gets_one_line(env_id, message):
    module = load("ppo_lag")
    with pytest.raises(ValueError, match=message):
        module.check_args(module.Args(env_id=env_id))


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="wandb is an optional extra")
def test_track_writes_an_offline_wandb_run_with_the_config_and_a_metric(tmp_path):
    """--track in offline mode: W&B's run folder holds the flags as its config and the logged metrics (in its
    record log); a resumed run goes to the same W&B run id (the run folder's name)."""
    flags = [
        "--env-id",
        "Walker2d-v4",
        "--num-envs",
        "2",
        "--steps-per-epoch",
        "100",
        "--critic-update-epochs",
        "1",
        "--track",
        "--wandb-project-name",
        "test",
        "--save-model",
    ]
    environment = {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true"}
    first = subprocess.run(
        [sys.executable, str(ROOT / "trpo_lag.py"), *flags, "--total-timesteps", "100"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=environment,
    )
    assert first.returncode == 0, first.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    resumed = subprocess.run(
        [
            sys.executable,
            str(ROOT / "trpo_lag.py"),
            *flags,
            "--total-timesteps",
            "200",
            "--resume",
            str(run_dir / "checkpoint.pt"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=environment,
    )
    assert resumed.returncode == 0, resumed.stderr
    offline = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len(offline) == 2
    run_id = run_dir.name.replace(".", "-")
    for folder in offline:
        assert folder.name.endswith(run_id)
        (records,) = folder.glob(f"run-{run_id}.wandb")  # W&B's record log: the config, then the history
        content = records.read_bytes()
        assert b"cost_limit" in content and b"Walker2d-v4" in content  # the flags, as the config
        assert b"charts/lagrange_multiplier" in content  # a metric mirrored from TensorBoard
