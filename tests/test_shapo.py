"""The SHAPO perturbation (spec §5), critic SAM and the pessimism schedules (spec §8), and the SHAPO
scripts' equivalence to their twins at delta_Down = 0 and rho_critic = 0."""

import copy
import math
from functools import partial
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.stats
import torch

from conftest import SHAPO_SCRIPTS, at, explicit_fisher, flat, load, synthetic_batch


def shapo_problem(module, seed=0, batch=128):
    """A batch, the surrogate its base algorithm maximises, and the script's own (F + 0.1 I)^-1 solve."""
    actor, data = synthetic_batch(module, batch=batch, seed=seed)
    if hasattr(module, "trpo_surrogate"):
        surrogate = partial(module.trpo_surrogate, act=data["act"], logp_old=data["logp"], adv=data["adv"])
        fvp = module.fisher_vector_product_fn(actor, data["obs"], module.SHAPO_DAMPING)

        def solve(g):  # as trpo_update builds it
            x = module.conjugate_gradient(fvp, g, module.SHAPO_CG_ITERS)
            return x, x @ fvp(x)
    else:
        surrogate = partial(
            module.ppo_surrogate, act=data["act"], logp_old=data["logp"], adv=data["adv"], clip_coef=0.2
        )
        solve = module.damped_fisher_solve_fn(actor, data["obs"], module.SHAPO_DAMPING)
    return actor, data, surrogate, solve


def perturb(module, actor, data, surrogate, solve, delta_down, *options):
    """shapo_gradient on `data`: (L(theta0), g~, epsilon, diagnostics), epsilon read off the parameters at which
    the surrogate is evaluated the second time (theta0 + epsilon) minus those of the first (theta0)."""
    evaluated_at = []

    def recording_surrogate(dist):
        evaluated_at.append(flat(actor))
        return surrogate(dist)

    value, g_tilde, stats = module.shapo_gradient(
        actor,
        data["obs"],
        data["act"],
        data["adv"],
        actor(data["obs"]),
        recording_surrogate,
        solve,
        delta_down,
        *options,
    )
    assert len(evaluated_at) == 2
    return value, g_tilde, evaluated_at[1] - evaluated_at[0], stats


def exact_solve(matrix, g):
    x = torch.linalg.solve(matrix, g)
    return x, x @ matrix @ x


def value_and_gradient_at(actor, theta, obs, surrogate):
    """Independent evaluation on a copy of the actor whose parameters are set to `theta`."""
    other = copy.deepcopy(actor)
    torch.nn.utils.vector_to_parameters(theta.clone(), other.parameters())
    value = surrogate(other(obs))
    return value.item(), torch.cat([g.reshape(-1) for g in torch.autograd.grad(value, tuple(other.parameters()))])


@pytest.mark.parametrize("name", SHAPO_SCRIPTS)
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("delta_down", (1e-5, 1e-3))
def test_perturbation_lowers_the_surrogate_inside_the_kl_ball(name, seed, delta_down):
    module = load(name)
    actor, data, surrogate, solve = shapo_problem(module, seed)
    theta0, obs = flat(actor), data["obs"]
    adam = torch.optim.Adam(actor.parameters())
    value, g_tilde, epsilon, stats = perturb(module, actor, data, surrogate, solve, delta_down)

    assert torch.equal(flat(actor), theta0), "theta0 must be restored exactly"
    assert not adam.state, "the perturbation must leave no trace in an optimiser"
    value0, gradient0 = value_and_gradient_at(actor, theta0, obs, surrogate)
    assert value.item() == pytest.approx(value0, rel=1e-12), "the surrogate at theta0 is returned as it was"
    value_eps, gradient_eps = value_and_gradient_at(actor, theta0 + epsilon, obs, surrogate)
    assert epsilon.norm() > 0 and value_eps < value0, "the perturbation must go downhill on the surrogate"
    with torch.no_grad():
        kl = torch.distributions.kl_divergence(actor(obs), at(actor, theta0 + epsilon, obs)).mean().item()
    assert kl <= delta_down and stats["shapo/kl"] == pytest.approx(kl, rel=1e-6)
    assert stats["shapo/backtracks"] < 10, "the KL check should pass before the fallback here"
    torch.testing.assert_close(g_tilde, gradient_eps)
    assert not torch.allclose(g_tilde, gradient0)
    assert stats["shapo/cos_sim"] == pytest.approx(
        torch.cosine_similarity(gradient0, gradient_eps, dim=0).item(), abs=1e-9
    )
    assert stats["shapo/perturbation_norm"] == pytest.approx(epsilon.norm().item())


