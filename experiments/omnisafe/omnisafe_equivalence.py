"""Does trpo_lag.py update as OmniSafe's TRPOLag (3799d6d3) does, given the same epoch of data?

OmniSafe collects each epoch on SafetyHopperVelocity-v1 (1 env, its wrappers, its observation normaliser);
every step is recorded, the same data goes through our make_batch, trpo_update and update_critics from
the same weights, multiplier and critic optimiser states, and the results are compared with what
OmniSafe's own update made of them. Critic minibatches are taken in order on both sides (OmniSafe's
DataLoader does not shuffle here) so that the critics can be compared too. Episodes are cut at
LIMIT steps so that truncation and its bootstrap occur; LAMBDA (optional) is set before each update.
Last, one probe of OmniSafe's single-env wrappers at the task's own time limit: which observation does
its rollout bootstrap a truncated episode from?

    . omni-venv/bin/activate   # as in experiments/omnisafe/omnisafe_trpolag.py
    OMP_NUM_THREADS=1 python experiments/omnisafe/omnisafe_equivalence.py [STEPS_PER_EPOCH EPOCHS LIMIT LAMBDA]
"""

import copy
import sys
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import trpo_lag as ours  # noqa: E402  (imports safety_gymnasium through our Python 3.11 shim, spec §11)

for unused in ("wandb", "gdown"):  # imported by OmniSafe, used only for W&B logging and offline data
    sys.modules.setdefault(unused, types.ModuleType(unused))
import omnisafe  # noqa: E402
import omnisafe.algorithms.on_policy.base.natural_pg as natural_pg  # noqa: E402
from omnisafe.envs.safety_gymnasium_env import SafetyGymnasiumEnv  # noqa: E402
from omnisafe.envs.wrapper import AutoReset, TimeLimit  # noqa: E402
from omnisafe.utils.math import conjugate_gradients  # noqa: E402

STEPS, EPOCHS, LIMIT = (int(a) for a in (sys.argv[1:4] + ["4000", "3", "30"][len(sys.argv[1:4]) :]))
LAMBDA = float(sys.argv[4]) if len(sys.argv) > 4 else None
OBS_DIM, ACT_DIM = 11, 3


def record(algo) -> list:
    """Wrap OmniSafe's agent and env steps so that each rollout step lands in the returned list."""
    steps, agent_step, env_step, env = [], algo._actor_critic.step, algo._env.step, algo._env

    def on_agent_step(obs, deterministic=False):
        act, value_r, value_c, logp = agent_step(obs, deterministic)
        if obs.dim() == 2:  # the rollout's step; bootstrap values are asked for one row
            steps.append({"obs": obs[0], "act": act[0], "logp": logp[0]})
        return act, value_r, value_c, logp

    def on_env_step(act):
        obs, reward, cost, terminated, truncated, info = env_step(act)
        reached = info["final_observation"][0] if bool(truncated[0]) else obs[0]
        steps[-1].update(
            next_obs=reached, reward=reward[0], cost=cost[0], terminated=terminated[0], truncated=truncated[0]
        )
        return obs, reward, cost, terminated, truncated, info

    algo._actor_critic.step, env.step = on_agent_step, on_env_step
    return steps


def ours_from(module: torch.nn.Module, prefix: str = "") -> dict:
    return {key.removeprefix(prefix): value.clone() for key, value in module.state_dict().items()}


