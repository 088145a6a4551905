"""What the SHAPO scripts' reweighting diagnostics cost: the share of an update's wall-clock time spent in
reweighting_stats, timed inside the update itself (so the share does not depend on how busy the machine is).

    python experiments/diagnostics_overhead/diagnostics_overhead.py [--batch 20000] [--obs-dim 17] [--act-dim 6] \
        [--repeats 3]

One PyTorch thread; a synthetic batch with Walker2d-v4's shapes by default, an actor of the scripts' size.
SHAPO-TRPO-Lag: one trpo_update and update_critics (one epoch's update). SHAPO-PPO-Lag: one pass of
ppo_update over the batch (the diagnostics run once per minibatch, so every pass costs the same share).
The diagnostics also take two log-probs in shapo_gradient; those are not counted (a few microseconds each).
"""

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
import tyro

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
import evaluate  # noqa: E402  (load_script)


@dataclass
class Args:
    batch: int = 20_000  # transitions in the batch
    obs_dim: int = 17  # observation size
    act_dim: int = 6  # action size
    repeats: int = 3  # updates timed per script


def shares(name: str, args: Args) -> list:
    """[(update seconds, seconds in reweighting_stats)] of `repeats` updates of script `name`."""
    script = evaluate.load_script(name + ".py")
    true_stats, spent = script.reweighting_stats, [0.0]

    def timed(*stats_args):
        start = time.perf_counter()
        out = true_stats(*stats_args)
        spent[0] += time.perf_counter() - start
        return out

    script.reweighting_stats = timed
    torch.manual_seed(0)
    agent = script.make_agent(args.obs_dim, args.act_dim, script.Args(), torch.device("cpu"))
    actor, running = agent.actor, SimpleNamespace(signal=None)
    obs = torch.randn(args.batch, args.obs_dim)
    with torch.no_grad():
        dist = actor(obs)
        act = dist.sample()
        logp = dist.log_prob(act).sum(-1)
    batch = {
        "obs": obs,
        "act": act,
        "logp": logp,
        "adv": torch.randn(args.batch),
        "target_reward": torch.randn(args.batch),
        "target_cost": torch.randn(args.batch),
    }
    timings = []
    for _ in range(args.repeats):
        spent[0], start = 0.0, time.perf_counter()
        if name.startswith("trpo"):
            script.trpo_update(actor, batch, script.Args(), 1e-5)
            script.update_critics(agent, batch, script.Args(), running)
        else:
            script.ppo_update(agent, batch, script.Args(update_epochs=1, target_kl=1e9), running, 1e-5)
        timings.append((time.perf_counter() - start, spent[0]))
    return timings


if __name__ == "__main__":
    cli = tyro.cli(Args)
    torch.set_num_threads(1)
    print("| script | update (s) | reweighting_stats (ms) | share |\n|---|---:|---:|---:|")
    for script_name in ("trpo_lag_shapo", "ppo_lag_shapo"):
        for total, diagnostics in shares(script_name, cli):
            print(
                f"| {script_name} | {total:.2f} | {1000 * diagnostics:.1f} | {100 * diagnostics / total:.2f} % |",
                flush=True,
            )
