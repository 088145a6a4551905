"""trpo_lag.py started from the release's initial weights: the same run as experiments/release_falls/run.sh's
`trpo_lag.py --lagrangian pid --cost-limit 10` (Walker2d-v4, 80 000 steps), except that after
torch.manual_seed(seed) the release's ActorVCritic(obs_dim, act_dim) is built (its two critics, then its
actor, drawing from torch's generator exactly as the release's trpo_pid.py does) and our actor and critics
take its weights. Everything after that (action noise, critic minibatches) is our script's own.

Usage, from the release's venv: RELEASE_SRC=<release source tree> python release_init.py <seed>
(experiments/release_falls/run.sh runs it in <out-dir>, so the run lands in <out-dir>/runs).
"""

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
sys.path.insert(0, os.environ["RELEASE_SRC"])
from safepo.common.model import ActorVCritic  # noqa: E402

import trpo_lag  # noqa: E402

OurActor, our_mlp, release_critics = trpo_lag.Actor, trpo_lag.mlp, []


def actor_from_release(obs_dim: int, act_dim: int) -> trpo_lag.Actor:
    """Our actor with the weights of the release's; the release's critics are kept for `mlp`."""
    with torch.random.fork_rng():  # our own draws must not move torch's generator
        actor = OurActor(obs_dim, act_dim)
    release = ActorVCritic(obs_dim, act_dim)
    actor.load_state_dict(release.actor.state_dict())
    release_critics.extend([release.reward_critic.critic.state_dict(), release.cost_critic.critic.state_dict()])
    return actor


def mlp_from_release(in_dim: int, out_dim: int, hidden: tuple = (64, 64)):
    """trpo_lag.mlp; a critic (out_dim 1) takes the release's weights, reward critic first, as main builds them."""
    with torch.random.fork_rng():
        net = our_mlp(in_dim, out_dim, hidden)
    if out_dim == 1:
        net.load_state_dict(release_critics.pop(0))
    return net


if __name__ == "__main__":
    trpo_lag.Actor, trpo_lag.mlp = actor_from_release, mlp_from_release
    torch.set_num_threads(1)
    args = trpo_lag.Args(
        env_id="Walker2d-v4",
        lagrangian="pid",
        cost_limit=10,
        total_timesteps=80_000,
        seed=int(sys.argv[1]),
        exp_name="trpo_lag_release_init",
    )
    trpo_lag.main(args)
