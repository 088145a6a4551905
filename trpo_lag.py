"""TRPO-Lag: trust region policy optimisation with a Lagrange multiplier on the episodic cost.

Single-file reference baseline of the SHAPO project. Run with
    python trpo_lag.py --env-id SafetyPointGoal1-v0
and see `python trpo_lag.py --help` for every flag. TensorBoard logs go to runs/<run_name>/.
"spec §n" below is section n of docs/spec.md, which gives the source of every choice (here §2, §4, §8).
"""

import copy
import dataclasses
import importlib.util
import math
import os
import re
import shutil
import signal
import sys
import time
from collections import namedtuple
from dataclasses import dataclass
from functools import partial
from types import SimpleNamespace
from typing import Annotated, Callable, Literal, Optional

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import tyro
import yaml
from gymnasium.wrappers.normalize import RunningMeanStd
from torch.distributions import Normal, kl_divergence
from torch.utils.tensorboard import SummaryWriter

SCRIPT = os.path.basename(__file__)
os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering (evaluate.py's videos); read when MuJoCo is imported


def import_safety_gymnasium():
    """Import safety_gymnasium 1.0.0 on Python >= 3.11 (spec §11): its asset dataclasses have NumPy
    arrays as field defaults, which 3.11 rejects; during the import each becomes a default_factory."""
    plain_dataclass = dataclasses.dataclass

    def numpy_safe_dataclass(cls):  # safety_gymnasium 1.0.0 applies the bare @dataclass only
        for name in cls.__dict__.get("__annotations__", {}):
            if isinstance(default := cls.__dict__.get(name), np.ndarray):
                setattr(cls, name, dataclasses.field(default_factory=default.copy))
        return plain_dataclass(cls)

    dataclasses.dataclass = numpy_safe_dataclass
    import safety_gymnasium

    dataclasses.dataclass = plain_dataclass
    return safety_gymnasium


safety_gymnasium = import_safety_gymnasium()


@dataclass
class Args:
    exp_name: str = SCRIPT[: -len(".py")]  # name of the experiment: runs/<env-id>__<exp-name>__<seed>__<unix-time>/
    seed: int = 0  # seed of the run: PyTorch's seed and each environment's are drawn from it (see draw_seeds)
    env_id: str = "SafetyPointGoal1-v0"  # a safety-gymnasium vector-observation task, or Ant-v4 / Walker2d-v4
    total_timesteps: int = 10_000_000  # environment steps of the whole run, all envs together
    num_envs: int = 5  # number of environments, stepped one after another in this process (see --async-envs)
    steps_per_epoch: int = 20_000  # transitions collected per epoch (one policy update), all envs together
    cost_limit: float = 25.0  # d: bound on the expected undiscounted episodic cost
    max_episode_steps: Optional[int] = None  # override the task's time limit (for tests and debugging)
    save_model: bool = False  # write <run folder>/checkpoint.pt every --save-every epochs, at the end and when stopped
    save_every: int = 10  # epochs between checkpoints with --save-model
    resume: Optional[str] = None  # checkpoint to continue from, in its run folder; give the run's other flags again
    gamma: float = 0.99  # discount factor of reward and cost
    gae_lambda: float = 0.95  # lambda of generalised advantage estimation
    lagrange_multiplier_init: Annotated[float, tyro.conf.arg(aliases=("--lagrangian-multiplier-init",))] = 0.001
    """initial value of the Lagrange multiplier lambda"""
    lagrange_multiplier_lr: Annotated[float, tyro.conf.arg(aliases=("--lambda-lr",))] = 0.035
    """Adam learning rate of the Lagrange multiplier (--lagrangian adam)"""
    critic_l2_coef: float = 0.001  # weight of the L2 penalty on the critics' parameters
    max_grad_norm: float = 40.0  # gradient-norm clip
    critic_lr: float = 1e-3  # Adam learning rate of the reward and cost critics
    critic_update_epochs: int = 10  # passes over the batch for the critics per epoch
    critic_minibatch_size: int = 128  # transitions per critic minibatch
    target_kl: float = 0.01  # delta: trust-region radius, bound on the mean KL(pi_old || pi) of an update
    cg_iters: int = 15  # conjugate-gradient iterations of the natural-gradient solve
    cg_damping: float = 0.1  # damping added to the Fisher matrix: (F + damping I) x = g
    line_search_steps: int = 15  # backtracking line-search tries
    line_search_decay: float = 0.8  # step shrink factor per line-search try
    lagrangian: Literal["adam", "pid"] = "adam"  # multiplier update: Adam (spec §2) or the release's PID (spec §8)
    pid_kp: float = 0.1  # PID Lagrangian: proportional gain
    pid_ki: float = 0.01  # PID Lagrangian: integral gain
    pid_kd: float = 0.01  # PID Lagrangian: derivative gain
    cuda: bool = False  # networks and batches on the GPU (the envs stay on the CPU); an error if there is none
    compile: bool = False  # torch.compile the minibatch step; needs a C++ compiler on CPU; the first epoch pays warm-up
    async_envs: bool = False  # step each env in a subprocess of its own (for machines with a core per env to spare)
    track: bool = False  # mirror the TensorBoard log to Weights & Biases (pip install -r requirements-track.txt)
    wandb_project_name: str = "shapo"  # W&B project of --track
    wandb_entity: Optional[str] = None  # W&B team or user of --track (None: your default)


FALL_COST_ENVS = ("Ant-v4", "Walker2d-v4")


class StepCost(gym.Wrapper):
    """A Gymnasium task stepped as a safety task (spec §2): a step of Ant-v4 or Walker2d-v4 costs 1 if the agent fell
    there ([R]); any other task reports its step's cost as info["cost"] (ValueError at a step that does not)."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.fall_cost = env.spec.id in FALL_COST_ENVS

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        cost = terminated if self.fall_cost else info.get("cost")
        if cost is None:
            raise ValueError(f"{self.spec.id} reports no cost: its step must return info['cost'] (see README)")
        return obs, reward, float(cost), terminated, truncated, info


def make_env(env_id: str, max_episode_steps: Optional[int] = None, render_mode: Optional[str] = None) -> gym.Env:
    """One safety environment taking actions in [-1, 1], mapped affinely onto the task's range and not clipped, as in
    OmniSafe and SafePO: the task charges its control cost on the action as sampled, MuJoCo clamps the control
    (spec §2). A safety-gymnasium task, or any Gymnasium id ("module:Id" imports the module that registers it)
    through StepCost."""
    if env_id in safety_gymnasium.utils.registration.safe_registry:
        env = safety_gymnasium.make(env_id, max_episode_steps=max_episode_steps, render_mode=render_mode)
    else:
        env = StepCost(gym.make(env_id, max_episode_steps=max_episode_steps, render_mode=render_mode))
    return gym.experimental.wrappers.RescaleActionV0(env, np.float32(-1.0), np.float32(1.0))


def set_skybox(plain: bool) -> None:
    """Choose the skybox of the navigation-task models this process compiles from now on. Nearly all of a reset's
    ~1.3 s goes into decoding the skybox images, which only rendering uses; MuJoCo's builtin gradient (plain)
    leaves observations, physics, rewards and costs bit-identical, and resets take milliseconds (spec §11)."""

    def load(file, Loader):  # safety_gymnasium.world reads nothing but its assets.yaml with yaml
        assets = yaml.load(file, Loader)
        if plain:
            assets["textures"]["skybox"] = {"@type": "skybox", "@builtin": "gradient", "@width": "32", "@height": "32"}
        return assets

    safety_gymnasium.world.yaml = SimpleNamespace(load=load, FullLoader=yaml.FullLoader)


def make_envs(args: Args):
    """The run's args.num_envs environments (plain skybox), stepped one after another in this process or, with
    --async-envs, each in a subprocess that blocks SIGINT and SIGTERM: the main process stops them itself."""
    set_skybox(plain=True)
    env_fns = [partial(make_env, args.env_id, args.max_episode_steps)] * args.num_envs
    if not args.async_envs:
        return safety_gymnasium.vector.SafetySyncVectorEnv(env_fns)
    signal.pthread_sigmask(signal.SIG_BLOCK, (signal.SIGINT, signal.SIGTERM))
    try:  # the subprocesses start here and inherit the mask
        return safety_gymnasium.vector.SafetyAsyncVectorEnv(env_fns)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, (signal.SIGINT, signal.SIGTERM))


class ObsNormalizer(RunningMeanStd):
    """Running mean and variance of the observations, shared by all envs (spec §2)."""

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return (obs - self.mean) / np.sqrt(self.var + 1e-8)

    def state_dict(self) -> dict:
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.mean, self.var, self.count = state["mean"], state["var"], state["count"]


def mlp(in_dim: int, out_dim: int, hidden: tuple = (64, 64)) -> nn.Sequential:
    """Tanh MLP with PyTorch's default nn.Linear initialisation, as the release and SafePO have it."""
    dims = (in_dim, *hidden)
    layers = [layer for fan_in, fan_out in zip(dims, dims[1:]) for layer in (nn.Linear(fan_in, fan_out), nn.Tanh())]
    return nn.Sequential(*layers, nn.Linear(dims[-1], out_dim))


class Actor(nn.Module):
    """Diagonal Gaussian policy: MLP mean, state-independent log std initialised to 0."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple = (64, 64)):
        super().__init__()
        self.mean = mlp(obs_dim, act_dim, hidden)
        self.log_std = nn.Parameter(torch.zeros(act_dim))

    def forward(self, obs: torch.Tensor) -> Normal:
        """obs [B, obs_dim] -> Normal with batch shape [B, act_dim] (one factor per action dimension)."""
        mean = self.mean(obs)
        # no argument checks: each would be a device sync; non-finite values are caught after each update instead
        return Normal(mean, self.log_std.exp().expand_as(mean), validate_args=False)


def critic_loss(critic: nn.Module, obs: torch.Tensor, target: torch.Tensor, l2_coef: float) -> torch.Tensor:
    """Mean squared error of V(obs) [B] to the targets [B], plus l2_coef * (sum of squared parameters) (spec §2)."""
    squared_norm = nn.utils.parameters_to_vector(critic.parameters()).pow(2).sum()  # one sum: fewer operations to run
    return (critic(obs).squeeze(-1) - target).pow(2).mean() + l2_coef * squared_norm


def compute_gae(rewards, values, next_values, terminated, dones, gamma: float, gae_lambda: float) -> torch.Tensor:
    """Generalised advantage estimates; all arguments and the result are [T, N] float tensors.
    next_values[t] is V of the state step t reached (see rollout); terminated[t] = 1 makes that
    bootstrap 0, dones[t] = 1 (terminated or truncated) cuts the recursion (spec §2)."""
    deltas = rewards + gamma * next_values * (1.0 - terminated) - values
    advantages, running = torch.zeros_like(rewards), torch.zeros_like(rewards[0])
    for t in reversed(range(len(rewards))):
        running = advantages[t] = deltas[t] + gamma * gae_lambda * (1.0 - dones[t]) * running
    return advantages


def make_batch(data: dict, reward_critic: nn.Module, cost_critic: nn.Module, multiplier: float, args: Args) -> dict:
    """The flat batch (B = T N rows) of an epoch's rollout `data`: GAE of reward and cost, targets =
    advantage + V, A_r standardised, A_c mean-centred, combined advantage A = (A_r - lambda A_c) / (1 + lambda)
    (spec §2). Keys obs, act, logp, adv, target_reward, target_cost."""
    batch = {"obs": data["obs"].flatten(0, 1), "act": data["act"].flatten(0, 1), "logp": data["logp"].flatten()}
    advantages = {}
    with torch.no_grad():
        for name, critic in (("reward", reward_critic), ("cost", cost_critic)):
            values, next_values = critic(data["obs"]).squeeze(-1), critic(data["next_obs"]).squeeze(-1)
            adv = compute_gae(
                data[name], values, next_values, data["terminated"], data["done"], args.gamma, args.gae_lambda
            )
            advantages[name], batch[f"target_{name}"] = adv.flatten(), (adv + values).flatten()
    adv_r = (advantages["reward"] - advantages["reward"].mean()) / (advantages["reward"].std() + 1e-8)
    batch["adv"] = (adv_r - multiplier * (advantages["cost"] - advantages["cost"].mean())) / (1.0 + multiplier)
    return batch


def cost_estimate(window: list, episode_costs: list, size: int = 50) -> Optional[float]:
    """J_c of an epoch as SafePO and the release compute it (spec §2): each ended episode's cost joins
    `window`, the last `size` episodes' costs across epochs (updated in place); J_c is the mean, over
    this epoch's episode ends, of the window's mean at that end. None if no episode ended."""
    window_means = []
    for cost in episode_costs:
        window.append(cost)
        del window[:-size]
        window_means.append(np.mean(window))
    return float(np.mean(window_means)) if window_means else None


class Lagrange:
    """Lagrange multiplier lambda >= 0 trained by Adam on -lambda * (J_c - d) (spec §2)."""

    def __init__(self, cost_limit: float, init: float, lr: float):
        self.cost_limit, self.multiplier = cost_limit, float(init)
        self.parameter = torch.tensor(float(init), requires_grad=True)  # lambda before its clamp at 0
        self.optimizer = torch.optim.Adam([self.parameter], lr=lr)

    def update(self, mean_episode_cost: float) -> None:
        """One Adam step: lambda rises if J_c > d, falls (never below 0) if J_c < d."""
        self.optimizer.zero_grad()
        (-self.parameter * (mean_episode_cost - self.cost_limit)).backward()
        self.optimizer.step()
        with torch.no_grad():
            self.multiplier = self.parameter.clamp_(min=0.0).item()

    def state_dict(self) -> dict:
        return {"parameter": self.parameter.detach().clone(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            self.multiplier = self.parameter.copy_(state["parameter"]).item()
        self.optimizer.load_state_dict(state["optimizer"])


class PIDLagrange:
    """PID Lagrange multiplier of Stooke, Achiam and Abbeel (2020), the SHAPO release's baseline
    (spec §8), in SafePO's / OmniSafe's form: I <- max(0, I + ki (J_c - d)), P <- EMA of (J_c - d),
    C <- EMA of J_c, lambda = max(0, kp P + I + kd max(0, C - C of d_delay updates ago)), EMA weight
    ema_alpha on the past; lambda and I start at `init`. The release also holds lambda at 0.001 when
    its output is negative during a violation and leaves I unclamped then; we do not [I]."""

    def __init__(
        self, cost_limit: float, init: float, kp: float, ki: float, kd: float, d_delay: int = 10, ema_alpha=0.95
    ):
        self.cost_limit, self.d_delay, self.ema_alpha = cost_limit, d_delay, ema_alpha
        self.kp, self.ki, self.kd = kp, ki, kd  # the gains
        self.multiplier, self.integral, self.delta_p = float(init), float(init), 0.0
        self.cost_ema, self.cost_history = 0.0, [0.0]  # C, and its last d_delay values

    def update(self, mean_episode_cost: float) -> None:
        """One PID step on J_c = mean_episode_cost."""
        delta = mean_episode_cost - self.cost_limit
        self.integral = max(0.0, self.integral + self.ki * delta)
        self.delta_p = self.ema_alpha * self.delta_p + (1.0 - self.ema_alpha) * delta
        self.cost_ema = self.ema_alpha * self.cost_ema + (1.0 - self.ema_alpha) * mean_episode_cost
        derivative = max(0.0, self.cost_ema - self.cost_history[0])
        self.multiplier = max(0.0, self.kp * self.delta_p + self.integral + self.kd * derivative)
        self.cost_history = (self.cost_history + [self.cost_ema])[-self.d_delay :]

    STATE = ("multiplier", "integral", "delta_p", "cost_ema", "cost_history")  # what a checkpoint keeps of it

    def state_dict(self) -> dict:
        return {name: copy.deepcopy(getattr(self, name)) for name in self.STATE}

    def load_state_dict(self, state: dict) -> None:
        for name in self.STATE:
            setattr(self, name, copy.deepcopy(state[name]))


def flat_grad(output: torch.Tensor, params: tuple, **kwargs) -> torch.Tensor:
    """Gradient of the scalar `output` w.r.t. the tensors `params`, flattened into one vector."""
    return torch.cat([grad.reshape(-1) for grad in torch.autograd.grad(output, params, **kwargs)])


def set_flat_params(module: nn.Module, flat: torch.Tensor) -> None:
    """Copy the vector `flat` [n_params] into the parameters of `module`, in place."""
    with torch.no_grad():
        for param, value in zip(module.parameters(), flat.split([p.numel() for p in module.parameters()])):
            param.copy_(value.view_as(param))


def mean_kl(p: Normal, q: Normal) -> torch.Tensor:
    """KL(p || q) averaged over states and action dimensions (SafePO's convention, spec §4)."""
    return kl_divergence(p, q).mean()


def fisher_vector_product_fn(actor: Actor, obs: torch.Tensor, damping: float) -> Callable:
    """v -> (F + damping I) v for v [n_params] in the order of actor.parameters(), F the Hessian of
    mean_kl(pi_theta (held fixed), pi_theta') at theta' = theta, the actor's current parameters, over
    `obs` [B, obs_dim] (spec §4): a Hessian-vector product by double backward."""
    params, dist = tuple(actor.parameters()), actor(obs)
    kl_grad = flat_grad(mean_kl(Normal(dist.loc.detach(), dist.scale.detach()), dist), params, create_graph=True)
    return lambda v: flat_grad(kl_grad @ v, params, retain_graph=True) + damping * v


def conjugate_gradient(
    matrix_vector_product: Callable, b: torch.Tensor, iters: int, residual_tol: float = 1e-10, eps: float = 1e-6
) -> torch.Tensor:
    """Approximate solution x [n] of A x = b for a symmetric positive-definite A given as v -> A v, after
    at most `iters` iterations, as OmniSafe and the release write it (spec §4): `eps` added to both
    divisions, stop once |r| < residual_tol. A zero b gives x = 0."""
    x, residual, direction = torch.zeros_like(b), b.clone(), b.clone()
    residual_sq = residual @ residual
    for _ in range(iters):
        a_direction = matrix_vector_product(direction)
        alpha = residual_sq / (direction @ a_direction + eps)
        x += alpha * direction
        residual -= alpha * a_direction
        new_residual_sq = residual @ residual
        if new_residual_sq.sqrt() < residual_tol:
            break
        direction = residual + (new_residual_sq / (residual_sq + eps)) * direction
        residual_sq = new_residual_sq
    return x


def trpo_surrogate(dist: Normal, act: torch.Tensor, logp_old: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
    """Importance-sampled surrogate L = mean[r A], r = pi(a|s) / pi_old(a|s) (scalar, maximised)."""
    return (torch.exp(dist.log_prob(act).sum(-1) - logp_old) * adv).mean()


def trpo_update(actor: Actor, batch: dict, args: Args) -> dict:
    """One trust-region step of the actor on the whole batch (obs, act, logp, adv as from make_batch):
    x = CG(F, g), full step sqrt(2 delta / x^T F x) x, then a backtracking line search that accepts
    the first step with a finite surrogate no worse than before and mean KL <= delta; if none passes,
    the actor stays as it was. Returns diagnostics by TensorBoard tag."""
    obs, theta_old = batch["obs"], nn.utils.parameters_to_vector(actor.parameters()).detach()
    surrogate = partial(trpo_surrogate, act=batch["act"], logp_old=batch["logp"], adv=batch["adv"])  # dist -> L
    dist = actor(obs)
    surrogate_before = surrogate(dist)
    gradient = flat_grad(surrogate_before, tuple(actor.parameters()))
    fvp = fisher_vector_product_fn(actor, obs, args.cg_damping)
    x = conjugate_gradient(fvp, gradient, args.cg_iters)
    full_step = torch.sqrt(2.0 * args.target_kl / (x @ fvp(x) + 1e-8)) * x
    require_finite("natural-gradient step", full_step)
    old_dist = Normal(dist.loc.detach(), dist.scale.detach())
    with torch.no_grad():
        for backtracks in range(args.line_search_steps):
            step_fraction = args.line_search_decay**backtracks
            set_flat_params(actor, theta_old + step_fraction * full_step)
            new_dist = actor(obs)
            improvement, kl = surrogate(new_dist) - surrogate_before, mean_kl(old_dist, new_dist).item()
            if torch.isfinite(improvement) and improvement >= 0 and kl <= args.target_kl:
                break
        else:
            set_flat_params(actor, theta_old)
            step_fraction, kl = 0.0, 0.0
    return {
        "losses/policy_loss": -surrogate_before.item(),
        "losses/approx_kl": kl,
        "trpo/step_fraction": step_fraction,
        "trpo/backtracks": backtracks,
    }


def critics_step(agent: SimpleNamespace, minibatch: dict, args: Args) -> tuple:
    """One Adam step of both critics of `agent` on `minibatch` (obs, target_reward, target_cost), each gradient
    clipped on its own (spec §4). Returns the losses [2] and the gradient norms before the clips [2]."""
    agent.optimizer.zero_grad()
    losses, grad_norms = [], []
    for name, critic in (("reward", agent.reward_critic), ("cost", agent.cost_critic)):
        loss = critic_loss(critic, minibatch["obs"], minibatch[f"target_{name}"], args.critic_l2_coef)
        loss.backward()
        losses.append(loss.detach())
        grad_norms.append(nn.utils.clip_grad_norm_(critic.parameters(), args.max_grad_norm))
    agent.optimizer.step()
    return torch.stack(losses), torch.stack(grad_norms)


def update_critics(agent: SimpleNamespace, batch: dict, args: Args, stop: SimpleNamespace) -> dict:
    """`critic_update_epochs` passes of critics_step over minibatches of `batch` (as from make_batch). Returns
    the mean losses by TensorBoard tag. Raises StopRequested at the next minibatch once stop.signal is set."""
    minibatch_step = torch.compile(critics_step) if args.compile else critics_step
    losses, grad_norms = [], []  # kept as tensors: reading each minibatch's values would wait on the device
    for _ in range(args.critic_update_epochs):
        for indices in torch.randperm(len(batch["obs"])).to(batch["obs"].device).split(args.critic_minibatch_size):
            if stop.signal:
                raise StopRequested
            minibatch = {key: batch[key][indices] for key in ("obs", "target_reward", "target_cost")}
            minibatch_losses, grad_norm = minibatch_step(agent, minibatch, args)
            losses.append(minibatch_losses)
            grad_norms.append(grad_norm)
        require_finite("gradient of the reward or cost critic", torch.stack(grad_norms))
    reward_loss, cost_loss = torch.stack(losses).double().mean(0).tolist()
    return {"losses/reward_critic_loss": reward_loss, "losses/cost_critic_loss": cost_loss}


class StopRequested(Exception):
    """Raised inside an epoch once a stop is requested (Ctrl-C, SIGTERM): the epoch is abandoned."""


# an episode that ended during a rollout: the rollout step t at which it ended, and its totals
Episode = namedtuple("Episode", "t episode_return cost length")
RETURN, COST, LENGTH = range(3)  # the rows of a rollout's episode_sums


def rollout(
    envs, agent: SimpleNamespace, obs: np.ndarray, episode_sums: np.ndarray, num_steps: int, stop: SimpleNamespace
):
    """`num_steps` steps of every env from the normalised observations `obs` [N, obs_dim], actions drawn from
    agent.actor. Episodes run on across epochs, `episode_sums` [3, N] holding the RETURN, COST and LENGTH of each
    one under way (in place; the step that ends it counts, spec §2). Returns data (float32 CPU tensors obs, act, logp,
    next_obs, reward, cost, terminated, done, [T, N, ...]; next_obs[t] the state step t reached, the final observation
    where truncated), the next observations and the ended Episodes. Raises StopRequested once stop.signal is set."""
    actor, normalizer, device = agent.actor, agent.normalizer, next(agent.actor.parameters()).device
    num_envs, act_dim = obs.shape[0], envs.single_action_space.shape[0]
    vectors = {"obs": obs.shape[1:], "act": (act_dim,), "next_obs": obs.shape[1:]}  # the other fields: one number
    fields = ("obs", "act", "logp", "next_obs", "reward", "cost", "terminated", "done")
    data = {key: np.zeros((num_steps, num_envs, *vectors.get(key, ())), dtype=np.float32) for key in fields}
    episodes = []
    for t in range(num_steps):
        with torch.no_grad():
            dist = actor(torch.as_tensor(obs, dtype=torch.float32, device=device))
            action = dist.sample()
            logp = dist.log_prob(action).sum(-1)
        data["obs"][t], data["act"][t], data["logp"][t] = obs, action.cpu().numpy(), logp.cpu().numpy()
        next_obs, reward, cost, terminated, truncated, info = envs.step(data["act"][t])
        normalizer.update(next_obs)
        next_obs = normalizer(next_obs)
        data["next_obs"][t], data["reward"][t], data["cost"][t] = next_obs, reward, cost
        for i in np.flatnonzero(truncated):
            data["next_obs"][t, i] = normalizer(info["final_observation"][i])
        done = terminated | truncated
        data["terminated"][t], data["done"][t] = terminated, done
        episode_sums += [reward, cost, np.ones_like(reward)]
        for i in np.flatnonzero(done):
            episodes.append(Episode(t, episode_sums[RETURN, i], episode_sums[COST, i], episode_sums[LENGTH, i]))
            episode_sums[:, i] = 0.0
        obs = next_obs
        if stop.signal:
            raise StopRequested
    return {key: torch.from_numpy(value) for key, value in data.items()}, obs, episodes


def make_agent(obs_dim: int, act_dim: int, args: Args, device: torch.device) -> SimpleNamespace:
    """All that learns or keeps statistics: the actor (moved by trust-region steps), the critics V_r and V_c, one
    Adam for the critics, the Lagrange multiplier (Adam or PID) and the observation statistics. A checkpoint
    stores the parts named in CHECKPOINT_PARTS."""
    actor = Actor(obs_dim, act_dim).to(device)
    reward_critic = mlp(obs_dim, 1).to(device)
    cost_critic = mlp(obs_dim, 1).to(device)
    critic_params = [*reward_critic.parameters(), *cost_critic.parameters()]
    return SimpleNamespace(
        actor=actor,
        reward_critic=reward_critic,
        cost_critic=cost_critic,
        optimizer=torch.optim.Adam(critic_params, lr=args.critic_lr, foreach=True),  # foreach: the same numbers, faster
        lagrange=PIDLagrange(args.cost_limit, args.lagrange_multiplier_init, args.pid_kp, args.pid_ki, args.pid_kd)
        if args.lagrangian == "pid"
        else Lagrange(args.cost_limit, args.lagrange_multiplier_init, args.lagrange_multiplier_lr),
        normalizer=ObsNormalizer(shape=(obs_dim,)),
    )


def train(
    args: Args,
    envs,
    obs: np.ndarray,
    agent: SimpleNamespace,
    progress: SimpleNamespace,
    writer: SummaryWriter,
    stop: SimpleNamespace,
) -> None:
    """The epochs from progress.epoch on, from the envs' first normalised observations `obs` [N, obs_dim]: rollout,
    J_c and the Lagrange multiplier, advantages, update, logging and checkpoint (spec §2, §9)."""
    num_epochs = args.total_timesteps // args.steps_per_epoch
    checkpoint_path = os.path.join(writer.log_dir, "checkpoint.pt")
    episode_sums = np.zeros((3, args.num_envs))  # RETURN, COST and LENGTH of each env's episode under way
    start_time, start_step = time.time(), progress.global_step
    device = next(agent.actor.parameters()).device
    for epoch in range(progress.epoch, num_epochs):
        last_good = snapshot(args, agent, progress) if args.save_model else None
        rollout_start = time.perf_counter()
        try:
            data, obs, episodes = rollout(envs, agent, obs, episode_sums, args.steps_per_epoch // args.num_envs, stop)
            update_start = time.perf_counter()
            for episode in episodes:
                step = progress.global_step + (episode.t + 1) * args.num_envs
                writer.add_scalar("charts/episodic_return", episode.episode_return, step)
                writer.add_scalar("charts/episodic_cost", episode.cost, step)
                writer.add_scalar("charts/episodic_length", episode.length, step)
            progress.epoch, progress.global_step = epoch + 1, progress.global_step + args.steps_per_epoch
            progress.cumulative_cost += data["cost"].sum().item()
            data = {key: value.to(device) for key, value in data.items()}

            # J_c, the Lagrange multiplier (once per epoch, before the policy) and the update. A non-finite value stops
            # the run after the last good checkpoint (the checks name the quantity)
            if (estimate := cost_estimate(progress.cost_window, [episode.cost for episode in episodes])) is not None:
                progress.mean_episode_cost = estimate
            if progress.mean_episode_cost is not None:
                agent.lagrange.update(progress.mean_episode_cost)
                require_finite("Lagrange multiplier", agent.lagrange.multiplier)
            batch = make_batch(data, agent.reward_critic, agent.cost_critic, agent.lagrange.multiplier, args)
            require_finite("advantages or value targets", batch["adv"], batch["target_reward"], batch["target_cost"])
            stats = {**trpo_update(agent.actor, batch, args), **update_critics(agent, batch, args, stop)}
            require_finite("actor parameters", *agent.actor.parameters())
            if non_finite := [key for key, value in stats.items() if not math.isfinite(value)]:
                raise FloatingPointError(non_finite[0])
        except StopRequested:  # the epoch is abandoned; the checkpoint is that of its start
            saved = save_checkpoint(last_good, checkpoint_path)
            print(f"{SCRIPT}: stopped by {stop.signal} in epoch {epoch + 1}{saved}", flush=True)
            return
        except FloatingPointError as fault:
            saved = save_checkpoint(last_good, checkpoint_path)
            raise SystemExit(f"{SCRIPT}: error: non-finite or invalid {fault} in epoch {epoch + 1}{saved}") from None

        # logging (spec §9) and checkpoint
        stats["charts/lagrange_multiplier"] = agent.lagrange.multiplier
        stats["charts/Jc"] = progress.mean_episode_cost  # None (not logged) until an episode has ended
        stats["charts/cumulative_cost"] = progress.cumulative_cost
        stats["charts/cost_rate"] = progress.cumulative_cost / progress.global_step
        stats["charts/SPS"] = (progress.global_step - start_step) / (time.time() - start_time)
        stats["perf/rollout_seconds"] = update_start - rollout_start
        stats["perf/update_seconds"] = time.perf_counter() - update_start
        for key, value in stats.items():
            if value is not None:
                writer.add_scalar(key, value, progress.global_step)
        mean_return = np.mean([episode.episode_return for episode in episodes]) if episodes else math.nan
        mean_cost = np.mean([episode.cost for episode in episodes]) if episodes else math.nan
        print(
            f"epoch {epoch + 1}/{num_epochs} step {progress.global_step} | episodes {len(episodes)} "
            f"return {mean_return:.2f} cost {mean_cost:.2f} | lambda {agent.lagrange.multiplier:.4f} "
            f"| {stats['charts/SPS']:.0f} steps/s "
            f"| rollout {stats['perf/rollout_seconds']:.1f} s, update {stats['perf/update_seconds']:.1f} s",
            flush=True,
        )
        if args.save_model and (progress.epoch % args.save_every == 0 or progress.epoch == num_epochs):
            save_checkpoint(snapshot(args, agent, progress), checkpoint_path)


def main(args: Args, checkpoint: Optional[dict] = None) -> SimpleNamespace:
    """Train for total_timesteps // steps_per_epoch epochs from scratch, or from `checkpoint` (as load_checkpoint
    returns it) at its epoch with fresh episodes. Returns the run's agent."""
    # torch's seed and the envs': a resumed run draws them from its checkpoint's epoch, so it goes on the same way
    torch_seed, *env_seeds = draw_seeds(args.seed, 1 + args.num_envs, checkpoint["epoch"] if checkpoint else 0)
    torch.manual_seed(torch_seed)
    device = torch.device("cuda" if args.cuda else "cpu")
    envs = make_envs(args)
    obs_dim, act_dim = envs.single_observation_space.shape[0], envs.single_action_space.shape[0]
    agent = make_agent(obs_dim, act_dim, args, device)
    # where the run stands at an epoch boundary; J_c is mean_episode_cost, cost_window its episodes (cost_estimate)
    progress = SimpleNamespace(epoch=0, global_step=0, cumulative_cost=0.0, mean_episode_cost=None, cost_window=[])
    run_dir = f"runs/{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"
    if checkpoint:
        for name in CHECKPOINT_PARTS:
            getattr(agent, name).load_state_dict(checkpoint[name])
        progress = SimpleNamespace(**{key: checkpoint[key] for key in vars(progress)})
        run_dir = os.path.dirname(os.path.abspath(args.resume))
    if args.track:  # before the writer: W&B mirrors what it writes; a resumed run goes on in the W&B run of its folder
        import wandb

        run_name = os.path.basename(run_dir)
        wandb.init(
            project=args.wandb_project_name,
            entity=args.wandb_entity,
            sync_tensorboard=True,
            config=vars(args),
            name=run_name,
            group=run_name,
            id=re.sub(r"[^A-Za-z0-9_-]", "-", run_name),
            resume="allow",
        )
    # a resumed run first drops whatever the stopped one logged after its checkpoint
    writer = SummaryWriter(run_dir, purge_step=progress.global_step + 1 if checkpoint else None)
    if not checkpoint:
        rows = "\n".join(f"|{k}|{v}|" for k, v in vars(args).items())
        writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + rows)
    stop = SimpleNamespace(signal=None)  # the first SIGINT (Ctrl-C) or SIGTERM; the epoch under way is then abandoned

    def request_stop(signum: int, _frame) -> None:
        stop.signal = stop.signal or signal.Signals(signum).name

    handlers = {}  # the handlers to put back
    for signum in (signal.SIGINT, signal.SIGTERM):
        handlers[signum] = signal.signal(signum, request_stop)
    try:
        obs, _ = envs.reset(seed=env_seeds)
        agent.normalizer.update(obs)
        train(args, envs, agent.normalizer(obs), agent, progress, writer, stop)
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        envs.close()
        writer.close()
        if args.track:
            wandb.finish()
    return agent


# ==== Run management: seeds, argument checks, checkpoints and resume (evaluation and video: evaluate.py). ============
# ==== None of it changes what the algorithm above computes: a reader of the algorithm may stop here. ================
def draw_seeds(seed: int, count: int, epoch: Optional[int] = None) -> list:
    """`count` seeds (ints < 2^32) of run `seed` (spec §2) [I]: from the stream of the epoch a training process
    starts at (0, or a checkpoint's), or with epoch None from the evaluation stream. Runs, epochs and the
    evaluation draw from distinct streams: SafePO's env seeds seed + i made runs s and s + 1 share envs."""
    stream = np.random.SeedSequence(seed) if epoch is None else np.random.SeedSequence(seed, spawn_key=(epoch,))
    return stream.generate_state(count).tolist()


CHECKPOINT_VERSION = 2  # raise it whenever what a checkpoint holds changes
CHECKPOINT_PARTS = ("actor", "reward_critic", "cost_critic", "optimizer", "lagrange", "normalizer")  # of make_agent's
# flags a resumed run may change; all others must match the checkpoint's
RESUMABLE_FLAGS = "total_timesteps save_model save_every resume cuda async_envs track wandb_project_name wandb_entity"
SUPPORTED_TASKS = (
    "use a safety-gymnasium vector-observation task (e.g. SafetyPointGoal1-v0, SafetyHopperVelocity-v1), "
    f"one of {', '.join(FALL_COST_ENVS)}, or a Gymnasium task whose steps report info['cost'] (README)"
)


def snapshot(args: Args, agent: SimpleNamespace, progress: SimpleNamespace) -> dict:
    """A checkpoint (a deep copy): all the run needs to go on from the epoch boundary it is at."""
    states = {name: getattr(agent, name).state_dict() for name in CHECKPOINT_PARTS}
    header = {"version": CHECKPOINT_VERSION, "script": SCRIPT, "args": dict(vars(args))}
    return copy.deepcopy({**header, **vars(progress), **states})


def require_finite(quantity: str, *values) -> None:
    """Raise FloatingPointError(quantity) unless every value (a float or a tensor) is finite throughout."""
    if not all(torch.isfinite(torch.as_tensor(value)).all() for value in values):
        raise FloatingPointError(quantity)


def check_args(args: Args) -> None:
    """Raise ValueError with a one-line message for an unsupported task or the first meaningless flag."""
    for name, value in vars(args).items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"--{name.replace('_', '-')} must be a finite number, got {value}")
    if "Vision" in args.env_id or "Debug" in args.env_id:
        raise ValueError(f"unsupported --env-id {args.env_id!r}: {SUPPORTED_TASKS}")
    if args.env_id not in FALL_COST_ENVS and args.env_id not in safety_gymnasium.utils.registration.safe_registry:
        check_custom_env(args.env_id)
    positive = "num_envs steps_per_epoch total_timesteps max_episode_steps save_every critic_lr lagrange_multiplier_lr"
    positive += " max_grad_norm critic_update_epochs critic_minibatch_size target_kl cg_iters line_search_steps"
    positive += " line_search_decay"
    for name in positive.split():
        if getattr(args, name) is not None and not getattr(args, name) > 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    for name in "cost_limit lagrange_multiplier_init critic_l2_coef cg_damping pid_kp pid_ki pid_kd".split():
        if not getattr(args, name) >= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    if not (0 < args.gamma <= 1 and 0 <= args.gae_lambda <= 1):
        raise ValueError(f"need 0 < --gamma <= 1 and 0 <= --gae-lambda <= 1, got {args.gamma} and {args.gae_lambda}")
    if args.cuda and not torch.cuda.is_available():
        raise ValueError("--cuda: PyTorch sees no CUDA device here")
    if args.track and importlib.util.find_spec("wandb") is None:
        raise ValueError("--track needs wandb: pip install -r requirements-track.txt")
    if args.compile and not args.cuda and not any(shutil.which(cxx) for cxx in ("g++", "c++", "clang++")):
        raise ValueError("--compile on the CPU needs a C++ compiler (g++ or clang++) on the PATH")
    if args.steps_per_epoch % args.num_envs or args.total_timesteps < args.steps_per_epoch:
        raise ValueError("--steps-per-epoch must be a multiple of --num-envs and at most --total-timesteps")


def check_custom_env(env_id: str) -> None:
    """ValueError (one line) unless `env_id` makes a Gymnasium env with a flat Box observation and a Box action space
    whose first step reports a cost (StepCost)."""
    try:  # gymnasium's errors (unknown id, module not found, a constructor's), StepCost's (no cost) and ours
        with StepCost(gym.make(env_id)) as env:  # closed on every path
            spaces = (env.observation_space, env.action_space)
            if not all(isinstance(space, gym.spaces.Box) for space in spaces) or len(spaces[0].shape) != 1:
                raise ValueError("needs a flat Box observation space and a Box action space")
            env.reset(seed=0)
            env.step(env.action_space.sample())
    except Exception as error:
        raise ValueError(f"unsupported --env-id {env_id!r} ({error}): {SUPPORTED_TASKS}") from None


def load_checkpoint(path: str, args: Args) -> dict:
    """The checkpoint at `path`; ValueError (one line) if it cannot be read or comes from another script, task
    or settings."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)  # our own file: tensors, arrays, flags
    except Exception as error:
        raise ValueError(f"--resume: cannot read {path} as a checkpoint ({type(error).__name__})") from None
    found = checkpoint.get("script", "?") if isinstance(checkpoint, dict) else "?"
    if found != SCRIPT:
        raise ValueError(f"--resume: {path} is a checkpoint of {found}, not of {SCRIPT}")
    if (version := checkpoint.get("version", 1)) != CHECKPOINT_VERSION:
        raise ValueError(f"--resume: {path} has checkpoint format {version}, this {SCRIPT} reads {CHECKPOINT_VERSION}")
    for name in [name for name in vars(args) if name not in RESUMABLE_FLAGS.split()]:
        if checkpoint["args"].get(name) != getattr(args, name):
            flag, value = f"--{name.replace('_', '-')}", checkpoint["args"].get(name)
            raise ValueError(f"--resume: {path} was written with {flag} {value}, not {getattr(args, name)}")
    return checkpoint


def save_checkpoint(checkpoint: Optional[dict], path: str) -> str:
    """Write `checkpoint` atomically, so a file cut off half-way never replaces the last good one;
    None (no --save-model) writes nothing. Returns the words that tell the user."""
    if checkpoint is None:
        return ""
    torch.save(checkpoint, path + ".tmp")
    os.replace(path + ".tmp", path)
    return f"; last good checkpoint (step {checkpoint['global_step']}) in {path}"


if __name__ == "__main__":
    cli_args = tyro.cli(Args)
    try:
        check_args(cli_args)
        cli_checkpoint = load_checkpoint(cli_args.resume, cli_args) if cli_args.resume else None
    except ValueError as error:
        sys.exit(f"{SCRIPT}: error: {error}")
    main(cli_args, cli_checkpoint)
