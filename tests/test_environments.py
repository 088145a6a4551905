"""Environment setup on real tasks: exact episode accounting, fall costs, the shared observation
normalisation and its final observations (SPEC §2)."""

import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, load

module = load("ppo_lag")  # the environment code is identical in the four scripts (tests/test_scripts.py)


def vector_env(env_id, num_envs=2, max_episode_steps=None):
    return module.make_vector_env(
        module.Args(env_id=env_id, num_envs=num_envs, vector_env="sync", max_episode_steps=max_episode_steps)
    )


def test_fall_cost_is_counted_on_the_step_that_ends_the_episode():
    """Walker2d-v4 under random actions falls within a few dozen steps: every terminated episode has
    cost exactly 1 (paid on its last step), every truncated one cost 0."""
    envs = vector_env("Walker2d-v4", max_episode_steps=60)
    tracker = module.EpisodeTracker(envs.num_envs)
    envs.reset(seed=0)
    rng = np.random.default_rng(0)
    seen = {"terminated": 0, "truncated": 0}
    for _ in range(300):
        _, reward, cost, terminated, truncated, _ = envs.step(rng.uniform(-1, 1, (2, 6)))
        assert np.all(cost == terminated.astype(float))
        finished = tracker.step(reward, cost, terminated | truncated)
        for (_, episode_cost, length), ended_by_fall in zip(finished, terminated[terminated | truncated]):
            assert episode_cost == (1.0 if ended_by_fall else 0.0)
            assert 1 <= length <= 60
            seen["terminated" if ended_by_fall else "truncated"] += 1
    envs.close()
    assert seen["terminated"] > 0


def test_episode_statistics_equal_a_replay_on_a_single_env():
    """SafetyPointGoal1-v0: the episodic return and cost the tracker reports (what is logged) equal
    the sums of per-step rewards and costs of the same episode replayed step by step on a plain
    environment with the same seed and actions, the episode's last step included."""
    # with seed 0, driving straight ahead enters a hazard from step 35 on, so the first episode
    # of env 0 pays cost on its last step (40)
    seed, horizon, num_envs = 0, 40, 2
    envs = vector_env("SafetyPointGoal1-v0", num_envs=num_envs, max_episode_steps=horizon)
    tracker = module.EpisodeTracker(num_envs)
    envs.reset(seed=seed)
    actions = np.tile([1.0, 0.0], (2 * horizon, num_envs, 1))
    logged = []
    for action in actions:
        _, reward, cost, terminated, truncated, _ = envs.step(action)
        logged += [(i, stats) for i, stats in zip(np.flatnonzero(terminated | truncated), tracker.step(reward, cost, terminated | truncated))]
    envs.close()
    assert len(logged) == 2 * num_envs

    for env_index in range(num_envs):
        env = module.make_env("SafetyPointGoal1-v0", max_episode_steps=horizon)()
        env.reset(seed=seed + env_index)
        episode = [stats for i, stats in logged if i == env_index][0]
        rewards, costs = [], []
        for action in actions[:horizon, env_index]:
            _, reward, cost, terminated, truncated, _ = env.step(action)
            rewards.append(reward)
            costs.append(cost)
        env.close()
        assert truncated and len(costs) == horizon
        assert episode == pytest.approx((sum(rewards), sum(costs), horizon), rel=1e-12, abs=1e-12)
        if env_index == 0:
            assert costs[-1] > 0 and episode[1] > 0, "the episode's last step must carry cost here"


def test_normalisation_is_shared_and_final_observations_get_the_same_transform():
    envs = vector_env("Walker2d-v4", max_episode_steps=5)
    raw_steps = []
    inner_step = envs.env.step

    def recording_step(actions):
        result = inner_step(actions)
        raw_steps.append((result[0].copy(), [None if o is None else o.copy() for o in result[5].get("final_observation", [None] * 2)]))
        return result

    envs.env.step = recording_step
    envs.reset(seed=0)
    assert envs.obs_rms.count == pytest.approx(2, abs=1e-3)  # one statistic for both envs
    for step in range(5):
        obs, _, _, terminated, truncated, info = envs.step(np.zeros((2, 6)))
        raw_obs, raw_final = raw_steps[-1]
        scale = np.sqrt(envs.obs_rms.var + envs.epsilon)
        np.testing.assert_allclose(obs, (raw_obs - envs.obs_rms.mean) / scale)
        assert envs.obs_rms.count == pytest.approx(2 * (step + 2), abs=1e-3), "final observations must not update the statistics"
    assert truncated.all()
    for i in range(2):
        np.testing.assert_allclose(info["final_observation"][i], (raw_final[i] - envs.obs_rms.mean) / scale)
    envs.close()


def test_unsupported_env_ids_are_rejected_with_the_supported_ones_named():
    for env_id in ("SafetyPointGoal1Vision-v0", "CartPole-v1", "NoSuchEnv-v0", "SafetyPointGoal1Debug-v0"):
        with pytest.raises(ValueError, match="SafetyPointGoal1-v0.*Ant-v4"):
            module.check_env_id(env_id)
    for env_id in ("SafetyPointGoal1-v0", "SafetyPointButton1-v0", "SafetyHopperVelocity-v1", "Ant-v4", "Walker2d-v4"):
        module.check_env_id(env_id)


FAST_RESET_ROLLOUT = """
import sys, numpy as np
sys.path.insert(0, {root!r})
import ppo_lag as module
env = module.make_env("SafetyPointGoal1-v0", max_episode_steps=40, fast_reset={fast})()
obs, _ = env.reset(seed=0)
rows = [np.concatenate([obs, [0.0, 0.0]])]
for step in range(130):  # three resets; straight ahead meets a hazard (cost) in the first episode
    obs, reward, cost, terminated, truncated, _ = env.step(np.array([1.0, 0.3 * np.sin(step)]))
    rows.append(np.concatenate([obs, [reward, cost]]))
    if terminated or truncated:
        obs, _ = env.reset()
        rows.append(np.concatenate([obs, [0.0, 0.0]]))
model = env.unwrapped.task.world.model
skybox = int(np.flatnonzero(model.tex_type == 2)[0])  # mjTEXTURE_SKYBOX
np.savez({out!r}, rows=np.array(rows), skybox_width=model.tex_width[skybox])
"""


def test_fast_reset_leaves_observations_rewards_and_costs_unchanged(tmp_path):
    """Each variant in its own process: the plain skybox is switched on for a whole process."""
    results = {}
    for fast in (False, True):
        out = tmp_path / f"fast_{fast}.npz"
        code = FAST_RESET_ROLLOUT.format(root=str(ROOT), fast=fast, out=str(out))
        subprocess.run([sys.executable, "-c", code], check=True, timeout=600)
        results[fast] = np.load(out)
    assert results[True]["skybox_width"] == 32 and results[False]["skybox_width"] > 32, "the skybox must differ"
    normal, fast = results[False]["rows"], results[True]["rows"]
    assert normal.shape == (134, 62) and normal[:, -1].sum() > 0
    np.testing.assert_array_equal(fast, normal)