@pytest.mark.parametrize("name", SHAPO_SCRIPTS)
def test_perturbation_is_the_natural_gradient_step_to_the_ball_boundary(name):
    """With an exact solve, epsilon = -sqrt(2 delta / x^T (F + 0.1 I) x) x, x = (F + 0.1 I)^-1 g, with F
    built explicitly: on the quadratic model of the KL it sits on the ball's boundary, and it lowers the
    linearised surrogate the most among such steps."""
    module = load(name)
    actor, data, surrogate, _ = shapo_problem(module)
    damped = explicit_fisher(actor, data["obs"]) + 0.1 * torch.eye(flat(actor).numel(), dtype=torch.float64)
    delta_down = 1e-6
    _, _, epsilon, stats = perturb(module, actor, data, surrogate, lambda g: exact_solve(damped, g), delta_down)
    assert stats["shapo/backtracks"] == 0
    _, gradient0 = value_and_gradient_at(actor, flat(actor), data["obs"], surrogate)
    x = torch.linalg.solve(damped, gradient0)
    torch.testing.assert_close(epsilon, -math.sqrt(2 * delta_down / (x @ damped @ x)) * x, rtol=1e-7, atol=1e-12)
    assert 0.5 * (epsilon @ damped @ epsilon).item() == pytest.approx(delta_down, rel=1e-6)


