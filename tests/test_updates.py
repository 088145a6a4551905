"""The pieces of an epoch's update against independent computations (spec §2-3): make_batch's advantages
and targets, PPO's clipped surrogate, its KL early stop and its learning-rate decay, and the order within
an epoch (the Lagrange multiplier is updated first, and the batch and the policy use its new value)."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from test_advantages import naive_gae

from conftest import SCRIPTS, load, synthetic_batch


@pytest.mark.parametrize("name", SCRIPTS)
def test_make_batch_against_a_per_episode_computation(name):
    """GAE per episode piece (naive_gae), targets = advantage + V, A_r standardised with the unbiased std,
    A_c only centred, A = (A_r - lambda A_c) / (1 + lambda); everything flattened time-major, as make_batch does."""
    module = load(name)
    rng = np.random.default_rng(4)
    steps, envs, obs_dim, lam = 30, 3, 4, 0.7
    terminated = np.zeros((steps, envs), dtype=bool)
    truncated = np.zeros((steps, envs), dtype=bool)
    terminated[[7, 20], 0], truncated[12, 1] = True, True
    # as a rollout gives them: the state step t reached is the next step's observation, except where an episode ended
    # (a final observation on truncation, anything on termination: it is not used) and after the last step
    states = rng.normal(size=(steps + 1, envs, obs_dim))
    obs, next_obs = states[:-1], states[1:].copy()
    next_obs[terminated | truncated] = rng.normal(size=((terminated | truncated).sum(), obs_dim))
    data = {
        key: torch.tensor(value, dtype=torch.float32)
        for key, value in {
            "obs": obs,
            "act": rng.normal(size=(steps, envs, 2)),
            "logp": rng.normal(size=(steps, envs)),
            "next_obs": next_obs,
            "reward": rng.normal(size=(steps, envs)),
            "cost": rng.integers(0, 2, size=(steps, envs)),
            "terminated": terminated,
            "done": terminated | truncated,
        }.items()
    }
    torch.manual_seed(0)
    critics = {"reward": module.mlp(obs_dim, 1), "cost": module.mlp(obs_dim, 1)}
    args = module.Args()
    batch = module.make_batch(data, critics["reward"], critics["cost"], lam, args)

    expected = {}
    for name_, critic in critics.items():
        with torch.no_grad():
            values = critic(data["obs"]).squeeze(-1).double().numpy()
            next_values = critic(data["next_obs"]).squeeze(-1).double().numpy()
        rewards = data[name_].double().numpy()
        advantages = np.zeros((steps, envs))
        for env in range(envs):
            start = 0
            for t in range(steps):
                if terminated[t, env] or truncated[t, env] or t == steps - 1:
                    last = 0.0 if terminated[t, env] else next_values[t, env]
                    piece = (rewards[start : t + 1, env], values[start : t + 1, env], last)
                    advantages[start : t + 1, env] = naive_gae([piece], args.gamma, args.gae_lambda)[0]
                    start = t + 1
        expected[name_] = advantages.reshape(-1)
        np.testing.assert_allclose(
            batch[f"target_{name_}"].numpy(), (advantages + values).reshape(-1), rtol=1e-4, atol=1e-4
        )
    a_r = (expected["reward"] - expected["reward"].mean()) / (expected["reward"].std(ddof=1) + 1e-8)
    a_c = expected["cost"] - expected["cost"].mean()
    np.testing.assert_allclose(batch["adv"].numpy(), (a_r - lam * a_c) / (1 + lam), rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(batch["obs"].numpy(), obs.reshape(-1, obs_dim).astype(np.float32))
    np.testing.assert_array_equal(batch["logp"].numpy(), data["logp"].numpy().reshape(-1))


@pytest.mark.parametrize("name", ("ppo_lag", "ppo_lag_shapo"))
def test_clipped_surrogate_by_hand(name):
    """min(r A, clip(r, 0.8, 1.2) A) per sample, and no gradient where the clip is active."""
    module = load(name)
    ratio = torch.tensor([1.5, 0.5, 1.1, 0.9, 1.5, 0.5])
    adv = torch.tensor([2.0, 2.0, -1.0, -1.0, -3.0, -3.0])
    # by hand: r > 1.2 with A > 0 -> 1.2 A; r < 0.8 with A > 0 -> r A; inside -> r A; r > 1.2 with A < 0 -> r A;
    # r < 0.8 with A < 0 -> 0.8 A
    by_hand = [1.2 * 2.0, 0.5 * 2.0, 1.1 * -1.0, 0.9 * -1.0, 1.5 * -3.0, 0.8 * -3.0]
    logp = torch.zeros(6, requires_grad=True)
    dist = SimpleNamespace(log_prob=lambda act: (logp + ratio.log()).unsqueeze(-1))
    surrogate = module.ppo_surrogate(dist, torch.zeros(6, 1), torch.zeros(6), adv, 0.2)
    assert surrogate.item() == pytest.approx(sum(by_hand) / 6, rel=1e-6)
    (grad,) = torch.autograd.grad(surrogate, logp)
    clipped = torch.tensor([True, False, False, False, False, True])
    assert torch.all(grad[clipped] == 0) and torch.all(grad[~clipped] != 0)
    torch.testing.assert_close(grad[~clipped], (ratio * adv)[~clipped] / 6)


def gaussian_kl(mean0, std0, mean1, std1):
    """Closed-form KL(N(mean0, std0) || N(mean1, std1)) per dimension, in NumPy."""
    return np.log(std1 / std0) + (std0**2 + (mean0 - mean1) ** 2) / (2 * std1**2) - 0.5


@pytest.mark.parametrize("name", ("ppo_lag", "ppo_lag_shapo"))
@pytest.mark.parametrize("target_kl, passes", [(1e-12, 1), (1e6, 4)])
def test_ppo_stops_after_the_pass_whose_kl_exceeds_the_target(name, target_kl, passes):
    """A target no pass can stay under stops after the first pass, one no pass reaches runs them all; the reported
    KL is the mean over states of KL(pi_old || pi) summed over action dimensions, computed here in closed form."""
    module = load(name)
    actor, data = synthetic_batch(module, obs_dim=3, act_dim=2, batch=64, hidden=(8,), dtype=torch.float32)
    with torch.no_grad():
        before = actor(data["obs"])
        mean0, std0 = before.loc.numpy().copy(), before.scale.numpy().copy()
    critics = [module.mlp(3, 1), module.mlp(3, 1)]
    agent = SimpleNamespace(
        actor=actor,
        reward_critic=critics[0],
        cost_critic=critics[1],
        optimizer=torch.optim.Adam([*actor.parameters(), *critics[0].parameters(), *critics[1].parameters()], lr=1e-3),
    )
    batch = {**data, "target_reward": torch.randn(64), "target_cost": torch.randn(64)}
    args = module.Args(update_epochs=4, minibatch_size=16, target_kl=target_kl)
    stats = module.ppo_update(agent, batch, args, SimpleNamespace(signal=None), *([1e-5] if "shapo" in name else []))
    assert stats["losses/update_epochs"] == passes
    with torch.no_grad():
        after = actor(data["obs"])
    kl = gaussian_kl(*(np.float64(x) for x in (mean0, std0, after.loc.numpy(), after.scale.numpy()))).sum(-1).mean()
    assert stats["losses/approx_kl"] == pytest.approx(kl, rel=2e-3) and kl > 0  # float32 KL of a small step


def record_updates(module, monkeypatch):
    """Wrap the script's update to record, at each call, the actor's learning rate (PPO), the lambda the batch was
    built with (from its advantages) and the multiplier's value at that moment."""
    calls, true_make_batch = [], module.make_batch
    is_ppo = hasattr(module, "ppo_update")
    true_update = module.ppo_update if is_ppo else module.trpo_update

    def make_batch(data, reward_critic, cost_critic, lam, args):
        calls.append({"batch_lambda": lam})
        return true_make_batch(data, reward_critic, cost_critic, lam, args)

    def update(agent_or_actor, *rest):
        if is_ppo:
            calls[-1]["lr"] = agent_or_actor.optimizer.param_groups[0]["lr"]
            calls[-1]["lambda_at_update"] = agent_or_actor.lagrange.multiplier
        return true_update(agent_or_actor, *rest)

    monkeypatch.setattr(module, "make_batch", make_batch)
    monkeypatch.setattr(module, "ppo_update" if is_ppo else "trpo_update", update)
    return calls


