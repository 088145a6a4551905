"""Shared fixtures: the four scripts imported as modules (their training runs only under
`if __name__ == "__main__"`), small synthetic batches for the policy-update mathematics, and an
explicitly built Fisher matrix to check the scripts' Fisher products and solves against."""

import importlib
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SCRIPTS = ("ppo_lag", "trpo_lag", "ppo_lag_shapo", "trpo_lag_shapo")
TRPO_SCRIPTS = ("trpo_lag", "trpo_lag_shapo")
SHAPO_SCRIPTS = ("ppo_lag_shapo", "trpo_lag_shapo")


def load(name: str):
    return importlib.import_module(name)


def synthetic_batch(module, obs_dim=3, act_dim=2, batch=32, hidden=(8,), seed=0, dtype=torch.float64):
    """A small actor and a batch (obs, act, logp, adv) with actions sampled from the actor itself."""
    torch.manual_seed(seed)
    actor = module.Actor(obs_dim, act_dim, hidden=hidden).to(dtype)
    with torch.no_grad():
        actor.log_std.fill_(-0.3)
    obs = torch.randn(batch, obs_dim, dtype=dtype)
    with torch.no_grad():
        dist = actor(obs)
        act = dist.sample()
        logp = dist.log_prob(act).sum(-1)
    adv = torch.randn(batch, dtype=dtype)
    return actor, {"obs": obs, "act": act, "logp": logp, "adv": adv}


def flat(module) -> torch.Tensor:
    return torch.nn.utils.parameters_to_vector(module.parameters()).detach()


def at(actor, theta: torch.Tensor, obs: torch.Tensor):
    """actor(obs) evaluated at the flat parameters `theta`, the actor itself left untouched."""
    names = [name for name, _ in actor.named_parameters()]
    pieces = theta.split([p.numel() for p in actor.parameters()])
    params = {name: piece.view_as(p) for name, piece, p in zip(names, pieces, actor.parameters())}
    return torch.func.functional_call(actor, params, (obs,))


def explicit_fisher(actor, obs) -> torch.Tensor:
    """F of the mean KL over states and action dimensions, built from autograd Jacobians of the mean.

    For a diagonal Gaussian the Hessian of KL(N(mu0, s0) || N(mu, s)) at (mu, s) = (mu0, s0) is 1/s^2
    in mu and 2 in log s per action dimension, so
    F = 1/(B A) sum_{b, a} [ J_mu[b, a]^T J_mu[b, a] / s_a^2 + 2 e_{log s_a} e_{log s_a}^T ].
    """
    jac = torch.autograd.functional.jacobian(lambda theta: at(actor, theta, obs).loc, flat(actor))  # [B, A, n]
    batch, act_dim, _ = jac.shape
    fisher = torch.einsum("ban,bam,a->nm", jac, jac, 1.0 / actor.log_std.detach().exp() ** 2)
    names = [name for name, _ in actor.named_parameters()]
    start = sum(p.numel() for p in list(actor.parameters())[: names.index("log_std")])
    idx = torch.arange(start, start + act_dim)
    fisher[idx, idx] += 2.0 * batch
    return fisher / (batch * act_dim)
