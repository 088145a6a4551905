"""trpo_lag.py with some of OmniSafe's TRPOLag settings of its 1M-step recipe switched on (issue 10,
point 2): which of them makes OmniSafe's TRPO-Lag end far below the cost limit where ours ends at it?

    cd sweeps/ablation && python ../../docs/omnisafe_ablation.py --ablation cost-norm jc-window -- \
        --env-id SafetyHopperVelocity-v1 --num-envs 2 --steps-per-epoch 2048 --total-timesteps 1024000 ...

Everything after `--` goes to trpo_lag.py unchanged; the run folder lands under ./runs/ as usual (give
--exp-name trpo_lag_omnisafe1m_<variant> for docs/omnisafe_tables.py). trpo_lag.py itself is not changed:
this file patches some of its functions and classes. The settings, as OmniSafe has them at 65ed5cab (2023-04-19):
  cost-norm   the cost critic and the cost advantage see each step's cost normalised by the running
              mean and std of the per-step cost (std floored at 1e-2, result clipped to [-5, 5]; the
              first step is passed raw): omnisafe/envs/wrapper.py CostNormalize, on for both velocity
              tasks. The episodic cost that drives the multiplier stays raw, as theirs.
  jc-window   J_c, the cost that updates the Lagrange multiplier, is the mean episodic cost of the last
              50 episodes (their logger's window for Metrics/EpCost), not of this epoch's episodes.
  reset       every epoch starts with freshly reset environments (their roll_out), instead of episodes
              running on across epochs; the unfinished ones are dropped, bootstrapped as before.
  obs-clip    normalised observations clipped to [-5, 5], with the std floored at 1e-2.
  cg-eps      OmniSafe's conjugate gradient (omnisafe/utils/math.py at 3799d6d3): 1e-6 added to both of
              its divisions, stopping once |r| < 1e-10.
Every run also logs the policy's mean std as charts/policy_std (OmniSafe's Train/PolicyStd).
A run resumes with --resume as trpo_lag.py's does, but with an empty J_c window and fresh cost statistics
(neither is in the checkpoint): a resumed cost-norm run is not the run it would have been.
"""

import importlib.util
import sys
from collections import deque
from pathlib import Path

import numpy as np
import torch
import tyro

ABLATIONS = ("cost-norm", "jc-window", "reset", "obs-clip", "cg-eps")


def load_trpo_lag():
    spec = importlib.util.spec_from_file_location("trpo_lag", Path(__file__).resolve().parents[1] / "trpo_lag.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def patch(trpo_lag, ablations: set) -> None:
    """Switch the `ablations` on in the loaded module `trpo_lag`, in place."""
    rollout, make_batch, trpo_update = trpo_lag.rollout, trpo_lag.make_batch, trpo_lag.trpo_update
    window, started, cost_stats = deque(maxlen=50), [], {"count": 0, "mean": 0.0, "sumsq": 0.0}

    def patched_rollout(envs, parts, obs, episode_sums, num_steps, stop):
        if "reset" in ablations and started:
            raw, _ = envs.reset()
            parts["normalizer"].update(raw)
            obs, episode_sums[:] = parts["normalizer"](raw), 0.0
        started.append(True)
        data, next_obs, episodes = rollout(envs, parts, obs, episode_sums, num_steps, stop)
        window.extend(episode[2] for episode in episodes)
        return data, next_obs, episodes

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

    def windowed(update):  # either multiplier rule (Adam or PID) takes J_c from the window
        return lambda self, mean_episode_cost: update(self, float(np.mean(window)) if window else mean_episode_cost)

    def clipped(self, obs):
        return np.clip((obs - self.mean) / np.maximum(np.sqrt(self.var), 1e-2), -5.0, 5.0)

    def conjugate_gradient(matrix_vector_product, b, iters, residual_tol=1e-10, eps=1e-6):
        x = torch.zeros_like(b)
        residual = b - matrix_vector_product(x)
        direction, residual_sq = residual.clone(), residual @ residual
        for _ in range(iters):
            a_direction = matrix_vector_product(direction)
            alpha = residual_sq / (direction @ a_direction + eps)
            x += alpha * direction
            residual -= alpha * a_direction
            new_residual_sq = residual @ residual
            if new_residual_sq.sqrt() < residual_tol:
                break
            direction = residual + new_residual_sq / (residual_sq + eps) * direction
            residual_sq = new_residual_sq
        return x

    def trpo_update_logging_std(actor, batch, args):
        return {**trpo_update(actor, batch, args), "charts/policy_std": actor.log_std.exp().mean().item()}

    trpo_lag.rollout, trpo_lag.make_batch, trpo_lag.trpo_update = patched_rollout, patched_make_batch, trpo_update_logging_std
    if "cg-eps" in ablations:
        trpo_lag.conjugate_gradient = conjugate_gradient
    if "jc-window" in ablations:
        for rule in (trpo_lag.Lagrange, trpo_lag.PIDLagrange):
            rule.update = windowed(rule.update)
    if "obs-clip" in ablations:
        trpo_lag.ObsNormalizer.__call__ = clipped


if __name__ == "__main__":
    argv = sys.argv[1:]
    ours, theirs = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    if ours[:1] != ["--ablation"] or not set(ours[1:]) <= set(ABLATIONS):
        sys.exit(f"omnisafe_ablation.py: error: usage: --ablation [{' '.join(ABLATIONS)}]... -- <trpo_lag.py flags>")
    trpo_lag = load_trpo_lag()
    patch(trpo_lag, set(ours[1:]))
    args = tyro.cli(trpo_lag.Args, args=theirs)
    try:
        trpo_lag.check_args(args)
        checkpoint = trpo_lag.load_checkpoint(args.resume, args) if args.resume else None
    except ValueError as error:
        sys.exit(f"omnisafe_ablation.py: error: {error}")
    trpo_lag.main(args, checkpoint)
