"""Environment setup and the rollout on real tasks: exact episode accounting, fall costs, the shared
observation normalisation and its final observations, fast resets (spec §2, §11)."""

import subprocess
import sys
from functools import partial
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import ROOT, load

module = load("ppo_lag")  # environment and rollout code is identical in the four scripts (tests/test_scripts.py)


def setup(env_id, num_envs=2, max_episode_steps=None, seed=0):
    """What main builds before its first epoch: envs, the agent's actor and normalizer, and the first observations."""
    module.set_skybox(plain=True)
    envs = module.safety_gymnasium.vector.SafetySyncVectorEnv(
        [partial(module.make_env, env_id, max_episode_steps)] * num_envs
    )
    torch.manual_seed(seed)
    obs_dim, act_dim = envs.single_observation_space.shape[0], envs.single_action_space.shape[0]
    agent = SimpleNamespace(actor=module.Actor(obs_dim, act_dim), normalizer=module.ObsNormalizer(shape=(obs_dim,)))
    obs, _ = envs.reset(seed=seed)
    agent.normalizer.update(obs)
    return envs, agent, agent.normalizer(obs)


def test_fall_cost_is_paid_on_the_step_that_ends_the_episode():
    """Walker2d-v4 under a fresh policy falls within a few dozen steps: each step costs exactly
    `terminated`, and each episode's cost is 1 if it ended by a fall, else 0."""
    envs, agent, obs = setup("Walker2d-v4", max_episode_steps=60)
    data, _, episodes = module.rollout(envs, agent, obs, np.zeros((3, 2)), 300, stop=SimpleNamespace(signal=None))
    envs.close()
    assert torch.equal(data["cost"], data["terminated"]) and data["terminated"].sum() > 0
    assert len(episodes) == int(data["done"].sum())
    for _, _, cost, length in episodes:
        assert cost in (0.0, 1.0) and 1 <= length <= 60
    assert sum(cost for _, _, cost, _ in episodes) == data["terminated"].sum().item()


@pytest.mark.parametrize("env_id", ["Walker2d-v4", "SafetyHumanoidVelocity-v1"])
def test_actions_are_rescaled_but_not_clipped(env_id):
    """An action beyond [-1, 1] reaches the task scaled, not clipped, as in OmniSafe and SafePO: MuJoCo
    clamps the control, so the next state equals that of the in-range action a / |a| scaled to the
    action box, while the task's control cost is charged on the action as given."""
    outcomes = []
    for scale in (1.0, 3.0):
        env = module.make_env(env_id)
        env.reset(seed=0)
        action = scale * np.ones(env.action_space.shape, dtype=np.float32)
        obs, reward, *_ = env.step(action)
        low, high = env.unwrapped.action_space.low, env.unwrapped.action_space.high
        expected_ctrl_cost = env.unwrapped._ctrl_cost_weight * np.sum(
            np.square(low + (action + 1.0) * (high - low) / 2)
        )
        outcomes.append((obs, reward, expected_ctrl_cost))
        env.close()
    (obs_in, reward_in, ctrl_in), (obs_out, reward_out, ctrl_out) = outcomes
    np.testing.assert_allclose(obs_out, obs_in)
    assert ctrl_out > ctrl_in
    np.testing.assert_allclose(reward_in - reward_out, ctrl_out - ctrl_in, rtol=1e-5)


