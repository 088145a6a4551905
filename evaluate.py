"""Evaluate a checkpoint of any of the four scripts, and watch it: episodes of the deterministic policy.

    python evaluate.py runs/<run>/checkpoint.pt --episodes 10 [--capture-video]

The checkpoint names the script that wrote it; that script is loaded as a module (it lies beside this
file) and its own Actor, observation normaliser and make_env rebuild the policy. Episode e starts from
the e-th evaluation seed of the script's draw_seeds, a stream no training env of any run uses and the
same for every checkpoint of a run, so two checkpoints meet the same start states. Actions are the
Gaussian's mean, observations are normalised with the checkpoint's statistics, frozen. Prints one line;
logs eval/{mean,std}_{return,cost} into the run's TensorBoard folder at the checkpoint's step (as
OmniSafe reports a deterministic evaluation after training, spec §10); with --capture-video writes
<run folder>/videos/step<global step>/*.mp4, real skybox and all. Safe to run while the run goes on.
"""

import importlib.util
import os
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Optional

import gymnasium as gym
import numpy as np
import torch
import tyro
from torch.utils.tensorboard import SummaryWriter

ROOT = Path(__file__).resolve().parent
SCRIPTS = ("ppo_lag.py", "trpo_lag.py", "ppo_lag_shapo.py", "trpo_lag_shapo.py")


@dataclass
class Args:
    checkpoint: tyro.conf.Positional[str]  # a run's checkpoint.pt
    episodes: int = 10  # episodes to run
    capture_video: bool = False  # record every episode as MP4 into <run folder>/videos/step<global step>/
    max_episode_steps: Optional[int] = None  # override the task's time limit (for tests and quick looks)
    log: bool = True  # write the eval/ scalars into the run's TensorBoard folder


def load_script(name: str):
    """The training script `name` (one of SCRIPTS) imported as a module from this folder."""
    spec = importlib.util.spec_from_file_location(name[: -len(".py")], ROOT / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def evaluate(args: Args) -> np.ndarray:
    """Run args.episodes episodes of the checkpoint's deterministic policy; returns [E, 2], each episode's
    return and cost. ValueError (one line) for a file that is not a checkpoint of one of SCRIPTS."""
    try:
        checkpoint = torch.load(args.checkpoint, weights_only=False)  # our own file: tensors, NumPy arrays, flags
    except Exception as error:
        raise ValueError(f"cannot read {args.checkpoint} as a checkpoint ({type(error).__name__})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("script") not in SCRIPTS:
        raise ValueError(f"{args.checkpoint} is not a checkpoint of {', '.join(SCRIPTS)}")
    script, run = load_script(checkpoint["script"]), checkpoint["args"]
    script.set_skybox(plain=not args.capture_video)
    env = script.make_env(run["env_id"], args.max_episode_steps, "rgb_array" if args.capture_video else None)
    run_dir, step = os.path.dirname(os.path.abspath(args.checkpoint)), checkpoint["global_step"]
    if args.capture_video:
        video_dir = os.path.join(run_dir, "videos", f"step{step}")
        record = partial(
            gym.wrappers.RecordVideo, video_folder=video_dir, episode_trigger=lambda _: True, disable_logger=True
        )
        env = script.safety_gymnasium.wrappers.with_gymnasium_wrappers(env, record)
    actor = script.Actor(env.observation_space.shape[0], env.action_space.shape[0])
    normalizer = script.ObsNormalizer(shape=env.observation_space.shape)
    actor.load_state_dict(checkpoint["actor"])
    normalizer.load_state_dict(checkpoint["normalizer"])
    totals = np.zeros((args.episodes, 2))
    for episode, seed in enumerate(script.draw_seeds(run["seed"], args.episodes)):
        obs, _ = env.reset(seed=seed)
        done = False
        while not done:
            with torch.no_grad():
                action = actor(torch.as_tensor(normalizer(obs), dtype=torch.float32)).mean
            obs, reward, cost, terminated, truncated, _ = env.step(action.numpy())
            totals[episode] += (reward, cost)
            done = terminated or truncated
    env.close()
    (mean_return, mean_cost), (std_return, std_cost) = totals.mean(0), totals.std(0)
    if args.log:
        with SummaryWriter(run_dir) as writer:
            for tag, value in zip(
                ("mean_return", "mean_cost", "std_return", "std_cost"), (*totals.mean(0), *totals.std(0))
            ):
                writer.add_scalar(f"eval/{tag}", value, step)
    print(
        f"{run['env_id']} {checkpoint['script']} seed {run['seed']} step {step}: {args.episodes} episodes | "
        f"return {mean_return:.2f} ± {std_return:.2f} cost {mean_cost:.2f} ± {std_cost:.2f}",
        flush=True,
    )
    return totals


if __name__ == "__main__":
    cli_args = tyro.cli(Args)
    try:
        if not cli_args.episodes > 0 or (cli_args.max_episode_steps is not None and not cli_args.max_episode_steps > 0):
            raise ValueError("--episodes and --max-episode-steps must be positive")
        evaluate(cli_args)
    except ValueError as error:
        sys.exit(f"evaluate.py: error: {error}")