def main() -> None:
    cfgs = {
        "seed": 0,
        "train_cfgs": {"total_steps": STEPS * EPOCHS, "torch_threads": 1},
        "algo_cfgs": {"steps_per_epoch": STEPS},
        "logger_cfgs": {"log_dir": "/tmp/omnisafe_equivalence", "use_wandb": False},
    }
    algo = omnisafe.Agent("TRPOLag", "SafetyHopperVelocity-v1", custom_cfgs=cfgs).agent
    wrapper = algo._env._env
    while type(wrapper).__name__ != "TimeLimit":
        wrapper = wrapper._env
    wrapper._time_limit = LIMIT
    steps, batches = record(algo), {}
    get = algo._buf.get
    algo._buf.get = lambda: batches.setdefault("theirs", get())
    natural_pg.DataLoader = lambda dataset, batch_size, shuffle: torch.utils.data.DataLoader(dataset, batch_size)
    args = ours.Args(env_id="SafetyHopperVelocity-v1", num_envs=1, steps_per_epoch=STEPS)
    ac = algo._actor_critic
    for epoch in range(EPOCHS):
        steps.clear(), batches.clear()
        algo._env.rollout(steps_per_epoch=STEPS, agent=ac, buffer=algo._buf, logger=algo._logger)
        before = {
            "actor": ours_from(ac.actor),
            "reward_critic": ours_from(ac.reward_critic, "critic_0."),
            "cost_critic": ours_from(ac.cost_critic, "critic_0."),
            "reward_critic_optimizer": copy.deepcopy(ac.reward_critic_optimizer.state_dict()),
            "cost_critic_optimizer": copy.deepcopy(ac.cost_critic_optimizer.state_dict()),
        }
        if LAMBDA is not None:
            algo._lagrange.lagrangian_multiplier.data.fill_(LAMBDA)
        algo._update()  # theirs: lambda from J_c, then the actor, then the critics
        lam = algo._lagrange.lagrangian_multiplier.item()

        data = {
            key: torch.stack([step[key].float() for step in steps]).unsqueeze(1)
            for key in ("obs", "act", "logp", "next_obs", "reward", "cost", "terminated")
        }
        data["done"] = torch.stack(
            [torch.maximum(step["terminated"].float(), step["truncated"].float()) for step in steps]
        ).unsqueeze(1)
        parts = {
            "actor": ours.Actor(OBS_DIM, ACT_DIM),
            "reward_critic": ours.mlp(OBS_DIM, 1),
            "cost_critic": ours.mlp(OBS_DIM, 1),
        }
        for name, part in parts.items():
            part.load_state_dict(before[name])
        # our one Adam of both critics, holding the state of each of their two Adams
        critic_params = [*parts["reward_critic"].parameters(), *parts["cost_critic"].parameters()]
        parts["optimizer"] = torch.optim.Adam(critic_params, lr=args.critic_lr)
        for name in ("reward", "cost"):
            theirs_optimizer = torch.optim.Adam(parts[f"{name}_critic"].parameters(), lr=args.critic_lr)
            theirs_optimizer.load_state_dict(before[f"{name}_critic_optimizer"])
            parts["optimizer"].state.update(theirs_optimizer.state)
        batch = ours.make_batch(data, parts["reward_critic"], parts["cost_critic"], lam, args)
        theirs = batches["theirs"]

        def gap(a, b):
            return (a.reshape(-1) - b.reshape(-1)).abs().max().item()

        theirs_adv = (theirs["adv_r"] - lam * theirs["adv_c"]) / (1.0 + lam)
        print(
            f"epoch {epoch + 1}: {len(steps)} steps, {int(data['done'].sum())} episodes ended "
            f"({int(sum(bool(s['truncated']) for s in steps))} truncated), lambda {lam:.4f}"
        )
        print(
            "  max |ours - theirs|: value targets "
            f"{gap(batch['target_reward'], theirs['target_value_r']):.1e} (reward), "
            f"{gap(batch['target_cost'], theirs['target_value_c']):.1e} (cost); combined advantage "
            f"{gap(batch['adv'], theirs_adv):.1e} (|A| up to {batch['adv'].abs().max():.2f})"
        )
        theta_before = torch.nn.utils.parameters_to_vector(parts["actor"].parameters()).detach()
        their_actor = ours.Actor(OBS_DIM, ACT_DIM)
        their_actor.load_state_dict(ours_from(ac.actor))
        theta_theirs = torch.nn.utils.parameters_to_vector(their_actor.parameters()).detach()
        for label, solver in (("our CG", ours.conjugate_gradient), ("their CG", conjugate_gradients)):
            actor = copy.deepcopy(parts["actor"])
            solve, ours.conjugate_gradient = ours.conjugate_gradient, solver
            stats = ours.trpo_update(actor, batch, args)
            ours.conjugate_gradient = solve
            theta = torch.nn.utils.parameters_to_vector(actor.parameters()).detach()
            print(
                f"  actor step with {label}: |ours - theirs| / |theirs| = "
                f"{(theta - theta_theirs).norm() / (theta_theirs - theta_before).norm():.1e} "
                f"(KL {stats['losses/approx_kl']:.4f})"
            )
        randperm, torch.randperm = torch.randperm, lambda n: torch.arange(n)
        ours.update_critics(types.SimpleNamespace(**parts), batch, args, types.SimpleNamespace(signal=None))
        torch.randperm = randperm
        for name in ("reward", "cost"):
            theirs_critic = ours_from(getattr(ac, f"{name}_critic"), "critic_0.")
            moved = max(gap(theirs_critic[k], before[f"{name}_critic"][k]) for k in theirs_critic)
            differ = max(gap(parts[f"{name}_critic"].state_dict()[k], theirs_critic[k]) for k in theirs_critic)
            print(f"  {name} critic: largest parameter change {moved:.1e}, largest |ours - theirs| {differ:.1e}")


def probe_truncation(limit: int = 20) -> None:
    """OmniSafe's single-env stack (safety-gymnasium's own time limit and auto-reset inside its TimeLimit
    and AutoReset), both limits at `limit` as they are both at 1 000, beside our env; zero actions."""
    theirs = AutoReset(
        TimeLimit(SafetyGymnasiumEnv("SafetyHopperVelocity-v1", max_episode_steps=limit), limit, "cpu"), "cpu"
    )
    env = ours.make_env("SafetyHopperVelocity-v1", limit)
    theirs.reset(seed=0), env.reset(seed=0)
    for _ in range(limit):
        *_, truncated, info = theirs.step(torch.zeros(ACT_DIM))
        final = env.step(torch.zeros(ACT_DIM).numpy())[0]
    bootstrap = info["final_observation"]
    print(
        f"truncated {bool(truncated)}: OmniSafe bootstraps from an observation with height {bootstrap[0]:.3f}; "
        f"the episode's final observation has {final[0]:.3f}, a fresh start has 1.25 +- 0.005"
    )


if __name__ == "__main__":
    main()
    probe_truncation()