def test_episode_statistics_equal_a_replay_on_a_single_env():
    """SafetyPointGoal1-v0, 40-step episodes straddling the epoch ends: the return and cost the rollout
    reports for each episode (what is logged) equal the sums of the rewards and costs of the same
    episode replayed step by step on a plain environment with the same seed and actions, its last
    step included; the running sums carry over from one rollout (epoch) to the next."""
    seed, horizon, num_envs = 0, 40, 2
    envs, agent, obs = setup("SafetyPointGoal1-v0", num_envs, horizon, seed)
    with torch.no_grad():  # drive straight ahead: env 0 enters a hazard on its first episode's last steps
        agent.actor.mean[-1].weight.zero_(), agent.actor.mean[-1].bias.copy_(torch.tensor([1.0, 0.0]))
        agent.actor.log_std.fill_(-20.0)
    sums, episodes, actions = np.zeros((3, num_envs)), [], []
    for _ in range(4):  # 4 epochs of 25 steps
        data, obs, ended = module.rollout(envs, agent, obs, sums, 25, stop=SimpleNamespace(signal=None))
        actions.append(data["act"])
        episodes += [(len(actions) * 25 - 25 + t, *rest) for t, *rest in ended]
    envs.close()
    actions = torch.cat(actions).numpy()
    assert [t for t, *_ in episodes] == [39, 39, 79, 79]
    for env_index in range(num_envs):
        env = module.make_env("SafetyPointGoal1-v0", max_episode_steps=horizon)
        env.reset(seed=seed + env_index)
        rewards, costs = [], []
        for action in actions[:horizon, env_index]:
            _, reward, cost, terminated, truncated, _ = env.step(action)
            rewards.append(reward), costs.append(cost)
        env.close()
        assert truncated and len(costs) == horizon
        _, episode_return, episode_cost, length = episodes[env_index]
        assert (episode_return, episode_cost, length) == pytest.approx(
            (sum(rewards), sum(costs), horizon), rel=1e-12, abs=1e-12
        )
        if env_index == 0:
            assert costs[-1] > 0 and episode_cost > 0, "the episode's last step must carry cost here"


def test_normalisation_is_shared_and_final_observations_get_the_same_transform():
    envs, agent, obs = setup("Walker2d-v4", max_episode_steps=5)
    normalizer, raw = agent.normalizer, []
    inner_step = envs.step

    def recording_step(actions):
        result = inner_step(actions)
        raw.append(
            (
                result[0].copy(),
                [o.copy() if o is not None else None for o in result[5]["final_observation"]]
                if "final_observation" in result[5]
                else None,
            )
        )
        return result

    envs.step = recording_step
    assert normalizer.count == pytest.approx(2, abs=1e-3)  # one statistic for both envs
    data, _, _ = module.rollout(envs, agent, obs, np.zeros((3, 2)), 5, stop=SimpleNamespace(signal=None))
    envs.close()
    assert normalizer.count == pytest.approx(12, abs=1e-3), "final observations must not update the statistics"
    assert data["terminated"].sum() == 0 and data["done"][-1].all(), "both episodes truncated at step 5"
    raw_obs, raw_final = raw[-1]
    scale = np.sqrt(normalizer.var + 1e-8)
    for i in range(2):
        expected = (raw_final[i] - normalizer.mean) / scale
        np.testing.assert_allclose(data["next_obs"][-1, i].numpy(), expected, rtol=1e-5, atol=1e-5)
        assert not np.allclose(raw_final[i], raw_obs[i]), "the reset observation must not be used to bootstrap"


def test_unsupported_env_ids_are_rejected_with_the_supported_ones_named():
    for env_id in ("SafetyPointGoal1Vision-v0", "CartPole-v1", "NoSuchEnv-v0", "SafetyPointGoal1Debug-v0"):
        with pytest.raises(ValueError, match="SafetyPointGoal1-v0.*Ant-v4"):
            module.check_args(module.Args(env_id=env_id))
    for env_id in ("SafetyPointGoal1-v0", "SafetyPointButton1-v0", "SafetyHopperVelocity-v1", "Ant-v4", "Walker2d-v4"):
        module.check_args(module.Args(env_id=env_id))


FAST_RESET_ROLLOUT = """
import sys, numpy as np
sys.path.insert(0, {root!r})
import ppo_lag as module
module.set_skybox(plain={plain})
env = module.make_env("SafetyPointGoal1-v0", max_episode_steps=40)
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


def test_plain_skybox_leaves_observations_rewards_and_costs_unchanged(tmp_path):
    """Each variant in its own process (the skybox is chosen for a whole process)."""
    results = {}
    for plain in (False, True):
        out = tmp_path / f"plain_{plain}.npz"
        subprocess.run(
            [sys.executable, "-c", FAST_RESET_ROLLOUT.format(root=str(ROOT), plain=plain, out=str(out))],
            check=True,
            timeout=600,
        )
        results[plain] = np.load(out)
    assert results[True]["skybox_width"] == 32 and results[False]["skybox_width"] > 32, "the skybox must differ"
    real, plain = results[False]["rows"], results[True]["rows"]
    assert real.shape == (134, 62) and real[:, -1].sum() > 0
    np.testing.assert_array_equal(plain, real)
