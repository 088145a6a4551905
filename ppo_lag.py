"""PPO-Lag: proximal policy optimisation with a Lagrange multiplier on the episodic cost.

Single-file reference baseline of the SHAPO project (SPEC.md §2-3). Run with
    python ppo_lag.py --env-id SafetyPointGoal1-v0
and see `python ppo_lag.py --help` for every flag. TensorBoard logs go to runs/<run_name>/.
"""

import dataclasses
import os
import random
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Literal, Optional

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import tyro
from gymnasium.wrappers.normalize import RunningMeanStd
from torch.distributions import Normal, kl_divergence
from torch.utils.tensorboard import SummaryWriter


def import_safety_gymnasium():
    """Import safety_gymnasium 1.0.0 on any Python >= 3.8 (SPEC §11).

    Its asset classes are dataclasses with numpy arrays as field defaults, which Python >= 3.11
    rejects as mutable defaults. While the package is imported, `dataclasses.dataclass` turns each
    such default into an equivalent `default_factory`; it is restored right after.
    """
    plain_dataclass = dataclasses.dataclass

    def numpy_safe_dataclass(cls=None, /, **kwargs):
        def wrap(cls):
            for name in cls.__dict__.get("__annotations__", {}):
                default = cls.__dict__.get(name)
                if isinstance(default, np.ndarray):
                    setattr(cls, name, dataclasses.field(default_factory=default.copy))
            return plain_dataclass(cls, **kwargs)

        return wrap if cls is None else wrap(cls)

    dataclasses.dataclass = numpy_safe_dataclass
    try:
        import safety_gymnasium
    finally:
        dataclasses.dataclass = plain_dataclass
    return safety_gymnasium


safety_gymnasium = import_safety_gymnasium()
from safety_gymnasium.utils.registration import safe_registry  # noqa: E402
from safety_gymnasium.vector import SafetyAsyncVectorEnv, SafetySyncVectorEnv  # noqa: E402


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """name of the experiment, part of the run folder runs/<env-id>__<exp-name>__<seed>__<unix-time>"""
    seed: int = 0
    """seed of Python, NumPy, PyTorch and the environments (env i gets seed + i)"""
    env_id: str = "SafetyPointGoal1-v0"
    """a safety-gymnasium vector-observation task, or Ant-v4 / Walker2d-v4 (cost 1 on a fall)"""
    total_timesteps: int = 10_000_000
    """environment steps of the whole run, all envs together"""
    num_envs: int = 5
    """number of parallel environments"""
    steps_per_epoch: int = 20_000
    """transitions collected per epoch (one policy update), all envs together"""
    cost_limit: float = 25.0
    """d: bound on the expected undiscounted episodic cost"""
    vector_env: Literal["auto", "sync", "async"] = "auto"
    """'async' steps each env in its own process; 'auto' does so for the slow navigation tasks only"""
    max_episode_steps: Optional[int] = None
    """override the task's time limit (for tests and debugging); None keeps the task's own"""
    gamma: float = 0.99
    """discount factor of reward and cost"""
    gae_lambda: float = 0.95
    """lambda of generalised advantage estimation"""
    lagrangian_multiplier_init: float = 0.001
    """initial value of the Lagrange multiplier"""
    lambda_lr: float = 0.035
    """Adam learning rate of the Lagrange multiplier"""
    critic_l2_coef: float = 0.001
    """weight of the L2 penalty on the critics' parameters"""
    max_grad_norm: float = 40.0
    """gradient-norm clip"""
    learning_rate: float = 3e-4
    """Adam learning rate of the actor (decays linearly to 0 with --anneal-lr)"""
    critic_lr: float = 3e-4
    """Adam learning rate of the reward and cost critics"""
    anneal_lr: bool = True
    """decay the actor's learning rate linearly to 0 over the epochs"""
    update_epochs: int = 40
    """maximum passes over the batch per epoch"""
    minibatch_size: int = 64
    """transitions per minibatch"""
    clip_coef: float = 0.2
    """PPO ratio clip epsilon"""
    target_kl: float = 0.02
    """stop the passes early once the mean KL(pi_old || pi) exceeds this"""


