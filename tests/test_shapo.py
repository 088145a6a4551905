"""The SHAPO perturbation (SPEC §5) and the SHAPO scripts' equivalence to their twins at delta_Down = 0."""

import copy

import pytest
import torch
from conftest import SHAPO_SCRIPTS, load, synthetic_batch


def shapo_problem(module, seed=0, batch=128):
    actor, data = synthetic_batch(module, batch=batch, seed=seed)

    def surrogate(dist):  # the objective each base algorithm maximises
        if hasattr(module, "trpo_surrogate"):
            return module.trpo_surrogate(dist, data["act"], data["logp"], data["adv"])
        return module.ppo_surrogate(dist, data["act"], data["logp"], data["adv"], clip_coef=0.2)

    fvp = module.fisher_vector_product_fn(actor, data["obs"], damping=0.1)
    return actor, data, surrogate, fvp


def surrogate_and_gradient_at(module, actor, obs, surrogate, flat):
    """Independent evaluation: a copy of the actor with its parameters set to `flat`."""
    other = copy.deepcopy(actor)
    with torch.no_grad():
        for param, value in zip(other.parameters(), module.params_from_flat(other, flat).values()):
            param.copy_(value)
    value = surrogate(other(obs))
    grad = torch.autograd.grad(value, tuple(other.parameters()))
    return value.item(), torch.cat([g.reshape(-1) for g in grad]), other


@pytest.mark.parametrize("name", SHAPO_SCRIPTS)
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("delta_down", (1e-5, 1e-3))
def test_perturbation_lowers_the_surrogate_inside_the_kl_ball(name, seed, delta_down):
    module = load(name)
    actor, data, surrogate, fvp = shapo_problem(module, seed)
    theta0 = module.flat_params(actor)
    perturbed_gradient, epsilon, stats = module.shapo_gradient(actor, data["obs"], actor(data["obs"]), surrogate, fvp, delta_down)

    assert torch.equal(module.flat_params(actor), theta0), "theta0 must be left exactly in place"
    value0, gradient0, _ = surrogate_and_gradient_at(module, actor, data["obs"], surrogate, theta0)
    value_eps, gradient_eps, perturbed_actor = surrogate_and_gradient_at(
        module, actor, data["obs"], surrogate, theta0 + epsilon
    )
    assert epsilon.norm() > 0
    assert value_eps < value0, "the perturbation must go downhill on the surrogate"
    with torch.no_grad():
        kl = module.mean_kl(actor(data["obs"]), perturbed_actor(data["obs"])).item()
    assert kl <= delta_down
    assert stats["shapo/backtracks"] < 10, "the KL check should pass before the fallback here"
    assert stats["shapo/kl"] == pytest.approx(kl, rel=1e-6)
    torch.testing.assert_close(perturbed_gradient, gradient_eps)
    assert not torch.allclose(perturbed_gradient, gradient0)
    cos = torch.nn.functional.cosine_similarity(gradient0, gradient_eps, dim=0).item()
    assert stats["shapo/cos_sim"] == pytest.approx(cos, abs=1e-9)
    assert stats["shapo/perturbation_norm"] == pytest.approx(epsilon.norm().item())


@pytest.mark.parametrize("name", SHAPO_SCRIPTS)
def test_perturbation_points_against_the_natural_gradient(name):
    """epsilon = -sqrt(2 delta / x^T F x) x with x = F^-1 g: check the first-order drop and the
    quadratic KL against the explicit formulas on a tiny problem."""
    module = load(name)
    actor, data, surrogate, fvp = shapo_problem(module)
    delta_down = 1e-6
    _, epsilon, stats = module.shapo_gradient(actor, data["obs"], actor(data["obs"]), surrogate, fvp, delta_down, cg_iters=500)
    assert stats["shapo/backtracks"] == 0
    _, gradient0, _ = surrogate_and_gradient_at(module, actor, data["obs"], surrogate, module.flat_params(actor))
    # the quadratic model of the KL sits on the ball's boundary: 1/2 eps^T (F + 0.1 I) eps = delta
    assert 0.5 * (epsilon @ fvp(epsilon)).item() == pytest.approx(delta_down, rel=1e-6)
    # and among such steps it lowers the linearised surrogate the most: g^T eps = -sqrt(2 delta g^T F^-1 g)
    x = module.conjugate_gradient(fvp, gradient0, iters=500, residual_tol=1e-30)
    assert (gradient0 @ epsilon).item() == pytest.approx(-(2 * delta_down * (gradient0 @ x)).sqrt().item(), rel=1e-6)


@pytest.mark.parametrize("name", SHAPO_SCRIPTS)
def test_zero_radius_gives_exactly_the_plain_gradient(name):
    module = load(name)
    actor, data, surrogate, fvp = shapo_problem(module)
    perturbed_gradient, epsilon, stats = module.shapo_gradient(actor, data["obs"], actor(data["obs"]), surrogate, fvp, 0.0)
    plain = torch.autograd.grad(surrogate(actor(data["obs"])), tuple(actor.parameters()))
    assert torch.equal(perturbed_gradient, torch.cat([g.reshape(-1) for g in plain]))
    assert epsilon.abs().max() == 0 and stats["shapo/kl"] == 0.0


@pytest.mark.parametrize("name", SHAPO_SCRIPTS)
def test_kl_fallback_when_no_backtrack_fits(name):
    """With 0 backtracking tries the fallback 0.1 epsilon is used (SPEC §5 step 4)."""
    module = load(name)
    actor, data, surrogate, fvp = shapo_problem(module)
    _, full, _ = module.shapo_gradient(actor, data["obs"], actor(data["obs"]), surrogate, fvp, 1e-4)
    _, fallback, stats = module.shapo_gradient(actor, data["obs"], actor(data["obs"]), surrogate, fvp, 1e-4, backtrack_steps=0)
    assert stats["shapo/backtracks"] == 0
    torch.testing.assert_close(fallback, 0.1 * full)


@pytest.mark.parametrize("name", SHAPO_SCRIPTS)
def test_one_epoch_at_zero_radius_matches_the_base_algorithm(name, tmp_path, monkeypatch):
    """Same seed, delta_Down = 0: the SHAPO script ends its epoch with exactly the parameters and
    Lagrange multiplier of its vanilla twin; the default delta_Down does not."""
    monkeypatch.chdir(tmp_path)
    shapo, vanilla = load(name), load(name.replace("_shapo", ""))
    # Walker2d falls often under a fresh policy, so with cost limit 0 the multiplier moves.
    settings = dict(
        env_id="Walker2d-v4", total_timesteps=400, steps_per_epoch=400, num_envs=2, cost_limit=0.0, vector_env="sync"
    )
    base = vanilla.main(vanilla.Args(**settings))
    same = shapo.main(shapo.Args(**settings, delta_down=0.0))
    different = shapo.main(shapo.Args(**settings))
    assert base["lagrange"].value > 0.001, "the multiplier should have risen"
    assert base["lagrange"].value == same["lagrange"].value
    for key in ("actor", "reward_critic", "cost_critic"):
        for p, q in zip(base[key].parameters(), same[key].parameters()):
            assert torch.equal(p, q), key
    assert not all(torch.equal(p, q) for p, q in zip(base["actor"].parameters(), different["actor"].parameters()))
