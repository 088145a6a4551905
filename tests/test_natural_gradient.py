"""Fisher-vector product, conjugate gradient and the TRPO step (SPEC §4)."""

import pytest
import torch
from conftest import NATURAL_GRADIENT_SCRIPTS, load, synthetic_batch


def explicit_fisher(module, actor, obs):
    """F of mean KL over states and action dimensions, built from autograd Jacobians of the mean.

    For a diagonal Gaussian, the Hessian of KL(N(mu0, s0) || N(mu, s)) at (mu, s) = (mu0, s0) is
    1/s^2 in mu and 2 in log s per action dimension, so
    F = 1/(B A) sum_{b, a} [ J_mu[b, a]^T J_mu[b, a] / s_a^2 + 2 e_{log s_a} e_{log s_a}^T ].
    """
    theta = module.flat_params(actor)

    def mean_of(flat):
        params = module.params_from_flat(actor, flat)
        return torch.func.functional_call(actor, params, (obs,)).loc  # [B, A]

    jac = torch.autograd.functional.jacobian(mean_of, theta)  # [B, A, n]
    batch, act_dim, n = jac.shape
    std = actor.log_std.detach().exp()
    fisher = torch.einsum("ban,bam,a->nm", jac, jac, 1.0 / std**2)
    offsets = torch.cumsum(torch.tensor([0] + [p.numel() for p in actor.parameters()]), 0)
    names = [name for name, _ in actor.named_parameters()]
    start = int(offsets[names.index("log_std")])
    idx = torch.arange(start, start + act_dim)
    fisher[idx, idx] += 2.0 * batch
    return fisher / (batch * act_dim)


@pytest.mark.parametrize("name", NATURAL_GRADIENT_SCRIPTS)
def test_fisher_vector_product_equals_explicit_fisher(name):
    module = load(name)
    actor, batch = synthetic_batch(module)
    fisher = explicit_fisher(module, actor, batch["obs"])
    fvp = module.fisher_vector_product_fn(actor, batch["obs"], damping=0.1)
    n = fisher.shape[0]
    for seed in range(3):
        v = torch.randn(n, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        torch.testing.assert_close(fvp(v), fisher @ v + 0.1 * v, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", NATURAL_GRADIENT_SCRIPTS)
@pytest.mark.parametrize("hidden", [(8,), (16, 16)])
def test_fisher_vector_product_is_the_hessian_of_the_mean_kl(name, hidden):
    """SPEC §4 defines F as the Hessian of the mean KL at theta_old; autograd's double backward
    computes it with no knowledge of the closed form the scripts use."""
    module = load(name)
    actor, batch = synthetic_batch(module, obs_dim=5, act_dim=3, batch=40, hidden=hidden, seed=1)
    obs, theta = batch["obs"], module.flat_params(actor)
    with torch.no_grad():
        fixed = actor(obs)

    def kl_at(flat):
        return module.mean_kl(fixed, torch.func.functional_call(actor, module.params_from_flat(actor, flat), (obs,)))

    fvp = module.fisher_vector_product_fn(actor, obs, damping=0.0)
    for seed in range(3):
        v = torch.randn(theta.numel(), dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        _, hessian_v = torch.autograd.functional.hvp(kl_at, theta, v)
        torch.testing.assert_close(fvp(v), hessian_v, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", NATURAL_GRADIENT_SCRIPTS)
def test_fisher_vector_product_rejects_an_actor_it_cannot_differentiate(name):
    module = load(name)
    actor, batch = synthetic_batch(module)
    actor.mean[1] = torch.nn.ReLU()
    with pytest.raises(TypeError, match="Linear, Tanh"):
        module.fisher_vector_product_fn(actor, batch["obs"], damping=0.1)


@pytest.mark.parametrize("name", NATURAL_GRADIENT_SCRIPTS)
def test_conjugate_gradient_solves_the_damped_fisher_system(name):
    module = load(name)
    actor, batch = synthetic_batch(module)
    fisher = explicit_fisher(module, actor, batch["obs"]) + 0.1 * torch.eye(module.flat_params(actor).numel(), dtype=torch.float64)
    fvp = module.fisher_vector_product_fn(actor, batch["obs"], damping=0.1)
    b = torch.randn(fisher.shape[0], dtype=torch.float64)
    x = module.conjugate_gradient(fvp, b, iters=200, residual_tol=1e-20)
    torch.testing.assert_close(x, torch.linalg.solve(fisher, b), rtol=1e-6, atol=1e-8)
    # few iterations already reduce the residual, and more iterations reduce it further
    r5 = (b - fisher @ module.conjugate_gradient(fvp, b, iters=5)).norm()
    r15 = (b - fisher @ module.conjugate_gradient(fvp, b, iters=15)).norm()
    assert r15 < r5 < b.norm()


@pytest.mark.parametrize("name", NATURAL_GRADIENT_SCRIPTS)
def test_conjugate_gradient_on_a_known_matrix(name):
    module = load(name)
    a = torch.tensor([[4.0, 1.0, 0.0], [1.0, 3.0, 0.5], [0.0, 0.5, 2.0]], dtype=torch.float64)
    b = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    x = module.conjugate_gradient(lambda v: a @ v, b, iters=3, residual_tol=0.0)  # exact in n steps
    torch.testing.assert_close(x, torch.linalg.solve(a, b))


@pytest.mark.parametrize("name", ("trpo_lag", "trpo_lag_shapo"))
@pytest.mark.parametrize("seed", range(3))
def test_trpo_step_meets_its_kl_bound_and_improves_the_surrogate(name, seed):
    module = load(name)
    actor, batch = synthetic_batch(module, batch=256, seed=seed, dtype=torch.float32)
    args = module.Args(target_kl=0.01)
    before = module.flat_params(actor)
    with torch.no_grad():
        old_dist = actor(batch["obs"])
        surrogate_before = module.trpo_surrogate(old_dist, batch["act"], batch["logp"], batch["adv"])
    stats = module.trpo_update(actor, batch, args)
    with torch.no_grad():
        new_dist = actor(batch["obs"])
        kl = module.mean_kl(old_dist, new_dist).item()
        surrogate_after = module.trpo_surrogate(new_dist, batch["act"], batch["logp"], batch["adv"])
    assert stats["trpo/step_fraction"] > 0, "the line search rejected every step on an easy problem"
    assert not torch.equal(before, module.flat_params(actor))
    assert 0 < kl <= args.target_kl
    assert surrogate_after > surrogate_before
    assert stats["losses/approx_kl"] == pytest.approx(kl, rel=1e-4)


@pytest.mark.parametrize("name", ("trpo_lag", "trpo_lag_shapo"))
def test_trpo_line_search_keeps_the_actor_when_every_step_is_worse(name, monkeypatch):
    module = load(name)
    actor, batch = synthetic_batch(module, batch=64, dtype=torch.float32)
    before = module.flat_params(actor)
    true_surrogate = module.trpo_surrogate

    def worse_at_every_candidate(*args):  # candidates are evaluated without autograd
        value = true_surrogate(*args)
        return value if torch.is_grad_enabled() else value - 1.0

    monkeypatch.setattr(module, "trpo_surrogate", worse_at_every_candidate)
    stats = module.trpo_update(actor, batch, module.Args())
    assert stats["trpo/step_fraction"] == 0.0
    assert stats["trpo/backtracks"] == module.Args().line_search_steps - 1
    assert torch.equal(before, module.flat_params(actor))
