"""Throughput of the four scripts against the environment's own limit.

    python benchmark.py --env-id SafetyPointGoal1-v0 --steps 20000

For one task and number of envs it measures, one after another on this machine:
  * the limit: random actions stepped through the scripts' own vector env (as ppo_lag.py's main
    builds it, identical in the four scripts: sync, plain skybox), resets included;
  * each script end to end (rollout and updates) for the same number of steps, as the steps/s it
    prints after its last epoch, with that epoch's seconds in the rollout and in the update.
Both clocks start after the first reset. Prints a Markdown table (steps/s and ratio to the limit).
"""

import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import tyro

ROOT = Path(__file__).resolve().parent
SCRIPTS = ("ppo_lag", "ppo_lag_shapo", "trpo_lag", "trpo_lag_shapo")


@dataclass
class Args:
    env_id: str = "SafetyPointGoal1-v0"
    """task to measure"""
    num_envs: int = 5
    """parallel environments"""
    steps: int = 20_000
    """environment steps per measurement (all envs together); also the scripts' --steps-per-epoch"""
    scripts: tuple = SCRIPTS
    """which scripts to run end to end"""
    seed: int = 0
    """seed of the environments and scripts"""


def random_action_steps_per_second(args: Args) -> float:
    sys.path.insert(0, str(ROOT))
    import ppo_lag

    ppo_lag.set_skybox(plain=True)
    envs = ppo_lag.safety_gymnasium.vector.SafetySyncVectorEnv([partial(ppo_lag.make_env, args.env_id)] * args.num_envs)
    envs.reset(seed=args.seed)
    envs.action_space.seed(args.seed)
    start = time.perf_counter()
    for _ in range(args.steps // args.num_envs):
        envs.step(envs.action_space.sample())
    elapsed = time.perf_counter() - start
    envs.close()
    return args.steps / elapsed


def script_steps_per_second(name: str, args: Args, workdir: Path) -> tuple:
    """(steps/s, rollout seconds, update seconds) of one epoch, as the script prints them."""
    flags = [
        "--env-id", args.env_id, "--num-envs", str(args.num_envs),
        "--total-timesteps", str(args.steps), "--steps-per-epoch", str(args.steps), "--seed", str(args.seed),
    ]
    result = subprocess.run(
        [sys.executable, str(ROOT / f"{name}.py"), *flags], cwd=workdir, capture_output=True, text=True
    )
    if result.returncode != 0:
        sys.exit(f"benchmark.py: error: {name}.py failed: {result.stderr.strip().splitlines()[-1]}")
    last = re.findall(r"\| (\d+) steps/s \| rollout (\S+) s, update (\S+) s", result.stdout)[-1]
    return tuple(float(value) for value in last)


def main(args: Args) -> None:
    limit = random_action_steps_per_second(args)
    rows = [("random actions (limit)", (limit, args.steps / limit, float("nan")))]
    with tempfile.TemporaryDirectory() as workdir:  # the measured runs' logs are not kept
        for name in args.scripts:
            rows.append((name, script_steps_per_second(name, args, Path(workdir))))
    print(f"\n{args.env_id}, {args.num_envs} envs, {args.steps} steps, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}\n")
    print("| run | steps/s | ratio to limit | rollout (s) | update (s) |\n|---|---:|---:|---:|---:|")
    for name, (value, *seconds) in rows:
        cells = " | ".join(f"{second:.1f}" if second == second else "" for second in seconds)  # NaN: not measured
        print(f"| {name} | {value:.0f} | {value / limit:.2f} | {cells} |")


if __name__ == "__main__":
    main(tyro.cli(Args))