@pytest.mark.parametrize("name", ("ppo_lag", "trpo_lag"))
def test_multiplier_is_updated_before_the_policy_each_epoch(name, tmp_path, monkeypatch):
    """Walker2d falls in every episode, so with cost limit 0 lambda rises every epoch: the batch (and so the policy
    update) of epoch k uses the multiplier after epoch k's own update, the value logged for that epoch."""
    module = load(name)
    monkeypatch.chdir(tmp_path)
    calls = record_updates(module, monkeypatch)
    agent = module.main(
        module.Args(
            env_id="Walker2d-v4",
            num_envs=2,
            steps_per_epoch=200,
            total_timesteps=600,
            cost_limit=0.0,
            **({"update_epochs": 2} if name == "ppo_lag" else {}),
        )
    )
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (run_dir,) = (tmp_path / "runs").iterdir()
    events = EventAccumulator(str(run_dir))
    events.Reload()
    logged = [event.value for event in events.Scalars("charts/lagrange_multiplier")]
    lambdas = [call["batch_lambda"] for call in calls]
    assert len(lambdas) == 3 and lambdas[0] > 0.001 and lambdas[0] < lambdas[1] < lambdas[2]
    assert lambdas == pytest.approx(logged, rel=1e-6) and lambdas[-1] == pytest.approx(agent.lagrange.multiplier)
    if name == "ppo_lag":
        assert [call["lambda_at_update"] for call in calls] == lambdas


def test_ppo_actor_learning_rate_decays_linearly_over_the_epochs(tmp_path, monkeypatch):
    """lr (1 - e / E) at epoch e = 0 .. E-1 (spec §3), and a resumed run goes on with its own epoch count."""
    module = load("ppo_lag")
    monkeypatch.chdir(tmp_path)
    calls = record_updates(module, monkeypatch)
    settings = dict(
        env_id="Walker2d-v4", num_envs=2, steps_per_epoch=200, update_epochs=1, learning_rate=1e-3, save_model=True
    )
    module.main(module.Args(**settings, total_timesteps=800))
    assert [call["lr"] for call in calls] == pytest.approx([1e-3, 0.75e-3, 0.5e-3, 0.25e-3])
    (run_dir,) = (tmp_path / "runs").iterdir()
    path = str(run_dir / "checkpoint.pt")
    longer = module.Args(**settings, total_timesteps=1000, resume=path)
    calls.clear()
    module.main(longer, module.load_checkpoint(path, longer))
    assert [call["lr"] for call in calls] == pytest.approx([1e-3 * (1 - 4 / 5)])
