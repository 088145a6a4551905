"""trpo_lag.py with some of the settings of OmniSafe's TRPOLag 1M-step recipe switched on: which of them
makes OmniSafe's TRPO-Lag end far below the cost limit where ours ends at it?

    cd sweeps/ablation && python ../../experiments/omnisafe/omnisafe_ablation.py --ablation cost-norm reset \
        --eval-episodes 10 -- --env-id SafetyHopperVelocity-v1 --num-envs 2 --steps-per-epoch 2048 \
        --total-timesteps 1024000 --save-model ...

Everything after `--` goes to trpo_lag.py unchanged; the run folder lands under ./runs/ as usual (give
--exp-name trpo_lag_omnisafe1m_<variant> for experiments/omnisafe/omnisafe_tables.py). trpo_lag.py itself is not
changed: this file patches some of its functions and classes in a freshly loaded copy. With
--eval-episodes N (and --save-model), a run that reaches its last epoch ends with evaluate.py's
evaluation of its final checkpoint, N episodes, through the same patched copy (so obs-clip clips the
evaluation's observations too). The settings, as OmniSafe has them at 65ed5cab (2023-04-19):
  cost-norm   the cost critic and the cost advantage see each step's cost normalised by the running
              mean and std of the per-step cost (std floored at 1e-2, result clipped to [-5, 5]; the
              first step is passed raw): omnisafe/envs/wrapper.py CostNormalize, on for both velocity
              tasks. The episodic cost that drives the multiplier stays raw, as theirs.
  reset       every epoch starts with freshly reset environments (their roll_out), instead of episodes
              running on across epochs; the unfinished ones are dropped, bootstrapped as before.
  obs-clip    normalised observations clipped to [-5, 5], with the std floored at 1e-2.
Every run also logs the policy's mean std as charts/policy_std (OmniSafe's Train/PolicyStd).

Two more settings were ablations here until commit 33a5831 (2026-12-02) made them trpo_lag.py's own
behaviour: `jc-window` (J_c over the last 50 episodes across epochs; the scripts now compute it in
SafePO's form, `cost_estimate`: the mean of the window's means at this epoch's episode ends) and `cg-eps`
(OmniSafe's conjugate gradient, 1e-6 added to both of its divisions, stopping once |r| < 1e-10). The
study that switched them on ran on the older scripts (b451312, 2026-12-01; see experiments/README.md),
where `--ablation jc-window reset obs-clip` is `--ablation reset obs-clip` today. Asking for either now
is an error, since patching it on top would apply it twice.

A run resumes with --resume as trpo_lag.py's does (its J_c window is in the checkpoint), but with fresh
cost statistics (not in the checkpoint): a resumed cost-norm run is not the run it would have been.
"""

import importlib.util
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import tyro

ROOT = Path(__file__).resolve().parents[2]
ABLATIONS = ("cost-norm", "reset", "obs-clip")
NOW_DEFAULTS = ("jc-window", "cg-eps")  # trpo_lag.py's own behaviour since 33a5831
USAGE = f"usage: --ablation [{' '.join(ABLATIONS)}]... [--eval-episodes N] -- <trpo_lag.py flags>"