@pytest.mark.parametrize("name", SHAPO_SCRIPTS)
def test_the_scripts_own_solve_gives_the_step_scale(name):
    """The solve's quadratic is x^T (F + 0.1 I) x with F built explicitly, as the release computes it
    (for TRPO's 10-iteration CG iterate that is not x^T g); epsilon's radius is built from it."""
    module = load(name)
    actor, data, surrogate, solve = shapo_problem(module, batch=32)
    damped = explicit_fisher(actor, data["obs"]) + 0.1 * torch.eye(flat(actor).numel(), dtype=torch.float64)
    _, gradient0 = value_and_gradient_at(actor, flat(actor), data["obs"], surrogate)
    x, curvature = solve(gradient0)
    assert curvature.item() == pytest.approx((x @ damped @ x).item(), rel=1e-8)
    _, _, epsilon, stats = perturb(module, actor, data, surrogate, solve, 1e-6)
    scale = 0.8 ** stats["shapo/backtracks"]
    torch.testing.assert_close(epsilon, -scale * math.sqrt(2e-6 / curvature.item()) * x, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("name", SHAPO_SCRIPTS)
def test_zero_radius_gives_exactly_the_plain_gradient(name):
    module = load(name)
    actor, data, surrogate, solve = shapo_problem(module)
    value, g_tilde, epsilon, stats = perturb(module, actor, data, surrogate, solve, 0.0)
    plain = torch.autograd.grad(surrogate(actor(data["obs"])), tuple(actor.parameters()))
    assert torch.equal(g_tilde, torch.cat([g.reshape(-1) for g in plain]))
    assert not value.requires_grad and value.item() == surrogate(actor(data["obs"])).item()
    assert epsilon.abs().max() == 0 and stats["shapo/kl"] == 0.0


@pytest.mark.parametrize("name", SHAPO_SCRIPTS)
def test_kl_fallback_when_no_backtrack_fits(name):
    """With 0 backtracking tries the fallback 0.1 epsilon is used (spec §5 step 4)."""
    module = load(name)
    runs = []
    for backtrack_steps in (10, 0):  # a fresh problem each: TRPO's Fisher product holds theta0's graph
        actor, data, surrogate, solve = shapo_problem(module)
        runs.append(perturb(module, actor, data, surrogate, solve, 1e-4, backtrack_steps))
    (_, _, full, _), (_, _, fallback, stats) = runs
    assert stats["shapo/backtracks"] == 0
    torch.testing.assert_close(fallback, 0.1 * full)


@pytest.mark.parametrize("name", SHAPO_SCRIPTS)
def test_critic_sam_step_matches_a_hand_computed_one(name):
    """spec §8 on a tiny critic: e = rho g / |g| with g the MSE's gradient, then the MSE's gradient at
    w + e plus the L2 term's gradient 2 c w at w; w itself is left exactly as it was."""
    module = load(name)
    torch.manual_seed(0)
    critic = module.mlp(3, 1, hidden=(4,)).double()
    obs, target, l2, rho = torch.randn(16, 3, dtype=torch.float64), torch.randn(16, dtype=torch.float64), 1e-3, 0.05
    w = flat(critic)

    def shaped(theta):
        pieces = theta.split([p.numel() for p in critic.parameters()])
        return {name: piece.view_as(p) for (name, p), piece in zip(critic.named_parameters(), pieces)}

    def mse(theta):
        return (torch.func.functional_call(critic, shaped(theta), (obs,)).squeeze(-1) - target).pow(2).mean()

    g = torch.func.grad(mse)(w)
    expected = torch.func.grad(mse)(w + rho * g / g.norm()) + 2 * l2 * w
    loss = module.sam_critic_loss(critic, obs, target, l2, rho)
    got = torch.cat([p.grad.reshape(-1) for p in critic.parameters()])
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    assert torch.equal(flat(critic), w)
    assert loss.item() == pytest.approx((mse(w) + l2 * w.pow(2).sum()).item(), rel=1e-12)


@pytest.mark.parametrize("name", SHAPO_SCRIPTS)
def test_critic_sam_at_zero_radius_is_the_plain_update_bit_for_bit(name):
    module = load(name)
    torch.manual_seed(1)
    critics = [module.mlp(3, 1) for _ in range(2)]
    critics[1].load_state_dict(critics[0].state_dict())
    obs, target = torch.randn(64, 3), torch.randn(64)
    module.critic_loss(critics[0], obs, target, 1e-3).backward()
    module.sam_critic_loss(critics[1], obs, target, 1e-3, 0.0)
    for p, q in zip(*(c.parameters() for c in critics)):
        assert torch.equal(p.grad, q.grad)


@pytest.mark.parametrize("name", SHAPO_SCRIPTS)
def test_pessimism_schedules(name):
    """spec §8: constant; delta_Down / sqrt(epoch + 1); Prop. 5's z_alpha^2 / (2 n_t A), z_alpha = Phi^-1(1 - alpha)."""
    module = load(name)
    constant = module.Args(delta_down=2e-5)
    assert [module.pessimism_radius(constant, epoch, 1000 * epoch + 1000, 2) for epoch in (0, 3)] == [2e-5, 2e-5]
    decay = module.Args(delta_down=2e-5, pessimism_schedule="sqrt-epoch")
    assert module.pessimism_radius(decay, 0, 20_000, 2) == 2e-5
    assert module.pessimism_radius(decay, 3, 80_000, 2) == pytest.approx(1e-5, rel=1e-12)
    prop5 = module.Args(pessimism_schedule="prop5", pessimism_alpha=0.05)
    z = 1.6448536269514722  # Phi^-1(0.95)
    assert module.pessimism_radius(prop5, 0, 20_000, 2) == pytest.approx(z**2 / (2 * 20_000 * 2), rel=1e-12)
    assert module.pessimism_radius(prop5, 9, 200_000, 6) == pytest.approx(z**2 / (2 * 200_000 * 6), rel=1e-12)


@pytest.mark.parametrize("name", SHAPO_SCRIPTS)
def test_one_epoch_at_zero_radius_matches_the_base_algorithm(name, tmp_path, monkeypatch):
    """Same seed, delta_Down = 0 and rho_critic = 0: the SHAPO script ends its epoch with exactly the
    parameters and Lagrange multiplier of its twin; the default delta_Down, or critic SAM, does not."""
    monkeypatch.chdir(tmp_path)
    shapo, vanilla = load(name), load(name.replace("_shapo", ""))
    # Walker2d falls often under a fresh policy, so with cost limit 0 the multiplier moves.
    settings = dict(env_id="Walker2d-v4", total_timesteps=400, steps_per_epoch=400, num_envs=2, cost_limit=0.0)
    base = vanilla.main(vanilla.Args(**settings))
    same = shapo.main(shapo.Args(**settings, delta_down=0.0))
    perturbed = shapo.main(shapo.Args(**settings))
    sam = shapo.main(shapo.Args(**settings, delta_down=0.0, critic_sam_rho=0.05))
    assert base.lagrange.multiplier > 0.001, "the multiplier should have risen"
    assert base.lagrange.multiplier == same.lagrange.multiplier
    for key in ("actor", "reward_critic", "cost_critic"):
        for p, q in zip(getattr(base, key).parameters(), getattr(same, key).parameters()):
            assert torch.equal(p, q), key
    assert not all(torch.equal(p, q) for p, q in zip(base.actor.parameters(), perturbed.actor.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(base.reward_critic.parameters(), sam.reward_critic.parameters()))


@pytest.mark.parametrize("name", SHAPO_SCRIPTS)
@pytest.mark.parametrize("alpha", (0.05, 0.2))
def test_prop5_radius_puts_the_linearised_objective_at_the_alpha_quantile(name, alpha):
    """Paper Prop. 5 in the code's units (spec §5): with delta_Down = pessimism_radius(prop5) and an undamped
    exact solve, g^T epsilon equals the alpha-quantile of g^T (theta - theta0) under the posterior
    theta ~ N(theta0, F_joint^-1 / n), F_joint the Fisher of an action's joint log-likelihood, built here as
    the average over states of the per-sample score outer products' expectation (1 / sigma^2 J^T J on the
    mean, 2 on each log std, summed over the action dimensions). The KL check may shrink epsilon by 0.8^k
    where the true KL exceeds its quadratic model; the quantile is that of the unshrunk step."""
    module = load(name)
    act_dim, n = 3, 50_000
    actor, data = synthetic_batch(module, obs_dim=4, act_dim=act_dim, batch=64, hidden=(4,), seed=3)
    surrogate = partial(
        module.trpo_surrogate if hasattr(module, "trpo_surrogate") else module.ppo_surrogate,
        act=data["act"],
        logp_old=data["logp"],
        adv=data["adv"],
        **({} if hasattr(module, "trpo_surrogate") else {"clip_coef": 0.2}),
    )
    jac = torch.autograd.functional.jacobian(lambda theta: at(actor, theta, data["obs"]).loc, flat(actor))  # [B, A, n]
    joint = torch.einsum("ban,bam,a->nm", jac, jac, actor.log_std.detach().exp() ** -2) / len(data["obs"])
    joint[:act_dim, :act_dim] += 2.0 * torch.eye(act_dim, dtype=torch.float64)  # log_std comes first in parameters()
    code_fisher = explicit_fisher(actor, data["obs"])  # the code's KL units: averaged over action dimensions
    delta = module.pessimism_radius(module.Args(pessimism_schedule="prop5", pessimism_alpha=alpha), 0, n, act_dim)
    _, gradient0 = value_and_gradient_at(actor, flat(actor), data["obs"], surrogate)
    _, _, epsilon, stats = perturb(module, actor, data, surrogate, lambda g: exact_solve(code_fisher, g), delta)
    assert stats["shapo/backtracks"] <= 1
    quantile = 0.8 ** stats["shapo/backtracks"] * torch.distributions.Normal(
        0.0, math.sqrt(gradient0 @ torch.linalg.solve(joint, gradient0) / n)
    ).icdf(torch.tensor(alpha, dtype=torch.float64))
    assert (gradient0 @ epsilon).item() == pytest.approx(quantile.item(), rel=1e-6)


@pytest.mark.parametrize("name", SHAPO_SCRIPTS)
def test_reweighting_statistics_against_scipy_and_numpy(name):
    """The reweighting diagnostics (spec §5) from log-probs and advantages, computed independently."""
    module = load(name)
    rng = np.random.default_rng(0)
    logp0, log_w, adv = rng.normal(-2, 1, 200), rng.normal(0, 0.01, 200), rng.normal(size=200)
    stats = module.reweighting_stats(*(torch.from_numpy(v) for v in (logp0, logp0 + log_w, adv)))
    negative = adv < 0
    assert stats["shapo/w_mean_negative_adv"] == pytest.approx(np.exp(log_w[negative]).mean(), rel=1e-12)
    assert stats["shapo/w_mean_positive_adv"] == pytest.approx(np.exp(log_w[adv > 0]).mean(), rel=1e-12)
    assert stats["shapo/adv_weighted_log_w"] == pytest.approx(np.mean(adv * log_w), rel=1e-12)
    expected = scipy.stats.spearmanr(np.exp(log_w[negative]), logp0[negative]).statistic
    assert stats["shapo/rank_corr_w_logp_negative_adv"] == pytest.approx(expected, rel=1e-12)
    only_positive = module.reweighting_stats(*(torch.from_numpy(v) for v in (logp0, logp0 + log_w, np.abs(adv))))
    assert set(only_positive) == {"shapo/adv_weighted_log_w", "shapo/w_mean_positive_adv"}


@pytest.mark.parametrize("name", SHAPO_SCRIPTS)
def test_advantage_weighted_log_w_is_g_dot_epsilon_to_first_order(name):
    """At pi_theta0 = pi_old, log w = grad log pi(theta0)^T epsilon + O(|epsilon|^2), so mean(A log w) = g^T epsilon,
    which is negative: the perturbation goes downhill on the surrogate. Logged by shapo_gradient itself."""
    module = load(name)
    for delta_down in (1e-6, 1e-8):  # a fresh problem each: TRPO's Fisher product holds theta0's graph
        actor, data, surrogate, solve = shapo_problem(module, seed=1)
        _, gradient0 = value_and_gradient_at(actor, flat(actor), data["obs"], surrogate)
        _, _, epsilon, stats = perturb(module, actor, data, surrogate, solve, delta_down)
        first_order = (gradient0 @ epsilon).item()
        assert first_order < 0 and stats["shapo/adv_weighted_log_w"] < 0
        assert stats["shapo/adv_weighted_log_w"] == pytest.approx(first_order, rel=30 * math.sqrt(delta_down))


def hand_g_tilde(actor, obs, surrogate, delta_down):
    """g~ computed without the script: x = (F + 0.1 I)^-1 g with F built explicitly, epsilon to the KL ball's edge
    (no backtracking needed: checked), and the gradient of the surrogate at theta0 + epsilon by autograd."""
    theta0 = flat(actor)
    _, g = value_and_gradient_at(actor, theta0, obs, surrogate)
    x, curvature = exact_solve(explicit_fisher(actor, obs) + 0.1 * torch.eye(theta0.numel(), dtype=theta0.dtype), g)
    epsilon = -math.sqrt(2.0 * delta_down / curvature) * x
    with torch.no_grad():
        kl = torch.distributions.kl_divergence(actor(obs), at(actor, theta0 + epsilon, obs)).mean().item()
    assert kl <= delta_down
    return g, value_and_gradient_at(actor, theta0 + epsilon, obs, surrogate)[1]


def test_shapo_ppo_step_descends_along_the_perturbed_gradient():
    """At delta_Down > 0 the actor's gradient that Adam receives in ppo_step is -g~, computed here by hand, and not
    -g: the update uses the gradient at the perturbed actor."""
    module = load("ppo_lag_shapo")
    actor, data, surrogate, _ = shapo_problem(module, seed=1, batch=64)
    critics = [module.mlp(3, 1).double(), module.mlp(3, 1).double()]
    g, g_tilde = hand_g_tilde(actor, data["obs"], surrogate, 1e-3)
    assert torch.nn.functional.cosine_similarity(g, g_tilde, dim=0) < 0.999  # a radius at which the two differ
    optimizer = torch.optim.Adam([*actor.parameters(), *critics[0].parameters(), *critics[1].parameters()])
    agent = SimpleNamespace(actor=actor, reward_critic=critics[0], cost_critic=critics[1], optimizer=optimizer)
    received = []
    optimizer.step = lambda: received.append(torch.cat([p.grad.reshape(-1) for p in actor.parameters()]))
    minibatch = {
        **data,
        "target_reward": torch.zeros(64, dtype=torch.float64),
        "target_cost": torch.zeros(64, dtype=torch.float64),
    }
    module.ppo_step(agent, minibatch, module.Args(max_grad_norm=1e9), 1e-3)
    torch.testing.assert_close(received[0], -g_tilde, rtol=1e-6, atol=1e-9)
    assert (received[0] + g).abs().max() > 100 * (received[0] + g_tilde).abs().max()


def test_shapo_trpo_step_is_the_natural_gradient_of_the_perturbed_gradient():
    """At delta_Down > 0 SHAPO-TRPO-Lag's full step is along (F + damping I)^-1 g~ with g~ computed here by hand;
    the line search then scales it (a tiny actor of 10 parameters, so that 10 CG iterations nearly solve it)."""
    module = load("trpo_lag_shapo")
    actor, data = synthetic_batch(module, obs_dim=2, act_dim=1, batch=64, hidden=(2,), seed=3)
    surrogate = partial(module.trpo_surrogate, act=data["act"], logp_old=data["logp"], adv=data["adv"])
    theta0 = flat(actor)
    assert theta0.numel() == 10
    g, g_tilde = hand_g_tilde(actor, data["obs"], surrogate, 1e-3)
    damped = explicit_fisher(actor, data["obs"]) + 0.1 * torch.eye(10, dtype=torch.float64)
    args = module.Args(cg_iters=10, target_kl=1e-3)
    update = module.trpo_update(actor, data, args, 1e-3)
    assert update["trpo/step_fraction"] > 0
    step = flat(actor) - theta0
    expected, plain = torch.linalg.solve(damped, g_tilde), torch.linalg.solve(damped, g)
    cosine = partial(torch.nn.functional.cosine_similarity, dim=0)
    # CG (10 iterations, OmniSafe's 1e-6 terms) solves both systems to about 1e-4; g's direction is 0.01 away
    assert cosine(step, expected) > 0.9995 and cosine(step, expected) - cosine(step, plain) > 0.005
