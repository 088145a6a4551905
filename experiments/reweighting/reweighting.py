"""How the SHAPO perturbation reweights the samples of a batch, on a trained policy (spec §5 "Reweighting").

    python experiments/reweighting/reweighting.py --checkpoints <label>=<checkpoint.pt> ... \
        --delta-downs 1e-6 1e-5 1e-4 --out-dir experiments/reweighting

For each checkpoint (of any of the four scripts) it collects one fresh batch with the checkpoint's policy
(--steps transitions, its own task and number of envs unless overridden), builds the batch exactly as
training does (GAE, A_r standardised, A_c centred, A = (A_r - lambda A_c) / (1 + lambda) with the
checkpoint's multiplier), and at each delta_Down applies SHAPO-TRPO-Lag's full-batch perturbation (paper
Alg. 3: trpo_lag_shapo.shapo_gradient with its 10-iteration CG solve) to the checkpoint's actor. With
w = pi_theta0+epsilon(a|s) / pi_theta0(a|s) for every sample, it draws w against log pi_theta0(a|s), one
panel per checkpoint and delta_Down, coloured by the sign of A, with the mean of w per bin of log pi for
each sign; and, at the middle delta_Down, one panel per checkpoint coloured by A_c. The table gives, per
checkpoint and delta_Down: the KL reached, the mean of w over negative- and positive-advantage samples, the
largest |log w|, Spearman's rank correlation of w and log pi over the negative-advantage samples and
cos(g, g~) (all as the SHAPO scripts log them, trpo_lag_shapo.reweighting_stats), and the share of the change of the
update
direction g~ - g that comes from negative-advantage samples: the surrogate is linear in A, so g~ - g is the
sum of the part from the samples with A < 0 and the part from those with A > 0; the share is the first's
projection on g~ - g over |g~ - g|^2 (the two shares add up to 1); likewise for the samples with A_c > 0.
The perturbation is Alg. 3's whatever script wrote the checkpoint, so that all checkpoints are compared alike.

Writes <out-dir>/reweighting.png, <out-dir>/reweighting_cost.png and <out-dir>/results.md.
"""

import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Dict, Optional, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import tyro  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
import evaluate  # noqa: E402  (load_script: a checkpoint's own training script as a module)
import trpo_lag_shapo as shapo  # noqa: E402  (the SHAPO perturbation of Alg. 3)


@dataclass
class Args:
    checkpoints: Tuple[str, ...]  # label=path of each checkpoint, e.g. walker-early=runs/.../checkpoint.pt
    delta_downs: Tuple[float, ...] = (1e-6, 1e-5, 1e-4)  # the perturbation radii to apply
    steps: int = 20_000  # transitions of the fresh batch, all envs together
    num_envs: Optional[int] = None  # envs of the batch; default: the checkpoint's
    seed: int = 12345  # seed of the batch's envs and actions (apart from any training run's)
    bins: int = 8  # bins of log pi_theta0(a|s) for the binned means
    out_dir: str = "experiments/reweighting"  # where the figures and results.md go


