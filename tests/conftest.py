"""Shared fixtures: the four scripts imported as modules (their training loops run only under
`if __name__ == "__main__"`), and small synthetic batches for the policy-update mathematics."""

import importlib
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SCRIPTS = ("ppo_lag", "trpo_lag", "ppo_lag_shapo", "trpo_lag_shapo")
NATURAL_GRADIENT_SCRIPTS = ("trpo_lag", "trpo_lag_shapo", "ppo_lag_shapo")
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
