"""GAE with truncation and termination, and the Lagrange multiplier (spec §1-2)."""

import numpy as np
import pytest
import torch

from conftest import SCRIPTS, TRPO_SCRIPTS, load


def naive_gae(episodes, gamma, lam):
    """Reference by definition, one episode piece at a time:
    A_t = sum_k (gamma lam)^k delta_{t+k}, delta_t = r_t + gamma V(s_{t+1}) - V(s_t), where the value
    after the piece's last step is 0 on termination, V(final observation) on truncation and
    V(next observation) when the epoch ends mid-episode."""
    out = []
    for rewards, values, last_value in episodes:
        n = len(rewards)
        next_values = list(values[1:]) + [last_value]
        deltas = [rewards[t] + gamma * next_values[t] - values[t] for t in range(n)]
        out.append([sum((gamma * lam) ** k * deltas[t + k] for k in range(n - t)) for t in range(n)])
    return out


@pytest.mark.parametrize("name", SCRIPTS)
def test_gae_matches_a_naive_loop_with_truncation_and_termination(name):
    module = load(name)
    gamma, lam = 0.99, 0.95
    rng = np.random.default_rng(0)
    num_steps, num_envs = 40, 3
    # env 0: terminates at t=9 and t=25; env 1: truncated at t=14 (final obs valued 7.5); env 2: never ends
    terminated = np.zeros((num_steps, num_envs), dtype=bool)
    truncated = np.zeros((num_steps, num_envs), dtype=bool)
    terminated[[9, 25], 0] = True
    truncated[14, 1] = True
    terminated[39, 1] = truncated[39, 1] = True  # both flags at once: termination wins
    rewards = rng.normal(size=(num_steps, num_envs))
    values = rng.normal(size=(num_steps, num_envs))
    # V of the state each step reached: the next row, except where the episode ended there
    next_values = np.vstack([values[1:], rng.normal(size=(1, num_envs))])
    next_values[14, 1] = 7.5  # V(normalised final observation) of the truncated episode
    next_values[terminated] = 123.0  # must be ignored

    got = module.compute_gae(
        torch.tensor(rewards),
        torch.tensor(values),
        torch.tensor(next_values),
        torch.tensor(terminated, dtype=torch.float64),
        torch.tensor(terminated | truncated, dtype=torch.float64),
        gamma,
        lam,
    ).numpy()

    for env in range(num_envs):
        ends = [t for t in range(num_steps) if terminated[t, env] or truncated[t, env]]
        starts = [0] + [t + 1 for t in ends]
        stops = ends + [num_steps - 1]
        pieces = []
        for start, stop in zip(starts, stops):
            if start > stop:
                continue
            if terminated[stop, env]:
                last = 0.0
            else:
                last = next_values[stop, env]
            pieces.append((rewards[start : stop + 1, env], values[start : stop + 1, env], last))
        expected = np.concatenate(naive_gae(pieces, gamma, lam))
        np.testing.assert_allclose(got[:, env], expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", SCRIPTS)
def test_lagrange_multiplier_rises_above_and_falls_below_the_cost_limit(name):
    module = load(name)
    rising = module.Lagrange(cost_limit=25.0, init=0.001, lr=0.035)
    falling = module.Lagrange(cost_limit=25.0, init=0.5, lr=0.035)
    for _ in range(5):
        before = rising.multiplier, falling.multiplier
        rising.update(40.0)  # J_c > d
        falling.update(10.0)  # J_c < d
        assert rising.multiplier > before[0] and falling.multiplier < before[1]


@pytest.mark.parametrize("name", SCRIPTS)
def test_lagrange_multiplier_never_goes_below_zero(name):
    module = load(name)
    lagrange = module.Lagrange(cost_limit=25.0, init=0.001, lr=0.035)
    for _ in range(50):
        lagrange.update(0.0)
        assert lagrange.multiplier >= 0.0
    assert lagrange.multiplier == 0.0, "far below the limit the multiplier is clamped at exactly 0"
    lagrange.update(25.0)  # J_c == d: zero gradient
    assert lagrange.multiplier == 0.0


@pytest.mark.parametrize("name", TRPO_SCRIPTS)
def test_pid_lagrangian_follows_its_update_rule(name):
    """Three steps computed by hand from the PID rule of spec §8 (kp 0.1, ki 0.01, kd 0.01,
    EMA 0.95, derivative against the cost EMA of d_delay = 2 updates ago)."""
    module = load(name)
    pid = module.PIDLagrange(cost_limit=25.0, init=0.001, kp=0.1, ki=0.01, kd=0.01, d_delay=2)
    integral, delta_p, cost_ema, history = 0.001, 0.0, 0.0, [0.0]
    for cost in (45.0, 65.0, 5.0):
        integral = max(0.0, integral + 0.01 * (cost - 25.0))
        delta_p = 0.95 * delta_p + 0.05 * (cost - 25.0)
        cost_ema = 0.95 * cost_ema + 0.05 * cost
        expected = max(0.0, 0.1 * delta_p + integral + 0.01 * max(0.0, cost_ema - history[0]))
        history = (history + [cost_ema])[-2:]
        pid.update(cost)
        assert pid.multiplier == pytest.approx(expected, rel=1e-12)
    assert pid.multiplier > 0.3  # 0.2 + 0.4 - 0.2 integrated, plus P and D


@pytest.mark.parametrize("name", TRPO_SCRIPTS)
def test_pid_lagrangian_rises_falls_and_stays_non_negative(name):
    module = load(name)
    pid = module.PIDLagrange(cost_limit=25.0, init=0.001, kp=0.1, ki=0.01, kd=0.01)
    values = []
    for _ in range(10):
        pid.update(60.0)
        values.append(pid.multiplier)
    assert all(b > a for a, b in zip(values, values[1:]))
    for _ in range(200):
        pid.update(0.0)
        assert pid.multiplier >= 0.0 and pid.integral >= 0.0
    assert pid.multiplier == 0.0
    # the state survives a checkpoint round trip
    pid.update(40.0)
    clone = module.PIDLagrange(cost_limit=25.0, init=0.5, kp=0.1, ki=0.01, kd=0.01)
    clone.load_state_dict(pid.state_dict())
    for cost in (30.0, 50.0, 10.0):
        pid.update(cost), clone.update(cost)
        assert clone.multiplier == pid.multiplier


@pytest.mark.parametrize("name", SCRIPTS)
def test_cost_estimate_is_safepos_fifty_episode_window_across_epochs(name):
    """J_c (spec §2): at each episode end the mean of the last 50 episode costs, then the mean of those values
    over the epoch; the window carries over between epochs, and an epoch without an ended episode gives None."""
    module = load(name)
    costs = [float(c) for c in np.random.default_rng(3).integers(0, 60, size=130)]
    epochs = [costs[:30], costs[30:31], [], costs[31:130]]  # the window fills in epoch 4 and then slides
    window, seen = [], []
    for episode_costs in epochs:
        got = module.cost_estimate(window, episode_costs)
        ends = []
        for cost in episode_costs:
            seen.append(cost)
            ends.append(sum(seen[-50:]) / len(seen[-50:]))
        assert got is None if not ends else got == pytest.approx(sum(ends) / len(ends), rel=1e-12)
        assert window == seen[-50:]
    # by hand: two epochs of a 3-episode window, costs 0, 30, 60 then 90
    window = []
    assert module.cost_estimate(window, [0.0, 30.0, 60.0], size=3) == pytest.approx((0 + 15 + 30) / 3)
    assert module.cost_estimate(window, [90.0], size=3) == pytest.approx(60.0)
