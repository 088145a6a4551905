"""Throughput of the four scripts against the environment's own limit, and the cost of SHAPO's minibatch step.

    python benchmark.py --env-ids SafetyPointGoal1-v0 Walker2d-v4 --compile-too > table.md

For each task, one after another on this machine, with one PyTorch thread per process:
  * the limit: random actions stepped through the scripts' own vector envs (make_envs, plain skybox), for
    --steps steps;
  * each script end to end, --epochs epochs of --steps steps, eagerly and (with --compile-too) with --compile:
    the seconds of the last epoch's rollout and update as the script prints them, its steps/s
    (steps / (rollout + update)) and the ratio to the limit; for --compile, the warm-up, i.e. how much
    longer the first epoch's update took than the last one's;
  * PPO-Lag's and SHAPO-PPO-Lag's minibatch step, eager and compiled: one ppo_update of --passes passes
    (no KL early stop) over a synthetic batch of --steps rows of the task's sizes, in milliseconds a step.
Prints Markdown tables with the commit, the date and the machine. The measured runs' logs are not kept.
"""

import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Tuple

import tyro

ROOT = Path(__file__).resolve().parent
SCRIPTS = ("ppo_lag", "ppo_lag_shapo", "trpo_lag", "trpo_lag_shapo")
EPOCH_LINE = re.compile(r"rollout (\S+) s, update (\S+) s")


@dataclass
class Args:
    env_ids: Tuple[str, ...] = ("SafetyPointGoal1-v0", "Walker2d-v4")  # tasks to measure
    num_envs: int = 5  # environments, as the scripts' default
    steps: int = 20_000  # environment steps per epoch (all envs together), as the scripts' default
    epochs: int = 2  # epochs per measured run; the last one is reported
    scripts: Tuple[str, ...] = SCRIPTS  # which scripts to run end to end
    compile_too: bool = False  # also measure every run with --compile
    cuda: bool = False  # runs and minibatch steps on the GPU (the scripts' --cuda)
    async_envs: bool = False  # the limit and the runs with the envs in subprocesses (the scripts' --async-envs)
    passes: int = 2  # passes over the batch in the minibatch-step measurement
    seed: int = 0  # seed of the environments and scripts