# ---------------------------------------------------------------------------------------------
# Environments (SPEC §2)
# ---------------------------------------------------------------------------------------------
FALL_COST_ENVS = ("Ant-v4", "Walker2d-v4")


def check_env_id(env_id: str) -> None:
    """Raise ValueError unless `env_id` is a task these scripts support (SPEC §2)."""
    if env_id in FALL_COST_ENVS:
        return
    if env_id in safe_registry and "Vision" not in env_id and "Debug" not in env_id:
        return
    raise ValueError(
        f"unsupported --env-id {env_id!r}: use a safety-gymnasium vector-observation task "
        f"(e.g. SafetyPointGoal1-v0, SafetyHopperVelocity-v1) or one of {', '.join(FALL_COST_ENVS)}"
    )


class FallCost(gym.Wrapper):
    """Turns a gymnasium MuJoCo locomotion task into a safety task: the cost of a step is 1 if the
    episode terminates there (the agent fell) and 0 otherwise [R]. Steps return the
    safety-gymnasium 6-tuple (obs, reward, cost, terminated, truncated, info)."""

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, float(terminated), terminated, truncated, info


class NormalizeObservation(gym.vector.VectorEnvWrapper):
    """Running mean/std normalisation of observations, statistics shared by all envs (SPEC §2).

    The final observation of an episode (`info["final_observation"]`, used to bootstrap on
    truncation) gets exactly the transform of that step's observations. safety-gymnasium's
    SafeNormalizeObservation cannot be used: on a vector env it fails on `final_observation`
    (an object array) and would update the statistics a second time with it.
    """

    def __init__(self, env: gym.vector.VectorEnv, epsilon: float = 1e-8):
        super().__init__(env)
        self.obs_rms = RunningMeanStd(shape=self.single_observation_space.shape)
        self.epsilon = epsilon

    def normalize(self, obs: np.ndarray) -> np.ndarray:
        return (obs - self.obs_rms.mean) / np.sqrt(self.obs_rms.var + self.epsilon)

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self.obs_rms.update(obs)
        return self.normalize(obs), info

    def step(self, actions):
        obs, reward, cost, terminated, truncated, info = self.env.step(actions)
        self.obs_rms.update(obs)
        for i in np.flatnonzero(info.get("_final_observation", [])):
            info["final_observation"][i] = self.normalize(info["final_observation"][i])
        return self.normalize(obs), reward, cost, terminated, truncated, info


def make_env(env_id: str, max_episode_steps: Optional[int] = None) -> Callable[[], gym.Env]:
    """Thunk building one environment with actions rescaled and clipped to [-1, 1] (SPEC §2)."""

    def thunk() -> gym.Env:
        if env_id in FALL_COST_ENVS:
            env = FallCost(gym.make(env_id, max_episode_steps=max_episode_steps))
        else:
            env = safety_gymnasium.make(env_id, max_episode_steps=max_episode_steps)
        env = gym.wrappers.RescaleAction(env, -1.0, 1.0)
        return gym.wrappers.ClipAction(env)

    return thunk


def make_vector_env(args: Args) -> NormalizeObservation:
    """`args.num_envs` copies of `args.env_id` in a safety-gymnasium vector env, normalised.

    Each step returns (obs [N, obs_dim], reward [N], cost [N], terminated [N], truncated [N], info);
    an env whose episode ended is reset at once, its last observation in info["final_observation"].
    """
    use_async = args.vector_env == "async" or (
        args.vector_env == "auto" and "Velocity" not in args.env_id and args.env_id not in FALL_COST_ENVS
    )
    vector_env_class = SafetyAsyncVectorEnv if use_async else SafetySyncVectorEnv
    return NormalizeObservation(
        vector_env_class([make_env(args.env_id, args.max_episode_steps) for _ in range(args.num_envs)])
    )


