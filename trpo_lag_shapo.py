"""SHAPO-TRPO-Lag: TRPO-Lag whose policy gradient is taken at a SHAPO-perturbed actor.

Single-file reference of SHAPO (paper Alg. 3; SPEC.md §2, §4-6). Run with
    python trpo_lag_shapo.py --env-id SafetyPointGoal1-v0
and see `python trpo_lag_shapo.py --help` for every flag. TensorBoard logs go to runs/<run_name>/.
"""

import copy
import dataclasses
import math
import os
import random
import signal
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from functools import partial
from types import SimpleNamespace
from typing import Callable, Literal, Optional

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering for --capture-video (read at MuJoCo's import)

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import tyro  # noqa: E402
from gymnasium.wrappers.normalize import RunningMeanStd  # noqa: E402
from torch.distributions import Normal, kl_divergence  # noqa: E402
from torch.utils.tensorboard import SummaryWriter  # noqa: E402

SCRIPT = os.path.basename(__file__)


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
from safety_gymnasium.wrappers import with_gymnasium_wrappers  # noqa: E402


@dataclass
class Args:
    exp_name: str = SCRIPT[: -len(".py")]
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
    """'async' steps each env in its own process; 'auto' does so only for navigation tasks without
    --fast-reset, whose resets take seconds"""
    max_episode_steps: Optional[int] = None
    """override the task's time limit (for tests and debugging); None keeps the task's own"""
    fast_reset: bool = False
    """plain skybox: navigation tasks reset in ms, not seconds; observations, physics, rewards, costs unchanged"""
    save_model: bool = False
    """write checkpoints into the run folder: every --save-every epochs, at the end, and on Ctrl-C / SIGTERM"""
    save_every: int = 10
    """epochs between checkpoints with --save-model"""
    resume: Optional[str] = None
    """checkpoint to continue from, in its run folder; give the run's other flags again"""
    eval_episodes: int = 0
    """episodes of the deterministic policy in a separate env, every --eval-every epochs and at the end"""
    eval_every: int = 10
    """epochs between evaluations with --eval-episodes"""
    eval_only: bool = False
    """only evaluate the --resume checkpoint for --eval-episodes episodes"""
    capture_video: bool = False
    """record the evaluation episodes into <run folder>/videos/step<global step>/ (MuJoCo renders headless via EGL)"""
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
    critic_lr: float = 1e-3
    """Adam learning rate of the reward and cost critics"""
    critic_update_epochs: int = 10
    """passes over the batch for the critics per epoch"""
    critic_minibatch_size: int = 128
    """transitions per critic minibatch"""
    target_kl: float = 0.01
    """delta: trust-region radius, bound on the mean KL(pi_old || pi) of an update"""
    cg_iters: int = 15
    """conjugate-gradient iterations of the natural-gradient solve"""
    cg_damping: float = 0.1
    """damping added to the Fisher matrix: (F + damping I) x = g"""
    line_search_steps: int = 15
    """backtracking line-search tries"""
    line_search_decay: float = 0.8
    """step shrink factor per line-search try"""
    lagrangian: Literal["adam", "pid"] = "adam"
    """Lagrange multiplier update: 'adam' (SPEC §2) or 'pid', the PID Lagrangian of the paper's baseline (SPEC §8)"""
    pid_kp: float = 0.1
    """PID Lagrangian: proportional gain"""
    pid_ki: float = 0.01
    """PID Lagrangian: integral gain"""
    pid_kd: float = 0.01
    """PID Lagrangian: derivative gain"""
    delta_down: float = 1e-5
    """delta_Down: KL radius of the SHAPO perturbation (SPEC §5); 0 recovers the base algorithm"""


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


def normalize(obs: np.ndarray, obs_rms: RunningMeanStd, epsilon: float = 1e-8) -> np.ndarray:
    """(obs - running mean) / sqrt(running var + epsilon); obs [..., obs_dim]."""
    return (obs - obs_rms.mean) / np.sqrt(obs_rms.var + epsilon)


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
        return normalize(obs, self.obs_rms, self.epsilon)

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


def random_generators(obj, path: str = "env", seen: Optional[set] = None) -> dict:
    """{attribute path: generator} for every NumPy Generator / RandomState and Python Random
    reachable from the env `obj` through the attributes, lists and dicts of gymnasium,
    safety-gymnasium and this script's objects; the spaces' own generators (they only serve
    space.sample(), never the dynamics) are left out."""
    seen = set() if seen is None else seen
    if id(obj) in seen or isinstance(obj, gym.spaces.Space):
        return {}
    seen.add(id(obj))
    if isinstance(obj, (np.random.Generator, np.random.RandomState, random.Random)):
        return {path: obj}
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    elif hasattr(obj, "__dict__") and type(obj).__module__.split(".")[0] in ("gymnasium", "safety_gymnasium", __name__):
        items = vars(obj).items()
    else:
        return {}
    found = {}
    for key, value in items:
        found.update(random_generators(value, f"{path}.{key}", seen))
    return found


def get_random_state(generator):
    if isinstance(generator, np.random.Generator):
        return generator.bit_generator.state
    return generator.get_state() if isinstance(generator, np.random.RandomState) else generator.getstate()


def set_random_state(generator, state) -> None:
    if isinstance(generator, np.random.Generator):
        generator.bit_generator.state = state
    elif isinstance(generator, np.random.RandomState):
        generator.set_state(state)
    else:
        generator.setstate(state)


class EpisodeReplay(gym.Wrapper):
    """Makes an env's state restorable, for --resume: remembers the state of every random
    generator in the env just before the current episode's reset, that reset's arguments and the
    actions taken since. (safety-gymnasium and gymnasium's MuJoCo envs pickle by re-construction,
    which loses their state.) Rebuilding the env, restoring the generators, resetting and replaying
    the actions gives back the same state: MuJoCo is deterministic on a given machine."""

    def reset(self, **kwargs):
        self.episode = {
            "random_states": {path: get_random_state(g) for path, g in random_generators(self.env).items()},
            "reset_kwargs": kwargs,
            "actions": [],
        }
        return self.env.reset(**kwargs)

    def step(self, action):
        self.episode["actions"].append(np.array(action))
        return self.env.step(action)

    def replay_state(self) -> dict:
        """What `restore` needs: {random_states, reset_kwargs, actions}."""
        return self.episode

    def restore(self, episode: dict) -> None:
        """Bring this freshly made env to the state `episode` (from replay_state) describes."""
        self.env.reset(seed=0)  # creates every generator of the env
        generators = random_generators(self.env)
        for path, state in episode["random_states"].items():
            set_random_state(generators[path], state)
        self.reset(**episode["reset_kwargs"])
        for action in episode["actions"]:
            self.step(action)


def use_plain_skybox() -> None:
    """--fast-reset, for this process. Each reset of a safety-gymnasium navigation task compiles a
    new MuJoCo model from XML, and nearly all of that time goes into decoding the six large skybox
    PNGs, which only colour rendered images (SPEC §11). From now on World.build reads an asset
    configuration, parsed once, whose skybox is MuJoCo's builtin gradient instead."""
    import safety_gymnasium.world as world

    if isinstance(world.yaml, SimpleNamespace):
        return
    real_yaml = world.yaml
    with open(os.path.join(world.BASE_DIR, "configs", "assets.yaml"), encoding="utf-8") as file:
        assets = real_yaml.load(file, Loader=real_yaml.FullLoader)
    assets["textures"]["skybox"] = {
        "@type": "skybox", "@builtin": "gradient", "@rgb1": "0.4 0.6 0.8", "@rgb2": "0 0 0", "@width": "32", "@height": "32"
    }

    def load(file, Loader=None):
        if os.path.basename(getattr(file, "name", "")) == "assets.yaml":
            return copy.deepcopy(assets)
        return real_yaml.load(file, Loader=Loader)

    world.yaml = SimpleNamespace(load=load, FullLoader=real_yaml.FullLoader)


def make_env(
    env_id: str,
    max_episode_steps: Optional[int] = None,
    render_mode: Optional[str] = None,
    episode: Optional[dict] = None,
    fast_reset: bool = False,
) -> Callable[[], gym.Env]:
    """Thunk building one environment with actions rescaled and clipped to [-1, 1] (SPEC §2),
    restored to `episode` (EpisodeReplay.replay_state) if given; fast_reset: use_plain_skybox."""

    def thunk() -> gym.Env:
        if fast_reset:
            use_plain_skybox()
        if env_id in FALL_COST_ENVS:
            env = FallCost(gym.make(env_id, max_episode_steps=max_episode_steps, render_mode=render_mode))
        else:
            env = safety_gymnasium.make(env_id, max_episode_steps=max_episode_steps, render_mode=render_mode)
        env = EpisodeReplay(gym.wrappers.ClipAction(gym.wrappers.RescaleAction(env, -1.0, 1.0)))
        if episode is not None:
            env.restore(episode)
        return env

    return thunk


def ignoring_interrupts(thunk: Callable[[], gym.Env]) -> Callable[[], gym.Env]:
    """For env subprocesses: Ctrl-C reaches the whole process group, but only the trainer acts on it."""

    def subprocess_thunk() -> gym.Env:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        return thunk()

    return subprocess_thunk


def make_vector_env(args: Args, episodes: Optional[list] = None) -> NormalizeObservation:
    """`args.num_envs` copies of `args.env_id` in a safety-gymnasium vector env, normalised;
    restored to `episodes` (one EpisodeReplay.replay_state per env) if given.

    Each step returns (obs [N, obs_dim], reward [N], cost [N], terminated [N], truncated [N], info);
    an env whose episode ended is reset at once, its last observation in info["final_observation"].
    """
    # 'auto': subprocesses pay off only where resets take seconds (navigation tasks without
    # --fast-reset); elsewhere pipes and process switches cost more than they save (README, throughput)
    slow_resets = "Velocity" not in args.env_id and args.env_id not in FALL_COST_ENVS and not args.fast_reset
    use_async = args.vector_env == "async" or (args.vector_env == "auto" and slow_resets)
    thunks = [
        make_env(args.env_id, args.max_episode_steps, None, None if episodes is None else episodes[i], args.fast_reset)
        for i in range(args.num_envs)
    ]
    if use_async:
        return NormalizeObservation(SafetyAsyncVectorEnv([ignoring_interrupts(thunk) for thunk in thunks]))
    return NormalizeObservation(SafetySyncVectorEnv(thunks))


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
        # no argument checks: they cost more than the forward pass on a few observations, and
        # check_finite stops training before a non-finite parameter can reach this point
        return Normal(mean, self.log_std.exp().expand_as(mean), validate_args=False)


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

    def state_dict(self) -> dict:
        return {"multiplier": self.multiplier.detach().clone(), "optimizer": copy.deepcopy(self.optimizer.state_dict())}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            self.multiplier.copy_(state["multiplier"])
        self.optimizer.load_state_dict(state["optimizer"])


class PIDLagrange:
    """PID Lagrange multiplier of Stooke, Achiam and Abbeel (2020), the baseline multiplier of the
    SHAPO release (SPEC §8), in the form of SafePO / OmniSafe:
        I <- max(0, I + ki (J_c - d)),   P <- EMA of (J_c - d),   C <- EMA of J_c,
        lambda = max(0, kp P + I + kd max(0, C - C of d_delay updates ago)),
    EMAs with weight ema_alpha on the past. The release additionally keeps lambda at 0.001 when the
    output is negative during a violation and leaves I unclamped while violating; we do not [I].
    lambda starts at `init`, which is also the integral's start."""

    def __init__(self, cost_limit: float, init: float, kp: float, ki: float, kd: float, d_delay: int = 10, ema_alpha: float = 0.95):
        self.cost_limit, self.kp, self.ki, self.kd, self.ema_alpha = cost_limit, kp, ki, kd, ema_alpha
        self.value, self.integral, self.delta_p, self.cost_ema = float(init), float(init), 0.0, 0.0
        self.d_delay, self.cost_history = d_delay, [0.0]  # the last d_delay cost EMAs

    def update(self, mean_episode_cost: float) -> None:
        """One PID step on J_c = mean_episode_cost."""
        delta = mean_episode_cost - self.cost_limit
        self.integral = max(0.0, self.integral + self.ki * delta)
        self.delta_p = self.ema_alpha * self.delta_p + (1.0 - self.ema_alpha) * delta
        self.cost_ema = self.ema_alpha * self.cost_ema + (1.0 - self.ema_alpha) * mean_episode_cost
        derivative = max(0.0, self.cost_ema - self.cost_history[0])
        self.value = max(0.0, self.kp * self.delta_p + self.integral + self.kd * derivative)
        self.cost_history = (self.cost_history + [self.cost_ema])[-self.d_delay :]

    def state_dict(self) -> dict:
        names = ("value", "integral", "delta_p", "cost_ema")
        return {**{name: getattr(self, name) for name in names}, "cost_history": list(self.cost_history)}

    def load_state_dict(self, state: dict) -> None:
        self.value, self.integral, self.delta_p, self.cost_ema = (state[k] for k in ("value", "integral", "delta_p", "cost_ema"))
        self.cost_history = list(state["cost_history"])


# ---------------------------------------------------------------------------------------------
# Natural-gradient tools: flat parameters, Fisher-vector product, conjugate gradient (SPEC §4)
# ---------------------------------------------------------------------------------------------
def flat_grad(output: torch.Tensor, inputs, **kwargs) -> torch.Tensor:
    """Gradient of the scalar `output` w.r.t. `inputs` (tensors), flattened into one vector."""
    return torch.cat([grad.reshape(-1) for grad in torch.autograd.grad(output, inputs, **kwargs)])


def flat_params(module: nn.Module) -> torch.Tensor:
    """The parameters of `module` as one detached vector [n_params]."""
    return torch.cat([param.detach().reshape(-1) for param in module.parameters()])


def params_from_flat(module: nn.Module, flat: torch.Tensor) -> dict:
    """Split `flat` [n_params] into {name: view shaped like that parameter}, for
    torch.func.functional_call: the module evaluated at other parameters, its own left untouched."""
    params, start = {}, 0
    for name, param in module.named_parameters():
        params[name] = flat[start : start + param.numel()].view_as(param)
        start += param.numel()
    return params


def mean_kl(p: Normal, q: Normal) -> torch.Tensor:
    """KL(p || q) averaged over states and action dimensions (SafePO's convention, SPEC §4)."""
    return kl_divergence(p, q).mean()


def fisher_vector_product_fn(actor: Actor, obs: torch.Tensor, damping: float) -> Callable:
    """Return v -> (F + damping I) v, v and result [n_params] in the order of actor.parameters(),
    where F is the Hessian of mean_kl(pi_theta (held fixed), pi_theta') at theta' = theta, the
    actor's current parameters, over the observations `obs` [B, obs_dim] (SPEC §4).

    At theta' = theta that Hessian is the Fisher matrix of the diagonal Gaussian policy:
        F = 1/(B A) [ sum_b J_b^T diag(1/sigma^2) J_b  (+)  2 B I_A ],
    J_b [A, n_mean] the Jacobian of the mean at obs[b] w.r.t. the MLP's parameters and I_A on
    the log-std entries (the mean-log-std block is 0 there). So F v needs no second-order
    autograd: J v is one forward-mode pass and J^T u one reverse-mode pass through the MLP's
    activations at `obs`, recorded once here; each product is a few [B, width] matmuls.
    Raises TypeError if actor.mean is not the alternation Linear, Tanh, ..., Linear of mlp()."""
    layers = list(actor.mean)
    if [type(m) for m in layers] != [nn.Linear, nn.Tanh] * (len(layers) // 2) + [nn.Linear]:
        raise TypeError("fisher_vector_product_fn needs actor.mean = Linear, Tanh, ..., Linear")
    weights = [layer.weight.detach() for layer in layers[::2]]
    with torch.no_grad():
        inputs, tanh_grads = [obs], []  # the input of each Linear; tanh' after each hidden one
        for weight, layer in zip(weights[:-1], layers[::2]):
            hidden = torch.tanh(inputs[-1] @ weight.T + layer.bias)
            inputs.append(hidden)
            tanh_grads.append(1.0 - hidden * hidden)
        precision = torch.exp(-2.0 * actor.log_std.detach())  # 1/sigma^2 [A]
    batch, act_dim = obs.shape[0], precision.numel()
    names = [name for name, _ in actor.named_parameters()]
    shapes = [param.shape for param in actor.parameters()]
    sizes = [param.numel() for param in actor.parameters()]
    block = {name: i for i, name in enumerate(names)}  # parameter name -> its index in the flat order
    linear_blocks = [(block[f"mean.{2 * i}.weight"], block[f"mean.{2 * i}.bias"]) for i in range(len(weights))]

    @torch.no_grad()
    def fisher_vector_product(vector: torch.Tensor) -> torch.Tensor:
        v = [piece.view(shape) for piece, shape in zip(vector.split(sizes), shapes)]
        tangent = None  # J v, built layer by layer (forward mode)
        for i, (weight, (w, b)) in enumerate(zip(weights, linear_blocks)):
            linear = torch.addmm(v[b], inputs[i], v[w].T)
            tangent = linear if tangent is None else linear.addmm_(tangent, weight.T)
            if i < len(tanh_grads):
                tangent.mul_(tanh_grads[i])
        cotangent = tangent.mul_(precision / (batch * act_dim))  # diag(1/sigma^2) J v / (B A), [B, A]
        product = [None] * len(names)
        product[block["log_std"]] = 2.0 / act_dim * v[block["log_std"]]
        for i in reversed(range(len(weights))):  # J^T cotangent (reverse mode)
            w, b = linear_blocks[i]
            product[w], product[b] = cotangent.T @ inputs[i], cotangent.sum(0)
            if i:
                cotangent = (cotangent @ weights[i]).mul_(tanh_grads[i - 1])
        return torch.cat([piece.reshape(-1) for piece in product]).add_(vector, alpha=damping)

    return fisher_vector_product


def conjugate_gradient(
    matrix_vector_product: Callable, b: torch.Tensor, iters: int, residual_tol: float = 1e-10
) -> torch.Tensor:
    """Approximate solution x [n] of A x = b for a symmetric positive-definite A given as
    v -> A v, after at most `iters` iterations (fewer once |r|^2 < residual_tol)."""
    x = torch.zeros_like(b)
    residual, direction = b.clone(), b.clone()
    residual_sq = residual @ residual
    for _ in range(iters):
        a_direction = matrix_vector_product(direction)
        alpha = residual_sq / (direction @ a_direction)
        x += alpha * direction
        residual -= alpha * a_direction
        new_residual_sq = residual @ residual
        if new_residual_sq < residual_tol:
            break
        direction = residual + (new_residual_sq / residual_sq) * direction
        residual_sq = new_residual_sq
    return x


# ---------------------------------------------------------------------------------------------
# SHAPO: the policy gradient at a pessimistically perturbed actor (SPEC §5; paper Alg. 3-4)
# ---------------------------------------------------------------------------------------------
def shapo_gradient(
    actor: Actor,
    obs: torch.Tensor,
    dist0: Normal,
    surrogate: Callable,
    fisher_vector_product: Callable,
    delta_down: float,
    cg_iters: int = 10,
    backtrack_steps: int = 10,
    backtrack_coef: float = 0.8,
    fallback_coef: float = 0.1,
) -> tuple:
    """Gradient of the surrogate at theta0 + epsilon, a step against it inside a KL ball (SPEC §5).

    Args:
        actor: the policy at theta0 (its parameters are read, never written).
        obs: observations [B, obs_dim] of the surrogate and of the KL check.
        dist0: actor(obs) with its autograd graph: the base algorithm's own forward pass, reused.
        surrogate: dist -> scalar objective L that the base algorithm maximises (its data,
            advantages and old log-probs bound in).
        fisher_vector_product: v -> (F(theta0) + damping I) v on `obs`, v [n_params].
        delta_down: KL radius delta_Down >= 0 of the perturbation; 0 gives the plain gradient.

    Steps: g = grad L(theta0); x = CG(F, g); epsilon = -sqrt(2 delta_down / x^T F x) x (downhill on
    L); shrink epsilon by backtrack_coef until mean KL(pi_theta0 || pi_theta0+epsilon) <= delta_down,
    else use fallback_coef * epsilon; return grad L(theta0 + epsilon).

    Returns (g_tilde [n_params], the perturbation epsilon actually used [n_params], diagnostics
    keyed by TensorBoard tag: the KL reached, |epsilon|, the backtracking count, cos(g, g_tilde)).
    """
    theta0 = flat_params(actor)
    gradient = flat_grad(surrogate(dist0), tuple(actor.parameters()))
    x = conjugate_gradient(fisher_vector_product, gradient, cg_iters)
    epsilon = -torch.sqrt(2.0 * delta_down / (x @ fisher_vector_product(x) + 1e-8)) * x

    fixed = Normal(dist0.loc.detach(), dist0.scale.detach())

    def kl_at(step: torch.Tensor) -> torch.Tensor:
        return mean_kl(fixed, torch.func.functional_call(actor, params_from_flat(actor, theta0 + step), (obs,)))

    with torch.no_grad():
        for backtracks in range(backtrack_steps):
            step = backtrack_coef**backtracks * epsilon
            kl = kl_at(step)
            if kl <= delta_down:
                break
        else:
            backtracks, step = backtrack_steps, fallback_coef * epsilon
            kl = kl_at(step)

    # The actor is evaluated at theta0 + step through functional_call, so theta0 stays in place
    # exactly and the optimiser never sees the perturbation.
    theta = (theta0 + step).requires_grad_()
    perturbed_dist = torch.func.functional_call(actor, params_from_flat(actor, theta), (obs,))
    perturbed_gradient = flat_grad(surrogate(perturbed_dist), (theta,))
    stats = {
        "shapo/kl": kl.item(),
        "shapo/perturbation_norm": step.norm().item(),
        "shapo/backtracks": backtracks,
        "shapo/cos_sim": torch.nn.functional.cosine_similarity(gradient, perturbed_gradient, dim=0).item(),
    }
    return perturbed_gradient, step, stats


# ---------------------------------------------------------------------------------------------
# TRPO-Lag update (SPEC §4)
# ---------------------------------------------------------------------------------------------
def trpo_surrogate(dist: Normal, act: torch.Tensor, logp_old: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
    """Importance-sampled surrogate L = mean[r A], r = pi(a|s) / pi_old(a|s) (scalar, maximised)."""
    return (torch.exp(dist.log_prob(act).sum(-1) - logp_old) * adv).mean()


def set_flat_params(module: nn.Module, flat: torch.Tensor) -> None:
    """Copy the vector `flat` [n_params] into the parameters of `module`."""
    with torch.no_grad():
        for param, value in zip(module.parameters(), params_from_flat(module, flat).values()):
            param.copy_(value)


def trpo_update(actor: Actor, batch: dict, args: Args) -> dict:
    """One trust-region step of the actor on the whole batch (flat tensors obs, act, logp, adv):
    x = CG(F, g), full step sqrt(2 delta / x^T F x) x, then backtracking line search that accepts
    the first step with a finite surrogate no worse than before and mean KL <= delta; if none
    passes the actor is left unchanged. Returns diagnostics keyed by TensorBoard tag."""
    obs = batch["obs"]

    def surrogate(dist: Normal) -> torch.Tensor:
        return trpo_surrogate(dist, batch["act"], batch["logp"], batch["adv"])

    dist = actor(obs)
    fvp = fisher_vector_product_fn(actor, obs, args.cg_damping)
    surrogate_before = surrogate(dist)
    gradient, _, shapo_stats = shapo_gradient(actor, obs, dist, surrogate, fvp, args.delta_down)
    if not torch.isfinite(gradient).all():
        raise FloatingPointError("policy gradient")
    x = conjugate_gradient(fvp, gradient, args.cg_iters)
    full_step = torch.sqrt(2.0 * args.target_kl / (x @ fvp(x) + 1e-8)) * x

    theta_old = flat_params(actor)
    old_dist = Normal(dist.loc.detach(), dist.scale.detach())
    step_fraction, kl = 0.0, 0.0
    with torch.no_grad():
        for backtracks in range(args.line_search_steps):
            candidate = theta_old + args.line_search_decay**backtracks * full_step
            new_dist = torch.func.functional_call(actor, params_from_flat(actor, candidate), (obs,))
            improvement = surrogate(new_dist) - surrogate_before
            new_kl = mean_kl(old_dist, new_dist)
            if torch.isfinite(improvement) and improvement >= 0 and new_kl <= args.target_kl:
                set_flat_params(actor, candidate)
                step_fraction, kl = args.line_search_decay**backtracks, new_kl.item()
                break
    stats = {
        "losses/policy_loss": -surrogate_before.item(),
        "losses/approx_kl": kl,
        "trpo/step_fraction": step_fraction,
        "trpo/backtracks": backtracks,
    }
    stats.update(shapo_stats)
    return stats


def update_critics(
    reward_critic: Critic, cost_critic: Critic, optimizers: list, batch: dict, args: Args
) -> dict:
    """`critic_update_epochs` passes of minibatch Adam steps on both critics, gradient clip per
    critic (SPEC §4). Returns the mean losses keyed by TensorBoard tag."""
    critics = (
        (reward_critic, batch["target_r"], "losses/reward_critic_loss"),
        (cost_critic, batch["target_c"], "losses/cost_critic_loss"),
    )
    history = defaultdict(list)
    for _ in range(args.critic_update_epochs):
        for mb in torch.randperm(len(batch["obs"])).split(args.critic_minibatch_size):
            for (critic, target, key), optimizer in zip(critics, optimizers):
                optimizer.zero_grad()
                loss = critic_loss(critic, batch["obs"][mb], target[mb], args.critic_l2_coef)
                loss.backward()
                if not torch.isfinite(nn.utils.clip_grad_norm_(critic.parameters(), args.max_grad_norm)):
                    raise FloatingPointError(f"gradient of the {key.split('/')[1][: -len('_loss')].replace('_', ' ')}")
                optimizer.step()
                history[key].append(loss.item())
    return {key: float(np.mean(values)) for key, values in history.items()}


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------
def check_args(args: Args) -> None:
    """Raise ValueError with a one-line message for the first meaningless flag."""
    check_env_id(args.env_id)
    positive = ("num_envs", "steps_per_epoch", "total_timesteps", "critic_lr", "lambda_lr", "max_grad_norm")
    positive += ("save_every", "eval_every")
    positive += ("critic_update_epochs", "critic_minibatch_size", "target_kl", "cg_iters", "line_search_steps")
    positive += ("line_search_decay",)
    non_negative = ("cost_limit", "lagrangian_multiplier_init", "critic_l2_coef", "eval_episodes", "cg_damping")
    non_negative += ("pid_kp", "pid_ki", "pid_kd")
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
    if args.delta_down < 0:
        raise ValueError(f"--delta-down must be >= 0, got {args.delta_down}")
    if args.eval_only and (args.resume is None or args.eval_episodes == 0):
        raise ValueError("--eval-only needs a checkpoint (--resume) and --eval-episodes > 0")
    if args.capture_video and args.eval_episodes == 0:
        raise ValueError("--capture-video records evaluation episodes: give --eval-episodes > 0")


# Flags a resumed run may change; every other flag must match the checkpoint's.
RESUMABLE_FLAGS = (
    "total_timesteps", "vector_env", "fast_reset", "save_model", "save_every", "resume",
    "eval_episodes", "eval_every", "eval_only", "capture_video",
)


def load_checkpoint(path: str, args: Args) -> dict:
    """Load a checkpoint written by this script for this run; ValueError (one line) if the file is
    missing or unreadable, or belongs to another script, task or settings (for --eval-only, only
    the task must match)."""
    if not os.path.isfile(path):
        raise ValueError(f"--resume: no such checkpoint file: {path}")
    try:
        checkpoint = torch.load(path, weights_only=False)  # our own file: modules, optimisers, RNG states
    except Exception as error:
        raise ValueError(f"--resume: cannot read {path} as a checkpoint ({type(error).__name__})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("script") != SCRIPT:
        found = checkpoint.get("script", "?") if isinstance(checkpoint, dict) else "?"
        raise ValueError(f"--resume: {path} is a checkpoint of {found}, not of {SCRIPT}")
    must_match = ("env_id",) if args.eval_only else [name for name in vars(args) if name not in RESUMABLE_FLAGS]
    for name in must_match:
        if checkpoint["args"].get(name) != getattr(args, name):
            flag = f"--{name.replace('_', '-')}"
            raise ValueError(f"--resume: {path} was written with {flag} {checkpoint['args'].get(name)}, not {getattr(args, name)}")
    return checkpoint


def save_checkpoint(checkpoint: dict, path: str) -> None:
    """Write atomically: a file cut off half-way never replaces the last good one."""
    torch.save(checkpoint, path + ".tmp")
    os.replace(path + ".tmp", path)


class StopRequest:
    """While active, SIGINT (Ctrl-C) and SIGTERM only set `signal`; the loop stops after the
    current environment step."""

    def __init__(self):
        self.signal = None
        self.previous = {}

    def __enter__(self) -> "StopRequest":
        for signum in (signal.SIGINT, signal.SIGTERM):
            self.previous[signum] = signal.signal(signum, self.request)
        return self

    def request(self, signum: int, frame) -> None:
        self.signal = signal.Signals(signum).name

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


def check_finite(stats: dict, modules: dict, lagrange: Lagrange) -> None:
    """Raise FloatingPointError naming the first non-finite loss, parameter or Lagrange multiplier."""
    for key, value in stats.items():
        if key.startswith("losses/") and not math.isfinite(value):
            raise FloatingPointError(key)
    for name, module in modules.items():
        for param_name, param in module.named_parameters():
            if not torch.isfinite(param).all():
                raise FloatingPointError(f"parameter {name}.{param_name}")
    if not math.isfinite(lagrange.value):
        raise FloatingPointError("Lagrange multiplier")


def evaluate(actor: Actor, obs_rms: RunningMeanStd, args: Args, video_dir: Optional[str] = None) -> tuple:
    """`args.eval_episodes` episodes of the deterministic policy (the Gaussian's mean action) in a
    separate env seeded seed + 10000 + episode, observations normalised with the frozen statistics
    `obs_rms`; recorded into `video_dir` if given. Returns (episodic returns [N], episodic costs [N])."""
    env = make_env(args.env_id, args.max_episode_steps, "rgb_array" if video_dir else None, fast_reset=args.fast_reset)()
    if video_dir:
        record = partial(gym.wrappers.RecordVideo, video_folder=video_dir, episode_trigger=lambda _: True, disable_logger=True)
        env = with_gymnasium_wrappers(env, record)
    returns, costs = np.zeros(args.eval_episodes), np.zeros(args.eval_episodes)
    for episode in range(args.eval_episodes):
        obs, _ = env.reset(seed=args.seed + 10_000 + episode)
        done = False
        while not done:
            with torch.no_grad():
                action = actor(torch.as_tensor(normalize(obs, obs_rms), dtype=torch.float32)).mean
            obs, reward, cost, terminated, truncated, _ = env.step(action.numpy())
            returns[episode] += reward
            costs[episode] += cost
            done = terminated or truncated
    env.close()
    return returns, costs


def log_evaluation(writer: SummaryWriter, returns: np.ndarray, costs: np.ndarray, global_step: int) -> None:
    for name, values in (("return", returns), ("cost", costs)):
        writer.add_scalar(f"eval/mean_{name}", values.mean(), global_step)
        writer.add_scalar(f"eval/std_{name}", values.std(), global_step)
    print(
        f"eval at step {global_step}: {len(returns)} episodes | return {returns.mean():.2f} ± {returns.std():.2f} "
        f"cost {costs.mean():.2f} ± {costs.std():.2f}",
        flush=True,
    )


def main(args: Args, checkpoint: Optional[dict] = None) -> dict:
    """Train for total_timesteps // steps_per_epoch epochs, from scratch or from `checkpoint`
    (load_checkpoint of args.resume); with args.eval_only only evaluate the checkpoint. Returns the
    final actor, critics and Lagrange multiplier (keys actor, reward_critic, cost_critic, lagrange)."""
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    if args.eval_only:
        return evaluate_checkpoint(args, checkpoint)
    envs = make_vector_env(args, checkpoint["episodes"] if checkpoint else None)
    if checkpoint:  # continue in the run's folder, dropping what was logged after the checkpoint
        run_dir = os.path.dirname(os.path.abspath(args.resume))
        writer = SummaryWriter(run_dir, purge_step=checkpoint["global_step"] + 1)
    else:
        run_dir = f"runs/{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"
        writer = SummaryWriter(run_dir)
        writer.add_text(
            "hyperparameters",
            "|param|value|\n|-|-|\n" + "\n".join(f"|{key}|{value}|" for key, value in vars(args).items()),
        )
    try:
        with StopRequest() as stop:
            return train(args, envs, writer, run_dir, stop, checkpoint)
    finally:
        envs.close()
        writer.close()


def evaluate_checkpoint(args: Args, checkpoint: dict) -> dict:
    """--eval-only: evaluate the checkpoint's actor and log under eval/ in its run folder."""
    actor_state = checkpoint["modules"]["actor"]
    actor = Actor(checkpoint["next_obs"].shape[1], actor_state["log_std"].numel())
    actor.load_state_dict(actor_state)
    obs_rms = RunningMeanStd(shape=checkpoint["next_obs"].shape[1:])
    obs_rms.mean, obs_rms.var, obs_rms.count = checkpoint["obs_rms"]
    run_dir = os.path.dirname(os.path.abspath(args.resume))
    video_dir = os.path.join(run_dir, "videos", f"step{checkpoint['global_step']}") if args.capture_video else None
    returns, costs = evaluate(actor, obs_rms, args, video_dir)
    with SummaryWriter(run_dir) as writer:
        log_evaluation(writer, returns, costs, checkpoint["global_step"])
    return {"actor": actor, "returns": returns, "costs": costs}


def train(
    args: Args, envs: NormalizeObservation, writer: SummaryWriter, run_dir: str, stop: StopRequest, checkpoint: Optional[dict]
) -> dict:
    """The training loop (SPEC §2, §9): per epoch, a rollout of steps_per_epoch transitions, the
    Lagrange multiplier update, GAE for reward and cost, the policy and critic updates, logging;
    then the checkpoint and evaluation chores. A checkpoint always describes an epoch boundary."""
    obs_dim = envs.single_observation_space.shape[0]
    act_dim = envs.single_action_space.shape[0]
    actor = Actor(obs_dim, act_dim)
    reward_critic, cost_critic = Critic(obs_dim), Critic(obs_dim)
    critic_optimizers = [
        torch.optim.Adam(critic.parameters(), lr=args.critic_lr) for critic in (reward_critic, cost_critic)
    ]
    if args.lagrangian == "pid":
        lagrange = PIDLagrange(args.cost_limit, args.lagrangian_multiplier_init, args.pid_kp, args.pid_ki, args.pid_kd)
    else:
        lagrange = Lagrange(args.cost_limit, args.lagrangian_multiplier_init, args.lambda_lr)
    modules = {"actor": actor, "reward_critic": reward_critic, "cost_critic": cost_critic}
    optimizers = {
        "reward_critic": critic_optimizers[0],
        "cost_critic": critic_optimizers[1],
    }

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
    # NumPy views of the buffers (same memory): env outputs are written without a tensor conversion
    next_obs_np, reward_np, cost_np, terminated_np, done_np = (
        buf.numpy() for buf in (next_obs_buf, reward_buf, cost_buf, terminated_buf, done_buf)
    )

    tracker = EpisodeTracker(num_envs)
    if checkpoint is None:
        next_obs, _ = envs.reset(seed=args.seed)
        start_epoch, global_step, cumulative_cost, mean_episode_cost = 0, 0, 0.0, None
    else:
        for name, module in modules.items():
            module.load_state_dict(checkpoint["modules"][name])
        for name, optimizer in optimizers.items():
            optimizer.load_state_dict(checkpoint["optimizers"][name])
        lagrange.load_state_dict(checkpoint["lagrange"])
        envs.obs_rms.mean, envs.obs_rms.var, envs.obs_rms.count = checkpoint["obs_rms"]
        tracker.returns, tracker.costs, tracker.lengths = checkpoint["tracker"]
        next_obs = checkpoint["next_obs"]
        start_epoch, global_step, cumulative_cost, mean_episode_cost = checkpoint["counters"]
        python_state, numpy_state, torch_state = checkpoint["random_states"]
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        torch.set_rng_state(torch_state)

    def snapshot(next_epoch: int) -> dict:
        """Everything the run needs to go on from the start of epoch `next_epoch` exactly."""
        return {
            "script": SCRIPT,
            "args": dict(vars(args)),
            "counters": (next_epoch, global_step, cumulative_cost, mean_episode_cost),
            "global_step": global_step,
            "modules": {name: copy.deepcopy(module.state_dict()) for name, module in modules.items()},
            "optimizers": {name: copy.deepcopy(opt.state_dict()) for name, opt in optimizers.items()},
            "lagrange": lagrange.state_dict(),
            "obs_rms": (envs.obs_rms.mean.copy(), envs.obs_rms.var.copy(), envs.obs_rms.count),
            "tracker": (tracker.returns.copy(), tracker.costs.copy(), tracker.lengths.copy()),
            "next_obs": next_obs.copy(),
            "random_states": (random.getstate(), np.random.get_state(), torch.get_rng_state()),
            "episodes": copy.deepcopy(envs.call("replay_state")),
        }

    checkpoint_path = os.path.join(run_dir, "checkpoint.pt")
    last_good = snapshot(start_epoch) if args.save_model else None
    start_time, start_step = time.time(), global_step
    # The rollout's forward passes are tiny: one intra-op thread is as fast, and idle OpenMP threads
    # would spin on the cores that subprocess envs need. The update uses all threads.
    update_threads = torch.get_num_threads()
    for epoch in range(start_epoch, num_epochs):
        torch.set_num_threads(1)
        # ---- rollout: steps_per_epoch transitions; episodes run on across epochs ----
        episodes = []
        rollout_start, env_seconds = time.perf_counter(), 0.0
        for t in range(num_steps):
            obs = torch.as_tensor(next_obs, dtype=torch.float32)
            with torch.no_grad():
                dist = actor(obs)
                action = dist.sample()
                obs_buf[t], act_buf[t], logp_buf[t] = obs, action, dist.log_prob(action).sum(-1)
            env_start = time.perf_counter()
            next_obs, reward, cost, terminated, truncated, info = envs.step(action.numpy())
            env_seconds += time.perf_counter() - env_start
            global_step += num_envs
            done = terminated | truncated
            # the state each step reached: the episode's final observation where it was truncated
            next_obs_np[t] = next_obs
            for i in np.flatnonzero(truncated):
                next_obs_np[t, i] = info["final_observation"][i]
            reward_np[t], cost_np[t], terminated_np[t], done_np[t] = reward, cost, terminated, done
            cumulative_cost += float(cost.sum())
            for episode_return, episode_cost, episode_length in tracker.step(reward, cost, done):
                writer.add_scalar("charts/episodic_return", episode_return, global_step)
                writer.add_scalar("charts/episodic_cost", episode_cost, global_step)
                writer.add_scalar("charts/episodic_length", episode_length, global_step)
                episodes.append((episode_return, episode_cost))
            if stop.signal:
                break
        if stop.signal:
            saved = ""
            if last_good is not None:
                save_checkpoint(last_good, checkpoint_path)
                saved = f"; checkpoint of step {last_good['global_step']} in {checkpoint_path}"
            print(f"{SCRIPT}: stopped by {stop.signal} at step {global_step}{saved}", flush=True)
            break

        torch.set_num_threads(update_threads)
        update_start = time.perf_counter()
        rollout_seconds = update_start - rollout_start

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
        try:
            stats = trpo_update(actor, batch, args)
            stats.update(update_critics(reward_critic, cost_critic, critic_optimizers, batch, args))
            check_finite(stats, modules, lagrange)
        except FloatingPointError as fault:
            saved = ""
            if last_good is not None:
                save_checkpoint(last_good, checkpoint_path)
                saved = f"; last good checkpoint (step {last_good['global_step']}) in {checkpoint_path}"
            raise SystemExit(f"{SCRIPT}: error: non-finite {fault} in epoch {epoch + 1}{saved}") from None

        # ---- logging ----
        update_seconds = time.perf_counter() - update_start
        steps_per_second = (global_step - start_step) / (time.time() - start_time)
        stats.update(
            {
                "perf/env_step_seconds": env_seconds,
                "perf/rollout_seconds": rollout_seconds,
                "perf/update_seconds": update_seconds,
                "charts/lagrange_multiplier": lam,
                "charts/cumulative_cost": cumulative_cost,
                "charts/cost_rate": cumulative_cost / global_step,
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
            f"return {mean_return:.2f} cost {mean_cost:.2f} | lambda {lam:.4f} | {steps_per_second:.0f} steps/s "
            f"| env {env_seconds:.1f} s, rollout {rollout_seconds:.1f} s, update {update_seconds:.1f} s",
            flush=True,
        )

        # ---- checkpoint and evaluation ----
        last_epoch = epoch + 1 == num_epochs
        if args.save_model:
            last_good = snapshot(epoch + 1)
            if (epoch + 1) % args.save_every == 0 or last_epoch:
                save_checkpoint(last_good, checkpoint_path)
        if args.eval_episodes and ((epoch + 1) % args.eval_every == 0 or last_epoch):
            video_dir = os.path.join(run_dir, "videos", f"step{global_step}") if args.capture_video else None
            log_evaluation(writer, *evaluate(actor, envs.obs_rms, args, video_dir), global_step)
    return {"actor": actor, "reward_critic": reward_critic, "cost_critic": cost_critic, "lagrange": lagrange}


if __name__ == "__main__":
    cli_args = tyro.cli(Args)
    try:
        check_args(cli_args)
        cli_checkpoint = load_checkpoint(cli_args.resume, cli_args) if cli_args.resume else None
    except ValueError as error:
        sys.exit(f"{SCRIPT}: error: {error}")
    main(cli_args, cli_checkpoint)