def environment_limit(args: Args, env_id: str) -> float:
    """Steps/s of random actions through the scripts' vector envs, resets included, after the first reset."""
    sys.path.insert(0, str(ROOT))
    import ppo_lag

    envs = ppo_lag.make_envs(ppo_lag.Args(env_id=env_id, num_envs=args.num_envs, async_envs=args.async_envs))
    envs.reset(seed=args.seed)
    envs.action_space.seed(args.seed)
    start = time.perf_counter()
    for _ in range(args.steps // args.num_envs):
        envs.step(envs.action_space.sample())
    elapsed = time.perf_counter() - start
    envs.close()
    return args.steps / elapsed


def script_epochs(name: str, env_id: str, args: Args, flags: list, workdir: str) -> list:
    """[(rollout seconds, update seconds)] of each epoch of one run, as the script prints them."""
    command = [
        sys.executable,
        str(ROOT / f"{name}.py"),
        "--env-id",
        env_id,
        "--num-envs",
        str(args.num_envs),
        "--steps-per-epoch",
        str(args.steps),
        "--total-timesteps",
        str(args.steps * args.epochs),
        "--seed",
        str(args.seed),
        *flags,
        *(["--cuda"] if args.cuda else []),
        *(["--async-envs"] if args.async_envs else []),
    ]
    result = subprocess.run(command, cwd=workdir, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"benchmark.py: error: {name}.py {' '.join(flags)} failed: {result.stderr.strip().splitlines()[-1]}")
    return [(float(rollout), float(update)) for rollout, update in EPOCH_LINE.findall(result.stdout)]


def minibatch_step_ms(name: str, env_id: str, args: Args, compile: bool) -> float:
    """Milliseconds per minibatch step of `name`'s ppo_update (name: ppo_lag or ppo_lag_shapo), `args.passes`
    passes over a synthetic batch of args.steps rows with the task's observation and action sizes."""
    import torch

    sys.path.insert(0, str(ROOT))
    script = __import__(name)
    envs = script.make_envs(script.Args(env_id=env_id, num_envs=1))
    obs_dim, act_dim = envs.single_observation_space.shape[0], envs.single_action_space.shape[0]
    envs.close()
    torch.manual_seed(args.seed)
    settings = script.Args(update_epochs=args.passes, target_kl=1e9, compile=compile)
    device = torch.device("cuda" if args.cuda else "cpu")
    agent = script.make_agent(obs_dim, act_dim, settings, device)
    obs = torch.randn(args.steps, obs_dim, device=device)
    with torch.no_grad():
        dist = agent.actor(obs)
        act = dist.sample()
    rows = torch.randn(3, args.steps, device=device)
    batch = {
        "obs": obs,
        "act": act,
        "logp": dist.log_prob(act).sum(-1),
        "adv": 0.1 * rows[0],
        "target_reward": rows[1],
        "target_cost": rows[2],
    }
    extra = [1e-5] if "shapo" in name else []
    running = SimpleNamespace(signal=None)
    if compile:  # warm-up: one pass compiles the graphs of both minibatch sizes
        script.ppo_update(agent, batch, script.Args(update_epochs=1, target_kl=1e9, compile=True), running, *extra)
    start = time.perf_counter()
    stats = script.ppo_update(agent, batch, settings, running, *extra)  # it ends by reading the KL: the device is done
    steps = stats["losses/update_epochs"] * -(-args.steps // settings.minibatch_size)
    return 1e3 * (time.perf_counter() - start) / steps


def commit() -> str:
    result = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
    ).stdout.strip()
    return result.stdout.strip() + (" (with uncommitted changes)" if dirty else "")


def main(args: Args) -> None:
    import torch

    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
    modes = [[], ["--compile"]] if args.compile_too else [[]]
    print(
        f"commit {commit()}, {time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, torch {torch.__version__}, one PyTorch thread per process; "
        f"{torch.cuda.get_device_name() + ', ' if args.cuda else ''}{'async' if args.async_envs else 'sync'} envs, "
        f"{args.num_envs} envs, epochs of {args.steps} steps, the last of {args.epochs} epochs reported\n"
    )
    for env_id in args.env_ids:
        limit = environment_limit(args, env_id)
        print(f"### {env_id}\n\n| run | steps/s | ratio to limit | rollout (s) | update (s) | compile warm-up (s) |")
        print("|---|---:|---:|---:|---:|---:|")
        print(f"| random actions (limit) | {limit:.0f} | 1.00 | {args.steps / limit:.1f} | | |")
        with tempfile.TemporaryDirectory() as workdir:
            for name in args.scripts:
                for flags in modes:
                    epochs = script_epochs(name, env_id, args, flags, workdir)
                    rollout, update = epochs[-1]
                    warm_up = f"{epochs[0][1] - update:.1f}" if flags else ""
                    speed = args.steps / (rollout + update)
                    print(
                        f"| {' '.join([name, *flags])} | {speed:.0f} | {speed / limit:.2f} "
                        f"| {rollout:.1f} | {update:.1f} "
                        f"| {warm_up} |",
                        flush=True,
                    )
        if {"ppo_lag", "ppo_lag_shapo"} <= set(args.scripts):
            print(
                f"\n| minibatch step, {args.passes} passes over {args.steps} rows | PPO-Lag (ms) | SHAPO-PPO-Lag (ms) "
                "| SHAPO / PPO |\n|---|---:|---:|---:|"
            )
            for compile in [False, True][: len(modes)]:
                ppo, shapo = (minibatch_step_ms(name, env_id, args, compile) for name in ("ppo_lag", "ppo_lag_shapo"))
                print(
                    f"| {'compiled' if compile else 'eager'} | {ppo:.2f} | {shapo:.2f} | {shapo / ppo:.2f} |",
                    flush=True,
                )
        print()


if __name__ == "__main__":
    main(tyro.cli(Args))