def collect_batch(path: str, steps: int, num_envs: Optional[int], seed: int) -> Tuple[SimpleNamespace, dict, dict]:
    """Load a checkpoint with its own script and collect a fresh batch of `steps` transitions with its policy.
    Returns (the script's run flags, the batch of make_batch plus the centred cost advantage "adv_cost", facts)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    script = evaluate.load_script(checkpoint["script"])
    run = SimpleNamespace(**checkpoint["args"])
    num_envs = num_envs or run.num_envs
    torch.manual_seed(seed)
    script.set_skybox(plain=True)
    make = [lambda: script.make_env(run.env_id)] * num_envs
    envs = script.safety_gymnasium.vector.SafetySyncVectorEnv(make)
    obs_dim, act_dim = envs.single_observation_space.shape[0], envs.single_action_space.shape[0]
    agent = script.make_agent(obs_dim, act_dim, run, torch.device("cpu"))
    for name in script.CHECKPOINT_PARTS:
        getattr(agent, name).load_state_dict(checkpoint[name])
    critics = [agent.reward_critic, agent.cost_critic]
    lam = agent.lagrange.multiplier
    obs, _ = envs.reset(seed=script.draw_seeds(seed, num_envs, 0))
    stop = SimpleNamespace(signal=None)
    data, _, episodes = script.rollout(
        envs, agent, agent.normalizer(obs), np.zeros((3, num_envs)), steps // num_envs, stop
    )
    envs.close()
    batch = script.make_batch(data, critics[0], critics[1], lam, run)
    # A_c, the centred cost advantage: A = (A_r - lambda A_c) / (1 + lambda), so A at lambda 0 minus twice A at lambda 1
    plain, unit = (script.make_batch(data, critics[0], critics[1], value, run)["adv"] for value in (0.0, 1.0))
    batch["adv_cost"] = plain - 2.0 * unit
    facts = {
        "script": checkpoint["script"],
        "env_id": run.env_id,
        "step": checkpoint["global_step"],
        "lambda": lam,
        "episodes": len(episodes),
        "return": float(np.mean([e.episode_return for e in episodes])) if episodes else float("nan"),
        "cost": float(np.mean([e.cost for e in episodes])) if episodes else float("nan"),
        "actor": agent.actor,
    }
    return run, batch, facts


def perturb(actor: torch.nn.Module, batch: dict, delta_down: float) -> Dict[str, object]:
    """SHAPO-TRPO-Lag's perturbation of `actor` on the whole batch at radius delta_down (the actor is restored):
    the perturbed parameters theta0 + epsilon (those at which it evaluates the surrogate the second time), the logged
    diagnostics, and log pi at theta0 and log w of every sample."""
    obs, act, adv = batch["obs"], batch["act"], batch["adv"]
    fvp = shapo.fisher_vector_product_fn(actor, obs, shapo.SHAPO_DAMPING)

    def solve(g: torch.Tensor) -> tuple:  # as trpo_lag_shapo.trpo_update builds it
        x = shapo.conjugate_gradient(fvp, g, shapo.SHAPO_CG_ITERS)
        return x, x @ fvp(x)

    evaluated_at = []

    def recording_surrogate(dist):
        evaluated_at.append(torch.nn.utils.parameters_to_vector(actor.parameters()).detach())
        return surrogate(batch, adv)(dist)

    dist0 = actor(obs)
    _, _, stats = shapo.shapo_gradient(actor, obs, act, adv, dist0, recording_surrogate, solve, delta_down)
    theta = evaluated_at[-1]
    with torch.no_grad():
        logp0 = dist0.log_prob(act).sum(-1)
        logp_perturbed = at(actor, theta, lambda: actor(obs).log_prob(act).sum(-1))
    return {"theta": theta, "stats": stats, "logp0": logp0, "log_w": logp_perturbed - logp0}


def surrogate(batch: dict, advantages: torch.Tensor):
    """dist -> the TRPO surrogate of the batch with these advantages."""
    return lambda dist: shapo.trpo_surrogate(dist, batch["act"], batch["logp"], advantages)


def at(actor: torch.nn.Module, theta: torch.Tensor, compute):
    """compute() with the actor's parameters set to the flat `theta`, then restored exactly."""
    theta0 = torch.nn.utils.parameters_to_vector(actor.parameters()).detach()
    shapo.set_flat_params(actor, theta)
    try:
        return compute()
    finally:
        shapo.set_flat_params(actor, theta0)


def change_share(actor: torch.nn.Module, batch: dict, theta: torch.Tensor, mask: torch.Tensor) -> float:
    """The part of g~ - g that the samples in `mask` [B] contribute, projected on g~ - g, over |g~ - g|^2. The
    surrogate is linear in the advantages, so the parts of complementary masks add up to g~ - g and their shares
    to 1."""
    params = tuple(actor.parameters())

    def change(advantages: torch.Tensor) -> torch.Tensor:
        loss = surrogate(batch, advantages)
        before = shapo.flat_grad(loss(actor(batch["obs"])), params)
        return at(actor, theta, lambda: shapo.flat_grad(loss(actor(batch["obs"])), params)) - before

    total, part = change(batch["adv"]), change(batch["adv"] * mask)
    return float(part @ total / (total @ total))


