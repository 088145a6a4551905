"""Fisher-vector product, conjugate gradient, the exact damped-Fisher solve of SHAPO-PPO and the
TRPO step (spec §4, §7), against explicitly built matrices."""

import numpy as np
import pytest
import torch

from conftest import TRPO_SCRIPTS, explicit_fisher, flat, load, synthetic_batch


@pytest.mark.parametrize("name", TRPO_SCRIPTS)
def test_fisher_vector_product_equals_explicit_fisher(name):
    module = load(name)
    actor, batch = synthetic_batch(module)
    fisher = explicit_fisher(actor, batch["obs"])
    fvp = module.fisher_vector_product_fn(actor, batch["obs"], damping=0.1)
    for seed in range(3):
        v = torch.randn(fisher.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        torch.testing.assert_close(fvp(v), fisher @ v + 0.1 * v, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", TRPO_SCRIPTS)
def test_conjugate_gradient_solves_the_damped_fisher_system(name):
    module = load(name)
    actor, batch = synthetic_batch(module)
    fisher = explicit_fisher(actor, batch["obs"]) + 0.1 * torch.eye(flat(actor).numel(), dtype=torch.float64)
    fvp = module.fisher_vector_product_fn(actor, batch["obs"], damping=0.1)
    b = torch.randn(fisher.shape[0], dtype=torch.float64)
    x = module.conjugate_gradient(fvp, b, iters=200, residual_tol=1e-20, eps=0.0)  # plain CG converges to the solution
    torch.testing.assert_close(x, torch.linalg.solve(fisher, b), rtol=1e-6, atol=1e-8)
    # few iterations already reduce the residual, and more iterations reduce it further
    r5 = (b - fisher @ module.conjugate_gradient(fvp, b, iters=5)).norm()
    r15 = (b - fisher @ module.conjugate_gradient(fvp, b, iters=15)).norm()
    assert r15 < r5 < b.norm()


@pytest.mark.parametrize("name", TRPO_SCRIPTS)
def test_conjugate_gradient_on_a_known_matrix(name):
    module = load(name)
    a = torch.tensor([[4.0, 1.0, 0.0], [1.0, 3.0, 0.5], [0.0, 0.5, 2.0]], dtype=torch.float64)
    b = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    x = module.conjugate_gradient(lambda v: a @ v, b, iters=3, residual_tol=0.0, eps=0.0)  # exact in n steps
    torch.testing.assert_close(x, torch.linalg.solve(a, b))


def reference_conjugate_gradient(a: np.ndarray, b: np.ndarray, iters: int, eps=1e-6, tol=1e-10) -> np.ndarray:
    """The recurrence of OmniSafe's and the release's CG (spec §4), written out in float64 NumPy."""
    x, r = np.zeros_like(b), b.copy()
    p, rr = r.copy(), r @ r
    for _ in range(iters):
        ap = a @ p
        step = rr / (p @ ap + eps)
        x, r = x + step * p, r - step * ap
        rr_next = r @ r
        if np.sqrt(rr_next) < tol:
            break
        p, rr = r + rr_next / (rr + eps) * p, rr_next
    return x


@pytest.mark.parametrize("name", TRPO_SCRIPTS)
@pytest.mark.parametrize("scale", (1.0, 1e-3))
def test_conjugate_gradient_is_the_sources_recurrence(name, scale):
    """On a random SPD system, at a scale where the 1e-6 terms matter (scale 1e-3) and where they do not."""
    module = load(name)
    rng = np.random.default_rng(0)
    m = rng.normal(size=(30, 30))
    a, b = m @ m.T / 30 + 0.1 * np.eye(30), scale * rng.normal(size=30)
    x = module.conjugate_gradient(lambda v: torch.from_numpy(a) @ v, torch.from_numpy(b), iters=10)
    np.testing.assert_allclose(x.numpy(), reference_conjugate_gradient(a, b, 10), rtol=1e-10, atol=1e-14)
    plain = module.conjugate_gradient(lambda v: torch.from_numpy(a) @ v, torch.from_numpy(b), iters=10, eps=0.0)
    assert (scale == 1.0) == np.allclose(x.numpy(), plain.numpy(), rtol=1e-3), "the 1e-6 terms matter for small b only"


@pytest.mark.parametrize("name", TRPO_SCRIPTS)
def test_zero_gradient_gives_a_zero_step(name):
    """All-equal advantages give g = 0: x = 0 and a zero (finite) TRPO step, where plain CG divides 0 by 0."""
    module = load(name)
    actor, batch = synthetic_batch(module, dtype=torch.float32)
    fvp = module.fisher_vector_product_fn(actor, batch["obs"], damping=0.1)
    x = module.conjugate_gradient(fvp, torch.zeros(flat(actor).numel()), iters=15)
    assert torch.equal(x, torch.zeros_like(x))
    before = flat(actor)
    update = module.trpo_update(
        actor, {**batch, "adv": torch.zeros(len(batch["obs"]))}, module.Args(), *([1e-5] if "shapo" in name else [])
    )
    assert torch.equal(flat(actor), before) and update["losses/approx_kl"] == 0.0


@pytest.mark.parametrize("hidden, batch_size, act_dim", [((8,), 64, 2), ((16, 16), 64, 3), ((64, 64), 20, 6)])
def test_exact_damped_fisher_solve_equals_explicit_inverse(hidden, batch_size, act_dim):
    """SHAPO-PPO's Woodbury solve (spec §7, our reading [I]) against (F + 0.1 I)^-1 g with F built
    explicitly, including a minibatch whose B A is far below the number of parameters."""
    module = load("ppo_lag_shapo")
    actor, batch = synthetic_batch(module, obs_dim=5, act_dim=act_dim, batch=batch_size, hidden=hidden, seed=2)
    damped = explicit_fisher(actor, batch["obs"]) + 0.1 * torch.eye(flat(actor).numel(), dtype=torch.float64)
    solve = module.damped_fisher_solve_fn(actor, batch["obs"], 0.1)
    for seed in range(2):
        g = torch.randn(damped.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        x, curvature = solve(g)
        torch.testing.assert_close(x, torch.linalg.solve(damped, g), rtol=1e-8, atol=1e-10)
        assert curvature.item() == pytest.approx((x @ damped @ x).item(), rel=1e-8)


@pytest.mark.parametrize("activation", (torch.nn.ReLU, torch.nn.ELU))
def test_exact_solve_refuses_an_actor_it_was_not_written_for(activation):
    """The solve backpropagates tanh's derivative by hand: with another activation the explicit Fisher differs from
    what it would compute, and it raises TypeError instead of returning a wrong x."""
    module = load("ppo_lag_shapo")
    actor, batch = synthetic_batch(module, obs_dim=5, act_dim=2, batch=16, hidden=(8,), seed=2)
    tanh_fisher = explicit_fisher(actor, batch["obs"])
    actor.mean[1] = activation()
    assert not torch.allclose(explicit_fisher(actor, batch["obs"]), tanh_fisher)  # the swap matters
    with pytest.raises(TypeError, match="Linear, Tanh, ..., Linear"):
        module.damped_fisher_solve_fn(actor, batch["obs"], 0.1)


@pytest.mark.parametrize("name", TRPO_SCRIPTS)
@pytest.mark.parametrize("seed", range(3))
def test_trpo_step_meets_its_kl_bound_and_improves_the_surrogate(name, seed):
    module = load(name)
    actor, batch = synthetic_batch(module, batch=256, seed=seed, dtype=torch.float32)
    args = module.Args(target_kl=0.01)
    before = flat(actor)
    with torch.no_grad():
        old_dist = actor(batch["obs"])
        surrogate_before = module.trpo_surrogate(old_dist, batch["act"], batch["logp"], batch["adv"])
    update = module.trpo_update(actor, batch, args, *([0.0] if "shapo" in name else []))
    with torch.no_grad():
        new_dist = actor(batch["obs"])
        kl = module.mean_kl(old_dist, new_dist).item()
        surrogate_after = module.trpo_surrogate(new_dist, batch["act"], batch["logp"], batch["adv"])
    assert update["trpo/step_fraction"] > 0, "the line search rejected every step on an easy problem"
    assert not torch.equal(before, flat(actor))
    assert 0 < kl <= args.target_kl
    assert surrogate_after > surrogate_before
    assert update["losses/approx_kl"] == pytest.approx(kl, rel=1e-4)


@pytest.mark.parametrize("name", TRPO_SCRIPTS)
def test_trpo_line_search_keeps_the_actor_when_every_step_is_worse(name, monkeypatch):
    module = load(name)
    actor, batch = synthetic_batch(module, batch=64, dtype=torch.float32)
    before = flat(actor)
    true_surrogate = module.trpo_surrogate

    def worse_at_every_candidate(*args, **kwargs):  # candidates are evaluated without autograd
        value = true_surrogate(*args, **kwargs)
        return value if torch.is_grad_enabled() else value - 1.0

    monkeypatch.setattr(module, "trpo_surrogate", worse_at_every_candidate)
    update = module.trpo_update(actor, batch, module.Args(), *([0.0] if "shapo" in name else []))
    assert update["trpo/step_fraction"] == 0.0
    assert update["trpo/backtracks"] == module.Args().line_search_steps - 1
    assert torch.equal(before, flat(actor))