def load_trpo_lag():
    """A fresh copy of trpo_lag.py as a module, so that patching it leaves any other copy alone."""
    spec = importlib.util.spec_from_file_location("trpo_lag", ROOT / "trpo_lag.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def patch(trpo_lag, ablations: set) -> None:
    """Switch the `ablations` on in the loaded module `trpo_lag`, in place."""
    if unknown := set(ablations) - set(ABLATIONS):
        raise ValueError(f"unknown ablation {sorted(unknown)[0]!r}; choose from {', '.join(ABLATIONS)}")
    rollout, make_batch, trpo_update = trpo_lag.rollout, trpo_lag.make_batch, trpo_lag.trpo_update
    started, cost_stats = [], {"count": 0, "mean": 0.0, "sumsq": 0.0}

    def patched_rollout(envs, agent, obs, episode_sums, num_steps, stop):
        if "reset" in ablations and started:
            raw, _ = envs.reset()
            agent.normalizer.update(raw)
            obs, episode_sums[:] = agent.normalizer(raw), 0.0
        started.append(True)
        return rollout(envs, agent, obs, episode_sums, num_steps, stop)

    def normalised_costs(costs: torch.Tensor) -> torch.Tensor:  # [T, N]: one push of N costs per step
        out = costs.clone()
        for t, row in enumerate(costs.double().numpy()):
            count = cost_stats["count"] + len(row)
            delta = row.mean() - cost_stats["mean"]
            cost_stats["sumsq"] += ((row - row.mean()) ** 2).sum() + delta**2 * cost_stats["count"] * len(row) / count
            cost_stats["mean"] += delta * len(row) / count
            cost_stats["count"] = count
            if count > len(row):  # OmniSafe passes the first push through unnormalised
                std = max(np.sqrt(cost_stats["sumsq"] / (count - 1)), 1e-2)
                out[t] = torch.from_numpy(np.clip((row - cost_stats["mean"]) / std, -5.0, 5.0))
        return out

    def patched_make_batch(data, reward_critic, cost_critic, lam, args):
        if "cost-norm" in ablations:
            data = {**data, "cost": normalised_costs(data["cost"])}
        return make_batch(data, reward_critic, cost_critic, lam, args)

    def clipped(self, obs):
        return np.clip((obs - self.mean) / np.maximum(np.sqrt(self.var), 1e-2), -5.0, 5.0)

    def trpo_update_logging_std(actor, batch, args):
        return {**trpo_update(actor, batch, args), "charts/policy_std": actor.log_std.exp().mean().item()}

    trpo_lag.rollout, trpo_lag.make_batch, trpo_lag.trpo_update = (
        patched_rollout,
        patched_make_batch,
        trpo_update_logging_std,
    )
    if "obs-clip" in ablations:
        trpo_lag.ObsNormalizer.__call__ = clipped


def final_checkpoint(args) -> Optional[str]:
    """The checkpoint of the run `args` describes (main names a fresh run's folder by its start time: the
    newest), or None unless it reached the run's last epoch."""
    if args.resume:
        run_dir = Path(args.resume).resolve().parent
    else:
        prefix = f"{args.env_id}__{args.exp_name}__{args.seed}__"
        run_dir = max(Path("runs").glob(prefix + "*"), key=lambda p: int(p.name[len(prefix) :]))
    path = run_dir / "checkpoint.pt"
    last_step = args.total_timesteps // args.steps_per_epoch * args.steps_per_epoch
    return str(path) if path.is_file() and torch.load(path, weights_only=False)["global_step"] >= last_step else None


def evaluate_checkpoint(trpo_lag, path: str, episodes: int) -> np.ndarray:
    """evaluate.py on the checkpoint at `path`, with the patched copy `trpo_lag` in place of trpo_lag.py."""
    sys.path.insert(0, str(ROOT))
    import evaluate

    evaluate.load_script = lambda name: trpo_lag
    return evaluate.evaluate(evaluate.Args(checkpoint=path, episodes=episodes))


if __name__ == "__main__":
    argv = sys.argv[1:]
    ours, theirs = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    eval_episodes = 0
    if ours[-2:-1] == ["--eval-episodes"] and ours[-1].isdigit():
        ours, eval_episodes = ours[:-2], int(ours[-1])
    if defaults := sorted(set(ours[1:]) & set(NOW_DEFAULTS)):
        sys.exit(
            f"omnisafe_ablation.py: error: {' and '.join(defaults)}: trpo_lag.py does this itself since 33a5831; "
            "drop it"
        )
    if ours[:1] != ["--ablation"] or not set(ours[1:]) <= set(ABLATIONS):
        sys.exit(f"omnisafe_ablation.py: error: {USAGE}")
    trpo_lag = load_trpo_lag()
    patch(trpo_lag, set(ours[1:]))
    args = tyro.cli(trpo_lag.Args, args=theirs)
    try:
        trpo_lag.check_args(args)
        if eval_episodes and not args.save_model:
            raise ValueError("--eval-episodes evaluates the run's final checkpoint: give --save-model")
        checkpoint = trpo_lag.load_checkpoint(args.resume, args) if args.resume else None
    except ValueError as error:
        sys.exit(f"omnisafe_ablation.py: error: {error}")
    trpo_lag.main(args, checkpoint)
    if eval_episodes and (path := final_checkpoint(args)):
        evaluate_checkpoint(trpo_lag, path, eval_episodes)