def binned_means(x: np.ndarray, y: np.ndarray, edges: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Centres of the bins of x with at least 5 samples, and the mean of y in each."""
    which = np.digitize(x, edges[1:-1])
    keep = [b for b in range(len(edges) - 1) if np.sum(which == b) >= 5]
    return np.array([(edges[b] + edges[b + 1]) / 2 for b in keep]), np.array([y[which == b].mean() for b in keep])


def main(args: Args) -> str:
    """Collect, perturb, draw and tabulate; returns the Markdown table (also written to <out-dir>/results.md)."""
    labels, results = [], {}
    for item in args.checkpoints:
        label, _, path = item.partition("=")
        if not path:
            raise ValueError(f"--checkpoints takes label=path, got {item!r}")
        run, batch, facts = collect_batch(path, args.steps, args.num_envs, args.seed)
        labels.append(label)
        results[label] = (batch, facts, {delta: perturb(facts["actor"], batch, delta) for delta in args.delta_downs})
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = [
        "| checkpoint | task (script, step) | batch episodes: return, cost | lambda | delta_Down | KL reached "
        "| mean w, A < 0 | mean w, A > 0 | max abs log w | Spearman(w, log pi), A < 0 | cos(g, g~) "
        "| share of g~ - g from A < 0 | share from A_c > 0 |",
        "|-|-|-|-|-|-|-|-|-|-|-|-|-|",
    ]
    fig, axes = plt.subplots(
        len(labels), len(args.delta_downs), figsize=(4.2 * len(args.delta_downs), 3.4 * len(labels)), squeeze=False
    )
    cost_fig, cost_axes = plt.subplots(1, len(labels), figsize=(4.6 * len(labels), 3.6), squeeze=False)
    middle = args.delta_downs[len(args.delta_downs) // 2]
    for row, label in enumerate(labels):
        batch, facts, by_delta = results[label]
        adv, adv_cost = batch["adv"].numpy(), batch["adv_cost"].numpy()
        for col, delta in enumerate(args.delta_downs):
            result = by_delta[delta]
            logp0, log_w, stats = result["logp0"].numpy(), result["log_w"].numpy(), result["stats"]
            w = np.exp(log_w)
            share_negative = change_share(facts["actor"], batch, result["theta"], batch["adv"] < 0)
            share_costly = change_share(facts["actor"], batch, result["theta"], batch["adv_cost"] > 0)
            rows.append(
                f"| {label} | {facts['env_id']} ({facts['script']}, {facts['step']}) | {facts['episodes']}: "
                f"{facts['return']:.1f}, {facts['cost']:.1f} | {facts['lambda']:.3f} | {delta:g} "
                f"| {stats['shapo/kl']:.2e} "
                f"| {stats['shapo/w_mean_negative_adv']:.4f} | {stats['shapo/w_mean_positive_adv']:.4f} "
                f"| {np.abs(log_w).max():.3f} | {stats['shapo/rank_corr_w_logp_negative_adv']:+.2f} "
                f"| {stats['shapo/cos_sim']:.5f} "
                f"| {share_negative:.2f} | {share_costly:.2f} |"
            )
            ax = axes[row, col]
            edges = np.quantile(logp0, np.linspace(0, 1, args.bins + 1))
            for sign, color, name in ((adv < 0, "tab:red", "A < 0"), (adv > 0, "tab:blue", "A > 0")):
                ax.scatter(logp0[sign], w[sign], s=2, alpha=0.15, color=color, rasterized=True)
                centres, means = binned_means(logp0[sign], w[sign], edges)
                ax.plot(centres, means, "o-", color=color, label=f"{name}: binned mean")
            ax.axhline(1.0, color="black", linewidth=0.8)
            ax.set(title=f"{label}, δ_Down = {delta:g}", xlabel="log π_θ0(a|s)", ylabel="w = π_θ0+ε / π_θ0")
            low, high = np.quantile(w, [0.005, 0.995])
            ax.set_ylim(low - 0.1 * (high - low), high + 0.1 * (high - low))
            ax.legend(fontsize=7)
            if delta == middle:
                ax = cost_axes[0, row]
                bound = np.quantile(np.abs(adv_cost), 0.98) or 1.0
                points = ax.scatter(
                    logp0, w, c=adv_cost, s=2, cmap="coolwarm", vmin=-bound, vmax=bound, rasterized=True
                )
                fig_colorbar = cost_fig.colorbar(points, ax=ax)
                fig_colorbar.set_label("A_c (centred cost advantage)")
                ax.axhline(1.0, color="black", linewidth=0.8)
                ax.set(title=f"{label}, δ_Down = {delta:g}", xlabel="log π_θ0(a|s)", ylabel="w")
                ax.set_ylim(low - 0.1 * (high - low), high + 0.1 * (high - low))
    fig.tight_layout()
    fig.savefig(out / "reweighting.png", dpi=90)
    cost_fig.tight_layout()
    cost_fig.savefig(out / "reweighting_cost.png", dpi=90)
    plt.close("all")
    table = "\n".join(rows) + "\n"
    (out / "results.md").write_text(table)
    print(table)
    return table


if __name__ == "__main__":
    try:
        main(tyro.cli(Args))
    except ValueError as error:
        sys.exit(f"reweighting.py: error: {error}")
