"""The learner alone, without environments, on a device of one's choice: PPO-Lag's and SHAPO-PPO-Lag's minibatch
step (ms, one pass to warm up, then 2 passes over the batch) and TRPO-Lag's and SHAPO-TRPO-Lag's update of an
epoch (s: trpo_update and update_critics), eager and with --compile, on a synthetic batch of 20 000 rows with
Walker2d-v4's sizes. The compile warm-up is the first call's time beyond the eager one's.

    python experiments/throughput/learner.py cuda      (or cpu)
"""

import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import ppo_lag  # noqa: E402
import ppo_lag_shapo  # noqa: E402
import trpo_lag  # noqa: E402
import trpo_lag_shapo  # noqa: E402

OBS_DIM, ACT_DIM, ROWS = 17, 6, 20_000
RUNNING = SimpleNamespace(signal=None)


def batch_for(agent, device):
    obs = torch.randn(ROWS, OBS_DIM, device=device)
    with torch.no_grad():
        dist = agent.actor(obs)
        act = dist.sample()
    rows = torch.randn(3, ROWS, device=device)
    logp = dist.log_prob(act).sum(-1)
    return {
        "obs": obs,
        "act": act,
        "logp": logp,
        "adv": 0.1 * rows[0],
        "target_reward": rows[1],
        "target_cost": rows[2],
    }


def ppo_rows(name, module, device) -> tuple:
    """(eager, compiled) milliseconds per minibatch step, and the compile warm-up in seconds."""
    times = []
    for compile in (False, True):
        torch.manual_seed(0)
        agent = module.make_agent(OBS_DIM, ACT_DIM, module.Args(compile=compile), device)
        batch = batch_for(agent, device)
        extra = [1e-5] if "shapo" in name else []
        one, two = (module.Args(update_epochs=passes, target_kl=1e9, compile=compile) for passes in (1, 2))
        start = time.perf_counter()
        module.ppo_update(agent, batch, one, RUNNING, *extra)
        middle = time.perf_counter()
        module.ppo_update(agent, batch, two, RUNNING, *extra)
        steps = 2 * -(-ROWS // one.minibatch_size)
        times.append((1e3 * (time.perf_counter() - middle) / steps, middle - start))
    return times[0][0], times[1][0], times[1][1] - times[0][1]


def trpo_rows(name, module, device) -> tuple:
    """(eager, compiled) seconds of an epoch's update, and the compile warm-up in seconds."""
    times = []
    for compile in (False, True):
        torch.manual_seed(0)
        args = module.Args(compile=compile)
        agent = module.make_agent(OBS_DIM, ACT_DIM, args, device)
        batch = batch_for(agent, device)
        extra = [1e-5] if "shapo" in name else []
        start = time.perf_counter()
        module.update_critics(agent, batch, args, RUNNING)
        middle = time.perf_counter()
        module.trpo_update(agent.actor, batch, args, *extra)
        module.update_critics(agent, batch, args, RUNNING)
        times.append((time.perf_counter() - middle, middle - start))
    return times[0][0], times[1][0], times[1][1] - times[0][1]


def main(device: torch.device) -> None:
    print(f"| {device} learner, {ROWS} rows, Walker2d sizes | eager | compiled | compile warm-up (s) |")
    print("|---|---:|---:|---:|")
    for name, module in (("ppo_lag", ppo_lag), ("ppo_lag_shapo", ppo_lag_shapo)):
        eager, compiled, warm_up = ppo_rows(name, module, device)
        print(f"| {name} minibatch step (ms) | {eager:.2f} | {compiled:.2f} | {warm_up:.0f} |", flush=True)
    for name, module in (("trpo_lag", trpo_lag), ("trpo_lag_shapo", trpo_lag_shapo)):
        eager, compiled, warm_up = trpo_rows(name, module, device)
        print(f"| {name} update of an epoch (s) | {eager:.2f} | {compiled:.2f} | {warm_up:.0f} |", flush=True)


if __name__ == "__main__":
    main(torch.device(sys.argv[1] if len(sys.argv) > 1 else "cpu"))