class EpisodeTracker:
    """Exact per-env episode statistics: every step's reward and cost is counted, including the
    step on which an episode ends (SPEC §2)."""

    def __init__(self, num_envs: int):
        self.returns = np.zeros(num_envs)
        self.costs = np.zeros(num_envs)
        self.lengths = np.zeros(num_envs, dtype=np.int64)

    def step(self, reward: np.ndarray, cost: np.ndarray, done: np.ndarray) -> list:
        """Add one vector step ([N] arrays); return (return, cost, length) of each episode it ended."""
        self.returns += reward
        self.costs += cost
        self.lengths += 1
        ended = np.flatnonzero(done)
        finished = [(float(self.returns[i]), float(self.costs[i]), int(self.lengths[i])) for i in ended]
        self.returns[ended], self.costs[ended], self.lengths[ended] = 0.0, 0.0, 0
        return finished


# ---------------------------------------------------------------------------------------------
# Actor and critics (SPEC §2)
# ---------------------------------------------------------------------------------------------
def mlp(in_dim: int, out_dim: int, out_gain: float, hidden: tuple = (64, 64)) -> nn.Sequential:
    """Tanh MLP; orthogonal weights and zero biases (CleanRL's initialisation; our choice [I])."""
    dims = (in_dim, *hidden, out_dim)
    layers = []
    for i, (fan_in, fan_out) in enumerate(zip(dims[:-1], dims[1:])):
        layer = nn.Linear(fan_in, fan_out)
        is_output = i == len(dims) - 2
        nn.init.orthogonal_(layer.weight, out_gain if is_output else np.sqrt(2))
        nn.init.zeros_(layer.bias)
        layers += [layer] if is_output else [layer, nn.Tanh()]
    return nn.Sequential(*layers)


