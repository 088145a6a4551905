"""The four scripts end to end on real tasks, their command-line errors, and the promise that each
SHAPO script differs from its twin by SHAPO only."""

import ast
import dataclasses
import math
import subprocess
import sys

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import ROOT, SCRIPTS, SHAPO_SCRIPTS, load

TINY = ["--total-timesteps", "200", "--steps-per-epoch", "100", "--num-envs", "2", "--max-episode-steps", "40"]
COMMON_TAGS = {
    "charts/episodic_return",
    "charts/episodic_cost",
    "charts/episodic_length",
    "charts/lagrange_multiplier",
    "charts/Jc",
    "charts/cumulative_cost",
    "charts/cost_rate",
    "charts/SPS",
    "losses/policy_loss",
    "losses/reward_critic_loss",
    "losses/cost_critic_loss",
    "losses/approx_kl",
    "perf/rollout_seconds",
    "perf/update_seconds",
}
EXTRA_TAGS = {
    "ppo_lag": {"losses/update_epochs"},
    "trpo_lag": {"trpo/step_fraction", "trpo/backtracks"},
    "ppo_lag_shapo": {"losses/update_epochs"},
    "trpo_lag_shapo": {"trpo/step_fraction", "trpo/backtracks"},
}
SHAPO_TAGS = {
    "shapo/kl",
    "shapo/perturbation_norm",
    "shapo/backtracks",
    "shapo/cos_sim",
    "shapo/delta_down",
    "shapo/w_mean_negative_adv",
    "shapo/w_mean_positive_adv",
    "shapo/adv_weighted_log_w",
    "shapo/rank_corr_w_logp_negative_adv",
}