class Actor(nn.Module):
    """Diagonal Gaussian policy: MLP mean, state-independent log std initialised to 0."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple = (64, 64)):
        super().__init__()
        self.mean = mlp(obs_dim, act_dim, out_gain=0.01, hidden=hidden)
        self.log_std = nn.Parameter(torch.zeros(act_dim))

    def forward(self, obs: torch.Tensor) -> Normal:
        """obs [B, obs_dim] -> Normal with batch shape [B, act_dim] (one factor per action dimension)."""
        mean = self.mean(obs)
        return Normal(mean, self.log_std.exp().expand_as(mean))


class Critic(nn.Module):
    """State-value function V(s) of the reward or of the cost."""

    def __init__(self, obs_dim: int, hidden: tuple = (64, 64)):
        super().__init__()
        self.net = mlp(obs_dim, 1, out_gain=1.0, hidden=hidden)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """obs [..., obs_dim] -> values [...]."""
        return self.net(obs).squeeze(-1)


def critic_loss(critic: Critic, obs: torch.Tensor, target: torch.Tensor, l2_coef: float) -> torch.Tensor:
    """Mean squared error to the targets plus l2_coef * (sum of squared parameters) (SPEC §2)."""
    l2 = sum(param.pow(2).sum() for param in critic.parameters())
    return (critic(obs) - target).pow(2).mean() + l2_coef * l2


# ---------------------------------------------------------------------------------------------
# Advantages and the Lagrange multiplier (SPEC §1-2)
# ---------------------------------------------------------------------------------------------
def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    dones: torch.Tensor,
    gamma: float,
    gae_lambda: float,
) -> torch.Tensor:
    """Generalised advantage estimates, all arguments and the result of shape [T, N].

    next_values[t] is V of the state reached by step t: the next observation, or the normalised
    final observation if the episode was truncated at t; it is ignored where terminated[t] (the
    bootstrap is 0 there). dones[t] = terminated[t] or truncated[t] cuts the recursion. At the
    epoch's last step an unfinished episode is bootstrapped with next_values[-1].
    """
    deltas = rewards + gamma * next_values * (~terminated) - values
    not_done = (~dones).to(rewards.dtype)
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in reversed(range(len(rewards))):
        running = deltas[t] + gamma * gae_lambda * not_done[t] * running
        advantages[t] = running
    return advantages


class Lagrange:
    """Lagrange multiplier lambda >= 0 trained by Adam on -lambda * (J_c - d) (SPEC §2)."""

    def __init__(self, cost_limit: float, init: float, lr: float):
        self.cost_limit = cost_limit
        self.multiplier = nn.Parameter(torch.tensor(float(init)))
        self.optimizer = torch.optim.Adam([self.multiplier], lr=lr)

    @property
    def value(self) -> float:
        return self.multiplier.item()

    def update(self, mean_episode_cost: float) -> None:
        """One Adam step: lambda rises if J_c > d, falls (never below 0) if J_c < d."""
        self.optimizer.zero_grad()
        loss = -self.multiplier * (mean_episode_cost - self.cost_limit)
        loss.backward()
        self.optimizer.step()
        with torch.no_grad():
            self.multiplier.clamp_(min=0.0)


# ---------------------------------------------------------------------------------------------
# PPO-Lag update (SPEC §3)
# ---------------------------------------------------------------------------------------------
def ppo_surrogate(
    dist: Normal, act: torch.Tensor, logp_old: torch.Tensor, adv: torch.Tensor, clip_coef: float
) -> torch.Tensor:
    """Clipped surrogate L^clip = mean[min(r A, clip(r, 1 - eps, 1 + eps) A)] (scalar, maximised)."""
    ratio = torch.exp(dist.log_prob(act).sum(-1) - logp_old)
    return torch.min(ratio * adv, ratio.clamp(1.0 - clip_coef, 1.0 + clip_coef) * adv).mean()


def ppo_update(
    actor: Actor,
    reward_critic: Critic,
    cost_critic: Critic,
    optimizers: list,
    batch: dict,
    args: Args,
) -> dict:
    """Up to `update_epochs` passes of minibatch Adam steps on actor and critics, joint gradient
    clip; stops after a pass whose mean KL(pi_old || pi), summed over action dimensions, exceeds
    `target_kl`. `batch` holds flat tensors obs, act, logp, adv, target_r, target_c. Returns the
    epoch's mean losses and diagnostics, keyed by TensorBoard tag."""
    params = [*actor.parameters(), *reward_critic.parameters(), *cost_critic.parameters()]
    with torch.no_grad():
        old_dist = actor(batch["obs"])
    history = defaultdict(list)
    for update_epoch in range(args.update_epochs):
        for mb in torch.randperm(len(batch["obs"])).split(args.minibatch_size):
            obs = batch["obs"][mb]
            for optimizer in optimizers:
                optimizer.zero_grad()
            reward_loss = critic_loss(reward_critic, obs, batch["target_r"][mb], args.critic_l2_coef)
            cost_loss = critic_loss(cost_critic, obs, batch["target_c"][mb], args.critic_l2_coef)
            (reward_loss + cost_loss).backward()
            surrogate = ppo_surrogate(actor(obs), batch["act"][mb], batch["logp"][mb], batch["adv"][mb], args.clip_coef)
            (-surrogate).backward()
            nn.utils.clip_grad_norm_(params, args.max_grad_norm)
            for optimizer in optimizers:
                optimizer.step()
            history["losses/policy_loss"].append(-surrogate.item())
            history["losses/reward_critic_loss"].append(reward_loss.item())
            history["losses/cost_critic_loss"].append(cost_loss.item())
        with torch.no_grad():
            kl = kl_divergence(old_dist, actor(batch["obs"])).sum(-1).mean().item()
        if kl > args.target_kl:
            break
    stats = {key: float(np.mean(values)) for key, values in history.items()}
    stats.update({"losses/approx_kl": kl, "losses/update_epochs": update_epoch + 1})
    return stats


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------
def check_args(args: Args) -> None:
    """Raise ValueError with a one-line message for the first meaningless flag."""
    check_env_id(args.env_id)
    positive = ("num_envs", "steps_per_epoch", "total_timesteps", "critic_lr", "lambda_lr", "max_grad_norm")
    positive += ("learning_rate", "update_epochs", "minibatch_size", "clip_coef", "target_kl")
    non_negative = ("cost_limit", "lagrangian_multiplier_init", "critic_l2_coef")
    for name in positive:
        if not getattr(args, name) > 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    for name in non_negative:
        if not getattr(args, name) >= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    if not (0 < args.gamma <= 1 and 0 <= args.gae_lambda <= 1):
        raise ValueError(f"need 0 < --gamma <= 1 and 0 <= --gae-lambda <= 1, got {args.gamma} and {args.gae_lambda}")
    if args.steps_per_epoch % args.num_envs:
        raise ValueError(
            f"--steps-per-epoch ({args.steps_per_epoch}) must be divisible by --num-envs ({args.num_envs})"
        )
    if args.total_timesteps < args.steps_per_epoch:
        raise ValueError(
            f"--total-timesteps ({args.total_timesteps}) must be at least --steps-per-epoch ({args.steps_per_epoch})"
        )
    if args.max_episode_steps is not None and args.max_episode_steps <= 0:
        raise ValueError(f"--max-episode-steps must be positive, got {args.max_episode_steps}")


def main(args: Args) -> dict:
    """Train for total_timesteps // steps_per_epoch epochs; return the final actor, critics and
    Lagrange multiplier (keys actor, reward_critic, cost_critic, lagrange)."""
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    envs = make_vector_env(args)
    run_name = f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"
    writer = SummaryWriter(f"runs/{run_name}")
    writer.add_text(
        "hyperparameters",
        "|param|value|\n|-|-|\n" + "\n".join(f"|{key}|{value}|" for key, value in vars(args).items()),
    )
    try:
        return train(args, envs, writer)
    finally:
        envs.close()
        writer.close()


def train(args: Args, envs: NormalizeObservation, writer: SummaryWriter) -> dict:
    """The training loop (SPEC §2, §9): per epoch, a rollout of steps_per_epoch transitions, the
    Lagrange multiplier update, GAE for reward and cost, the policy and critic updates, logging."""
    obs_dim = envs.single_observation_space.shape[0]
    act_dim = envs.single_action_space.shape[0]
    actor = Actor(obs_dim, act_dim)
    reward_critic, cost_critic = Critic(obs_dim), Critic(obs_dim)
    actor_optimizer = torch.optim.Adam(actor.parameters(), lr=args.learning_rate)
    critic_optimizers = [
        torch.optim.Adam(critic.parameters(), lr=args.critic_lr) for critic in (reward_critic, cost_critic)
    ]
    lagrange = Lagrange(args.cost_limit, args.lagrangian_multiplier_init, args.lambda_lr)

    num_steps, num_envs = args.steps_per_epoch // args.num_envs, args.num_envs
    num_epochs = args.total_timesteps // args.steps_per_epoch
    obs_buf = torch.zeros((num_steps, num_envs, obs_dim))
    act_buf = torch.zeros((num_steps, num_envs, act_dim))
    logp_buf = torch.zeros((num_steps, num_envs))
    next_obs_buf = torch.zeros((num_steps, num_envs, obs_dim))
    reward_buf = torch.zeros((num_steps, num_envs))
    cost_buf = torch.zeros((num_steps, num_envs))
    terminated_buf = torch.zeros((num_steps, num_envs), dtype=torch.bool)
    done_buf = torch.zeros((num_steps, num_envs), dtype=torch.bool)

    tracker = EpisodeTracker(num_envs)
    next_obs, _ = envs.reset(seed=args.seed)
    global_step, cumulative_cost, mean_episode_cost = 0, 0.0, None
    start_time = time.time()
    for epoch in range(num_epochs):
        # ---- rollout: steps_per_epoch transitions; episodes run on across epochs ----
        episodes = []
        for t in range(num_steps):
            obs = torch.as_tensor(next_obs, dtype=torch.float32)
            with torch.no_grad():
                dist = actor(obs)
                action = dist.sample()
                logp = dist.log_prob(action).sum(-1)
            next_obs, reward, cost, terminated, truncated, info = envs.step(action.numpy())
            global_step += num_envs
            done = terminated | truncated
            # the state each step reached: the episode's final observation where it was truncated
            real_next_obs = next_obs.copy()
            for i in np.flatnonzero(truncated):
                real_next_obs[i] = info["final_observation"][i]
            obs_buf[t], next_obs_buf[t], act_buf[t], logp_buf[t] = obs, torch.as_tensor(real_next_obs), action, logp
            reward_buf[t], cost_buf[t] = torch.as_tensor(reward), torch.as_tensor(cost)
            terminated_buf[t], done_buf[t] = torch.as_tensor(terminated), torch.as_tensor(done)
            cumulative_cost += float(cost.sum())
            for episode_return, episode_cost, episode_length in tracker.step(reward, cost, done):
                writer.add_scalar("charts/episodic_return", episode_return, global_step)
                writer.add_scalar("charts/episodic_cost", episode_cost, global_step)
                writer.add_scalar("charts/episodic_length", episode_length, global_step)
                episodes.append((episode_return, episode_cost))

        # ---- Lagrange multiplier, once per epoch, before the policy update ----
        if episodes:
            mean_episode_cost = float(np.mean([cost for _, cost in episodes]))
        if mean_episode_cost is not None:
            lagrange.update(mean_episode_cost)

        # ---- advantages for reward and cost ----
        with torch.no_grad():
            advantages, targets = [], []
            for critic, rewards in ((reward_critic, reward_buf), (cost_critic, cost_buf)):
                values, next_values = critic(obs_buf), critic(next_obs_buf)
                adv = compute_gae(rewards, values, next_values, terminated_buf, done_buf, args.gamma, args.gae_lambda)
                advantages.append(adv.flatten())
                targets.append((adv + values).flatten())
        adv_r, adv_c = advantages
        adv_r = (adv_r - adv_r.mean()) / (adv_r.std() + 1e-8)
        adv_c = adv_c - adv_c.mean()
        lam = lagrange.value
        batch = {
            "obs": obs_buf.reshape(-1, obs_dim),
            "act": act_buf.reshape(-1, act_dim),
            "logp": logp_buf.flatten(),
            "adv": (adv_r - lam * adv_c) / (1.0 + lam),
            "target_r": targets[0],
            "target_c": targets[1],
        }

        # ---- policy and critic update ----
        if args.anneal_lr:
            actor_optimizer.param_groups[0]["lr"] = args.learning_rate * (1.0 - epoch / num_epochs)
        stats = ppo_update(actor, reward_critic, cost_critic, [actor_optimizer, *critic_optimizers], batch, args)

        # ---- logging ----
        steps_per_second = global_step / (time.time() - start_time)
        stats.update(
            {
                "charts/lagrange_multiplier": lam,
                "charts/cumulative_cost": cumulative_cost,
                "charts/cost_rate": cumulative_cost / global_step,
                "charts/learning_rate": actor_optimizer.param_groups[0]["lr"],
                "charts/SPS": steps_per_second,
            }
        )
        if mean_episode_cost is not None:
            stats["charts/Jc"] = mean_episode_cost
        if episodes:
            stats["charts/epoch_mean_return"] = float(np.mean([ret for ret, _ in episodes]))
            stats["charts/epoch_mean_cost"] = float(np.mean([cost for _, cost in episodes]))
        for key, value in stats.items():
            writer.add_scalar(key, value, global_step)
        mean_return = stats.get("charts/epoch_mean_return", float("nan"))
        mean_cost = stats.get("charts/epoch_mean_cost", float("nan"))
        print(
            f"epoch {epoch + 1}/{num_epochs} step {global_step} | episodes {len(episodes)} "
            f"return {mean_return:.2f} cost {mean_cost:.2f} | lambda {lam:.4f} | {steps_per_second:.0f} steps/s",
            flush=True,
        )
    return {"actor": actor, "reward_critic": reward_critic, "cost_critic": cost_critic, "lagrange": lagrange}


if __name__ == "__main__":
    cli_args = tyro.cli(Args)
    try:
        check_args(cli_args)
    except ValueError as error:
        sys.exit(f"{os.path.basename(__file__)}: error: {error}")
    main(cli_args)