def run_script(name, *flags, cwd):
    return subprocess.run(
        [sys.executable, str(ROOT / f"{name}.py"), *flags], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def scalars(run_dir):
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return {tag: [event.value for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_trains_end_to_end_on_point_goal(name, tmp_path):
    result = run_script(name, "--env-id", "SafetyPointGoal1-v0", *TINY, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "epoch 2/2 step 200" in result.stdout
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert run_dir.name.startswith(f"SafetyPointGoal1-v0__{name}__0__")
    logged = scalars(run_dir)
    expected = COMMON_TAGS | EXTRA_TAGS[name] | (SHAPO_TAGS if "shapo" in name else set())
    assert expected <= set(logged), expected - set(logged)
    assert all(math.isfinite(v) for values in logged.values() for v in values)
    assert len(logged["charts/lagrange_multiplier"]) == 2
    # each of the 2 envs takes 100 steps: two whole 40-step episodes each
    assert logged["charts/episodic_length"] == [40.0] * 4


def test_shapo_trpo_trains_on_ant_with_every_option(tmp_path):
    flags = "--env-id Ant-v4 --total-timesteps 1000 --steps-per-epoch 500 --num-envs 2 --critic-sam-rho 0.05"
    result = run_script("trpo_lag_shapo", *flags.split(), "--pessimism-schedule", "prop5", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    logged = scalars(run_dir)
    assert SHAPO_TAGS | {"charts/episodic_cost", "trpo/step_fraction"} <= set(logged)
    assert all(math.isfinite(v) for values in logged.values() for v in values)
    assert set(logged["charts/episodic_cost"]) <= {0.0, 1.0}


@pytest.mark.parametrize("name", ["trpo_lag", "trpo_lag_shapo"])
def test_pid_lagrangian_end_to_end(name, tmp_path):
    """--lagrangian pid (spec §8): Walker2d falls cost 1 each, so with cost limit 0 lambda climbs."""
    flags = "--env-id Walker2d-v4 --total-timesteps 600 --steps-per-epoch 200 --num-envs 2 --cost-limit 0"
    result = run_script(name, *flags.split(), "--lagrangian", "pid", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    lambdas = scalars(run_dir)["charts/lagrange_multiplier"]
    assert len(lambdas) == 3 and all(math.isfinite(v) for v in lambdas)
    assert lambdas[0] < lambdas[1] < lambdas[2]


BAD_FLAGS = {
    "unknown env": (["--env-id", "NoSuchTask-v0"], "unsupported --env-id 'NoSuchTask-v0'"),
    "vision env": (["--env-id", "SafetyPointGoal1Vision-v0"], "unsupported --env-id"),
    "no envs": (["--num-envs", "0"], "--num-envs must be positive"),
    "indivisible batch": (["--num-envs", "3", "--steps-per-epoch", "1000"], "must be a multiple of --num-envs"),
    "no budget": (["--total-timesteps", "0"], "--total-timesteps must be positive"),
    "budget below one epoch": (["--total-timesteps", "10"], "at most --total-timesteps"),
    "negative cost limit": (["--cost-limit", "-1"], "--cost-limit must be >= 0"),
    "zero learning rate": (["--critic-lr", "0"], "--critic-lr must be positive"),
    "negative multiplier": (["--lagrange-multiplier-init", "-0.1"], "--lagrange-multiplier-init must be >= 0"),
    "discount above 1": (["--gamma", "1.5"], "need 0 < --gamma <= 1"),
    "zero-step episodes": (["--max-episode-steps", "0"], "--max-episode-steps must be positive"),
    "infinite cost limit": (["--cost-limit", "inf"], "--cost-limit must be a finite number, got inf"),
    "nan discount": (["--gamma", "nan"], "--gamma must be a finite number, got nan"),
    "infinite learning rate": (["--critic-lr", "inf"], "--critic-lr must be a finite number"),
    "negative infinite multiplier": (["--lagrange-multiplier-init", "-inf"], "must be a finite number, got -inf"),
}


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_float_flag_refuses_inf_and_nan(name):
    module = load(name)
    floats = [field.name for field in dataclasses.fields(module.Args) if field.type is float]
    assert len(floats) >= 8
    for field in floats:
        for value in ("inf", "-inf", "nan"):
            args = module.tyro.cli(module.Args, args=[f"--{field.replace('_', '-')}", value])
            with pytest.raises(ValueError, match=f"^--{field.replace('_', '-')} must be a finite number"):
                module.check_args(args)


@pytest.mark.parametrize("name", SCRIPTS)
@pytest.mark.parametrize("case", BAD_FLAGS)
def test_bad_flags_are_rejected_before_anything_runs(name, case):
    flags, message = BAD_FLAGS[case]
    module = load(name)
    args = module.tyro.cli(module.Args, args=flags)
    with pytest.raises(ValueError) as error:
        module.check_args(args)
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("name", SCRIPTS)
def test_bad_flag_exits_with_one_line_and_writes_nothing(name, tmp_path):
    for flags in (
        ["--env-id", "NoSuchTask-v0"],
        ["--num-envs", "3", "--steps-per-epoch", "1000"],
        ["--target-kl", "nan"],
    ):
        result = run_script(name, *flags, cwd=tmp_path)
        assert result.returncode != 0
        assert "Traceback" not in result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"{name}.py: error: "), result.stderr
        assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "name, flags, message",
    [
        ("ppo_lag", ["--update-epochs", "0"], "--update-epochs must be positive"),
        ("ppo_lag", ["--clip-coef", "-0.2"], "--clip-coef must be positive"),
        ("trpo_lag", ["--line-search-steps", "0"], "--line-search-steps must be positive"),
        ("trpo_lag", ["--cg-damping", "-1"], "--cg-damping must be >= 0"),
        ("trpo_lag_shapo", ["--target-kl", "0"], "--target-kl must be positive"),
    ],
)
def test_bad_algorithm_flags_are_rejected(name, flags, message):
    module = load(name)
    with pytest.raises(ValueError, match=message):
        module.check_args(module.tyro.cli(module.Args, args=flags))


@pytest.mark.parametrize("name", SHAPO_SCRIPTS)
@pytest.mark.parametrize(
    "flags", [["--delta-down", "-1e-5"], ["--pessimism-alpha", "0.7"], ["--critic-sam-rho", "-0.1"]]
)
def test_bad_shapo_flags_are_rejected(name, flags):
    module = load(name)
    with pytest.raises(
        ValueError, match="need --delta-down >= 0, 0 < --pessimism-alpha < 0.5 and --critic-sam-rho >= 0"
    ):
        module.check_args(module.tyro.cli(module.Args, args=flags))


# ---- the four files repeat each other on purpose; these tests keep them from drifting apart ----
def top_level_sources(name):
    """{definition name: its source} for a script's top level; the imports under "imports", the
    `if __name__ == "__main__"` block under "__main__", the module docstring left out."""
    source = (ROOT / f"{name}.py").read_text()
    named = {"imports": ""}
    for node in ast.parse(source).body:
        segment = ast.get_source_segment(source, node)
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            named[node.name] = segment
        elif isinstance(node, ast.Assign):
            named[ast.unparse(node.targets[0])] = segment
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            named["imports"] += segment + "\n"
        elif isinstance(node, ast.If):
            named["__main__"] = segment
    return named


SHAPO_TERMS = ("delta_down", "critic_sam_rho", "pessimism", "NormalDist", "Callable")


@pytest.mark.parametrize(
    "vanilla, shapo, shapo_only, with_shapo_call, base_only",
    [
        (
            "trpo_lag",
            "trpo_lag_shapo",
            {
                "SHAPO_CG_ITERS",
                "SHAPO_DAMPING",
                "reweighting_stats",
                "shapo_gradient",
                "pessimism_radius",
                "sam_critic_loss",
            },
            {"imports", "Args", "check_args", "trpo_update", "critics_step", "train"},
            set(),
        ),
        (
            "ppo_lag",
            "ppo_lag_shapo",
            {
                "flat_grad",
                "set_flat_params",
                "mean_kl",
                "damped_fisher_solve_fn",
                "SHAPO_DAMPING",
                "reweighting_stats",
                "shapo_gradient",
                "pessimism_radius",
                "sam_critic_loss",
            },
            {"imports", "Args", "check_args", "ppo_step", "ppo_update", "train"},
            set(),
        ),
    ],
)
def test_shapo_scripts_differ_from_their_twins_by_shapo_only(vanilla, shapo, shapo_only, with_shapo_call, base_only):
    """SHAPO adds its functions and changes only the definitions that call them; every other definition is the
    same text."""
    base, other = top_level_sources(vanilla), top_level_sources(shapo)
    assert set(other) - set(base) == shapo_only
    assert set(base) - set(other) == base_only
    assert {key for key in set(base) & set(other) if base[key] != other[key]} == with_shapo_call
    for key in with_shapo_call:
        assert any(term in other[key] for term in SHAPO_TERMS) and not any(
            term in base[key] for term in SHAPO_TERMS[:3]
        )


def test_common_parts_are_identical_in_the_four_scripts():
    sources = [top_level_sources(name) for name in SCRIPTS]
    # each algorithm's own flags, imports, parts and update calls
    common = set.intersection(*(set(s) for s in sources)) - {
        "imports",
        "Args",
        "check_args",
        "make_agent",
        "main",
        "train",
    }
    assert {
        "make_env",
        "set_skybox",
        "rollout",
        "compute_gae",
        "make_batch",
        "cost_estimate",
        "Lagrange",
        "draw_seeds",
        "load_checkpoint",
        "__main__",
    } <= common
    for key in common:
        assert len({s[key] for s in sources}) == 1, f"{key} differs between the scripts"
    for key in ("flat_grad", "set_flat_params", "mean_kl"):
        assert len({top_level_sources(name)[key] for name in ("trpo_lag", "trpo_lag_shapo", "ppo_lag_shapo")}) == 1, key
    for key in ("reweighting_stats", "shapo_gradient", "pessimism_radius", "sam_critic_loss"):
        assert len({top_level_sources(name)[key] for name in ("ppo_lag_shapo", "trpo_lag_shapo")}) == 1, key


@pytest.mark.parametrize("name", SCRIPTS)
def test_networks_use_pytorch_default_initialisation(name):
    """spec §2 (as the release and SafePO): nn.Linear's own initialisation, log std 0. Built from the
    same seed, the actor's and a critic's layers equal freshly made nn.Linear layers."""
    module = load(name)
    for seed in (0, 1):
        torch.manual_seed(seed)
        actor, critic = module.Actor(7, 3), module.mlp(7, 1)
        torch.manual_seed(seed)
        expected = [torch.nn.Linear(i, o) for i, o in ((7, 64), (64, 64), (64, 3), (7, 64), (64, 64), (64, 1))]
        got = [layer for net in (actor.mean, critic) for layer in net if isinstance(layer, torch.nn.Linear)]
        for layer, reference in zip(got, expected, strict=True):
            assert torch.equal(layer.weight, reference.weight) and torch.equal(layer.bias, reference.bias)
        assert torch.equal(actor.log_std, torch.zeros(3))


@pytest.mark.parametrize("name", SCRIPTS)
def test_no_statement_sets_more_than_three_names_at_once(name):
    """Readability: a parallel assignment of more than three values (a, b, c, d = 1, 2, 3, 4) is split. Unpacking what
    a call returns (obs, reward, cost, terminated, truncated, info = envs.step(...)) is the field's idiom and stays."""
    tree = ast.parse((ROOT / f"{name}.py").read_text())
    crowded = [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Tuple)
        for target in node.targets
        if isinstance(target, ast.Tuple) and len(target.elts) > 3
    ]
    assert crowded == []
