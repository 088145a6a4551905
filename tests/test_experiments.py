"""The studies under experiments/ against the current training scripts, plot.py and sweep.py, so that a
rename or a changed signature there fails here rather than in a study months later.

- Every Python file: each `trpo_lag.X` / `ours.X` / `plot.X` it uses (and `from trpo_lag import X`)
  exists in the current module, each call of one binds to its signature, each `args.X` of an Args it
  builds is a field, and its `sys.path` lookup of the repository root finds the root.
- omnisafe_ablation.py: each remaining ablation patched into a fresh trpo_lag module and trained for
  two tiny epochs, with its effect checked (normalised costs against a direct computation, fresh
  episodes, clipped observations, the logged std); its command line, resume, final evaluation through
  evaluate.py with the patched copy, and errors.
- omnisafe_tables.py, sensitivity.py, release_falls/compare.py and init_falls.sh's table: run on
  synthetic TensorBoard logs and tallies, their numbers checked by hand.
- release_falls/init_falls.py and release_init.py with the release's model stubbed by our own actor
  and critics; omnisafe_trpolag.py with OmniSafe's Agent stubbed. omnisafe_equivalence.py and
  release_falls/run_release.py need OmniSafe or the release: their sources are checked only.
- Every shell script: `bash -n`, then a run with python, git and pip replaced by a recorder; every
  command it would run must name an existing file and parse with that program's own flags (a sweep's
  pass-through flags with each training script's Args and check_args); the exp-names the sweeps give
  must be those the tables and figures read back.
"""

import ast
import importlib.util
import inspect
import json
import os
import re
import runpy
import shutil
import subprocess
import sys
import types
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pytest
import torch
import tyro
from conftest import ROOT, load
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.tensorboard import SummaryWriter

import plot
import sweep

EXPERIMENTS = ROOT / "experiments"
OURS = ("ppo_lag", "trpo_lag", "ppo_lag_shapo", "trpo_lag_shapo", "plot", "sweep", "evaluate")
# every experiment script, by path under experiments/: the tests below that exercise it
PYTHON_FILES = {
    "omnisafe_ablation.py": "test_ablation_* (real training), test_python_file_uses_what_exists",
    "omnisafe_equivalence.py": "test_omnisafe_equivalence_*, test_python_file_uses_what_exists",
    "omnisafe_tables.py": "test_omnisafe_tables_*, test_python_file_uses_what_exists",
    "omnisafe_trpolag.py": "test_omnisafe_trpolag_*, test_python_file_uses_what_exists",
    "sensitivity.py": "test_sensitivity_*, test_python_file_uses_what_exists",
    "release_falls/compare.py": "test_compare_*, test_python_file_uses_what_exists",
    "release_falls/init_falls.py": "test_release_init_falls_*, test_python_file_uses_what_exists",
    "release_falls/release_init.py": "test_release_init_*, test_python_file_uses_what_exists",
    "release_falls/run_release.py": "test_run_release_*, test_python_file_uses_what_exists",
    "reweighting.py": "test_reweighting_*, test_python_file_uses_what_exists",
    "diagnostics_overhead.py": "test_diagnostics_overhead_*, test_python_file_uses_what_exists",
}
SHELL_SCRIPTS = ("evidence.sh", "init_falls.sh", "omnisafe_ablation.sh", "release_falls.sh", "sensitivity/run.sh", "walker10.sh",
                 "reweighting.sh")
# names each file must be found using, so that the source checks cannot pass by finding nothing
EXPECTED_USES = {
    "omnisafe_ablation.py": {"trpo_lag": {"rollout", "make_batch", "trpo_update", "ObsNormalizer", "Args", "check_args",
                                          "load_checkpoint", "main"}, "evaluate": {"load_script", "evaluate", "Args"}},
    "omnisafe_equivalence.py": {"trpo_lag": {"Args", "Actor", "mlp", "make_batch", "conjugate_gradient", "trpo_update",
                                             "update_critics", "make_env"}},
    "omnisafe_tables.py": {"plot": {"find_run_dirs", "RUN_NAME", "load_run"}},
    "omnisafe_trpolag.py": {},
    "sensitivity.py": {"plot": {"find_run_dirs", "RUN_NAME", "load_run", "final_values", "mean_interval", "format_interval"}},
    "release_falls/compare.py": {"plot": {"Run", "find_run_dirs", "load_run", "format_interval", "mean_interval",
                                          "difference_interval"}},
    "release_falls/init_falls.py": {"trpo_lag": {"safety_gymnasium", "make_env", "Actor", "ObsNormalizer", "rollout"}},
    "release_falls/release_init.py": {"trpo_lag": {"Actor", "mlp", "Args", "main"}},
    "release_falls/run_release.py": {},
    "diagnostics_overhead.py": {"evaluate": {"load_script"}},
    "reweighting.py": {"evaluate": {"load_script"}, "trpo_lag_shapo": {"shapo_gradient", "fisher_vector_product_fn",
                                                                      "conjugate_gradient", "trpo_surrogate", "flat_grad",
                                                                      "set_flat_params"}},
}
# files that use a training script under a name they do not import it as
EXTRA_ALIASES = {"omnisafe_ablation.py": {"trpo_lag": "trpo_lag"}}  # its functions take the loaded copy as `trpo_lag`


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny runs are far faster on one thread when the machine is shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def load_experiment(relative: str):
    """experiments/<relative> imported as a module of its own."""
    path = EXPERIMENTS / relative
    spec = importlib.util.spec_from_file_location("experiment_" + path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse(cls, argv, unknown=False):
    """tyro's parse of argv into cls; a rejected flag fails the test with the command line."""
    try:
        return tyro.cli(cls, args=list(argv), return_unknown_args=unknown)
    except SystemExit as error:
        pytest.fail(f"{cls.__module__}.{cls.__name__} rejects {' '.join(map(str, argv))} (exit {error.code})")


def scalars(run_dir, tag):
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)] if tag in events.Tags()["scalars"] else []


def write_run(runs_dir, name, episodes, epochs, extra=()):
    """A run folder as the scripts log it: episodes (step, return, cost), epoch ends (step, cumulative
    cost), extra scalars (tag, value, step)."""
    writer = SummaryWriter(str(runs_dir / name))
    for step, episode_return, episode_cost in episodes:
        writer.add_scalar("charts/episodic_return", episode_return, step)
        writer.add_scalar("charts/episodic_cost", episode_cost, step)
    for step, cumulative in epochs:
        writer.add_scalar("charts/cumulative_cost", cumulative, step)
    for tag, value, step in extra:
        writer.add_scalar(tag, value, step)
    writer.close()


def table_rows(text):
    """The cells of every Markdown table row of text (header rows included, separator rows left out)."""
    rows = [line for line in text.splitlines() if line.startswith("|") and not line.startswith("|-")]
    return [[cell.strip() for cell in row.strip().strip("|").split("|")] for row in rows]


def point(cell):
    """The leading number of a cell such as '12.50 [10.00, 15.00]' or '+4.00 [...] *'."""
    return float(cell.split()[0])


def test_every_experiment_script_is_tested():
    found = {str(p.relative_to(EXPERIMENTS)) for p in EXPERIMENTS.rglob("*.py")}
    assert found == set(PYTHON_FILES), "a new or removed experiment script: give it a test here"
    assert {str(p.relative_to(EXPERIMENTS)) for p in EXPERIMENTS.rglob("*.sh")} == set(SHELL_SCRIPTS)


# ---------------------------------------------------------------------------------------------
# Source checks: what each file uses of our modules exists and fits
# ---------------------------------------------------------------------------------------------
def dotted(node):
    """['a', 'b', 'c'] for the expression a.b.c, None for anything else."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return [node.id, *reversed(parts)] if isinstance(node, ast.Name) else None


def check_uses(relative):
    """Problems with the file's uses of our modules, and the names it was found using per module."""
    path = EXPERIMENTS / relative
    tree = ast.parse(path.read_text())
    aliases = dict(EXTRA_ALIASES.get(relative, {}))
    problems, used = [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            aliases.update({a.asname or a.name: a.name for a in node.names if a.name in OURS})
        elif isinstance(node, ast.ImportFrom) and node.module in OURS:
            for a in node.names:
                used.setdefault(node.module, set()).add(a.name)
                if not hasattr(load(node.module), a.name):
                    problems.append(f"from {node.module} import {a.name}: no such name")
    args_names = {}  # variable -> module whose Args it holds
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and (parts := dotted(node)) and parts[0] in aliases:
            obj = load(aliases[parts[0]])
            used.setdefault(aliases[parts[0]], set()).add(parts[1])
            for depth, name in enumerate(parts[1:]):  # follow the chain while it goes through modules
                if depth and not isinstance(obj, types.ModuleType):
                    break
                if not hasattr(obj, name):
                    problems.append(f"{'.'.join(parts[: depth + 2])}: no such name ({aliases[parts[0]]})")
                    break
                obj = getattr(obj, name)
        if isinstance(node, ast.Call) and (parts := dotted(node.func)) and len(parts) == 2 and parts[0] in aliases:
            target = getattr(load(aliases[parts[0]]), parts[1], None)
            starred = any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords)
            if callable(target) and not starred:
                try:
                    inspect.signature(target).bind(*[None] * len(node.args), **{k.arg: None for k in node.keywords})
                except TypeError as error:
                    problems.append(f"{'.'.join(parts)}(...) at line {node.lineno}: {error}")
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            for candidate in [node.value.func, *node.value.args[:1]]:
                if (parts := dotted(candidate)) and len(parts) == 2 and parts[0] in aliases and parts[1] == "Args":
                    args_names.update({t.id: aliases[parts[0]] for t in node.targets if isinstance(t, ast.Name)})
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in args_names:
            module = args_names[node.value.id]
            if node.attr not in {f.name for f in fields(load(module).Args)}:
                problems.append(f"{node.value.id}.{node.attr}: not a field of {module}.Args")
    for node in ast.walk(tree):  # sys.path.insert(0, <the repository root, found from __file__>)
        if isinstance(node, ast.Call) and dotted(node.func) == ["sys", "path", "insert"] and "__file__" in ast.unparse(node):
            root = eval(ast.unparse(node.args[1]), {"__file__": str(path), "Path": Path, "os": os, "str": str})
            if Path(root).resolve() != ROOT:
                problems.append(f"sys.path lookup at line {node.lineno} finds {Path(root).resolve()}, not the repository root")
    return problems, used, aliases


@pytest.mark.parametrize("relative", sorted(PYTHON_FILES))
def test_python_file_uses_what_exists(relative):
    problems, used, aliases = check_uses(relative)
    assert not problems, "\n".join(problems)
    for module, names in EXPECTED_USES[relative].items():
        assert names <= used.get(module, set()), f"{relative} no longer uses {names - used.get(module, set())} of {module}"
    source = (EXPERIMENTS / relative).read_text()
    assert "docs/" not in source, "experiment scripts live in experiments/"
    if relative in ("omnisafe_trpolag.py", "release_falls/run_release.py"):  # trpo_lag imported for its import shim
        assert "trpo_lag" in aliases.values() and isinstance(load("trpo_lag").safety_gymnasium, types.ModuleType)
    if relative != "omnisafe_ablation.py":  # it loads trpo_lag.py by path (tested by running it)
        assert "sys.path.insert" in source and "__file__" in source


# ---------------------------------------------------------------------------------------------
# omnisafe_ablation.py: the patches on the current trpo_lag.py, in real tiny runs
# ---------------------------------------------------------------------------------------------
TINY = dict(env_id="Walker2d-v4", num_envs=2, steps_per_epoch=200, total_timesteps=400, seed=0)


def normalised_like_omnisafe(rows: np.ndarray) -> np.ndarray:
    """Each step's costs [T, N] normalised by the mean and std (ddof 1, floored at 1e-2) of every cost up
    to and including that step, clipped to [-5, 5]; the first step raw: computed directly, not by a
    running update."""
    out = rows.astype(float).copy()
    for t in range(1, len(rows)):
        seen = rows[: t + 1].ravel().astype(float)
        out[t] = np.clip((rows[t] - seen.mean()) / max(seen.std(ddof=1), 1e-2), -5.0, 5.0)
    return out


def ablation_run(tmp_path, monkeypatch, ablations):
    """Two tiny epochs of a fresh trpo_lag module with `ablations` patched in: the module, its trained
    agent, what its rollout and make_batch saw beneath the patches, and the run folder."""
    ablation = load_experiment("omnisafe_ablation.py")
    module = ablation.load_trpo_lag()
    seen = {key: [] for key in ("entry_sums", "entry_obs", "returned_obs", "raw_cost", "batch_cost", "batch_obs")}
    rollout, make_batch = module.rollout, module.make_batch

    def recording_rollout(envs, agent, obs, episode_sums, num_steps, stop):
        seen["entry_sums"].append(episode_sums.copy()), seen["entry_obs"].append(np.array(obs))
        data, next_obs, episodes = rollout(envs, agent, obs, episode_sums, num_steps, stop)
        seen["raw_cost"].append(data["cost"].clone()), seen["returned_obs"].append(np.array(next_obs))
        return data, next_obs, episodes

    def recording_make_batch(data, *rest):
        seen["batch_cost"].append(data["cost"].clone()), seen["batch_obs"].append(data["obs"].clone())
        return make_batch(data, *rest)

    module.rollout, module.make_batch = recording_rollout, recording_make_batch  # beneath the patches
    ablation.patch(module, set(ablations))
    monkeypatch.chdir(tmp_path)
    args = module.Args(**TINY)
    module.check_args(args)
    agent = module.main(args)
    (run_dir,) = (tmp_path / "runs").iterdir()
    return ablation, module, agent, seen, run_dir


@pytest.mark.parametrize("ablations", [(), ("cost-norm",), ("reset", "obs-clip")], ids=["none", "cost-norm", "reset+obs-clip"])
def test_ablation_patches_apply_to_a_real_run(ablations, tmp_path, monkeypatch):
    ablation, module, agent, seen, run_dir = ablation_run(tmp_path, monkeypatch, ablations)
    assert len(seen["raw_cost"]) == len(seen["batch_cost"]) == 2

    # cost-norm: the critics see costs normalised as OmniSafe does, across epochs; the raw cost counts
    raw = torch.cat(seen["raw_cost"]).numpy()
    given = torch.cat(seen["batch_cost"]).numpy()
    assert raw.sum() > 0, "no fall in the tiny run: the cost checks would be empty"
    if "cost-norm" in ablations:
        np.testing.assert_allclose(given, normalised_like_omnisafe(raw), atol=1e-5)
        assert not np.array_equal(given, raw)
    else:
        np.testing.assert_array_equal(given, raw)
    assert scalars(run_dir, "charts/cumulative_cost")[-1][1] == pytest.approx(raw.sum())

    # reset: the second epoch starts from fresh episodes, not from where the first one stopped
    if "reset" in ablations:
        assert not seen["entry_sums"][1].any()
        assert not np.array_equal(seen["entry_obs"][1], seen["returned_obs"][0])
    else:
        assert seen["entry_sums"][1][2].any()  # lengths of the episodes under way
        np.testing.assert_array_equal(seen["entry_obs"][1], seen["returned_obs"][0])

    # obs-clip: normalised observations within [-5, 5], the std floored at 1e-2; a fresh copy is untouched
    normalizer = module.ObsNormalizer(shape=(3,))
    normalizer.mean, normalizer.var = np.zeros(3), np.array([1e-6, 1e-6, 4.0])
    fresh, plain = ablation.load_trpo_lag().ObsNormalizer(shape=(3,)), load("trpo_lag").ObsNormalizer(shape=(3,))
    fresh.mean, fresh.var, plain.mean, plain.var = normalizer.mean, normalizer.var, normalizer.mean, normalizer.var
    obs = np.array([1.0, 1e-3, 1.0])
    np.testing.assert_array_equal(fresh(obs), plain(obs))
    assert fresh(obs)[0] > 100  # unclipped, the std not floored
    if "obs-clip" in ablations:
        np.testing.assert_allclose(normalizer(obs), [5.0, 0.1, 0.5])
        assert torch.cat(seen["batch_obs"]).abs().max() <= 5.0
    else:
        np.testing.assert_allclose(normalizer(obs), fresh(obs))

    # always: the policy's mean std logged each epoch, the last one the trained actor's
    logged = scalars(run_dir, "charts/policy_std")
    assert [step for step, _ in logged] == [200, 400]
    assert logged[-1][1] == pytest.approx(agent.actor.log_std.exp().mean().item(), rel=1e-6)


def run_ablation_cli(*argv, monkeypatch):
    evaluate = load("evaluate")  # the script points evaluate.py at its patched copy: put it back afterwards
    monkeypatch.setattr(evaluate, "load_script", evaluate.load_script)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(sys, "argv", ["omnisafe_ablation.py", *argv])
    runpy.run_path(str(EXPERIMENTS / "omnisafe_ablation.py"), run_name="__main__")


def test_ablation_command_line_trains_evaluates_and_resumes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    flags = ["--env-id", "Walker2d-v4", "--num-envs", "2", "--steps-per-epoch", "200", "--save-model",
             "--exp-name", "trpo_lag_omnisafe1m_all"]
    ours = ["--ablation", "cost-norm", "reset", "obs-clip", "--eval-episodes", "2", "--"]
    run_ablation_cli(*ours, *flags, "--total-timesteps", "400", monkeypatch=monkeypatch)
    (run_dir,) = (tmp_path / "runs").iterdir()
    checkpoint = run_dir / "checkpoint.pt"
    run_ablation_cli(*ours, *flags, "--total-timesteps", "600", "--resume", str(checkpoint), monkeypatch=monkeypatch)
    assert [step for step, _ in scalars(run_dir, "charts/policy_std")] == [200, 400, 600]
    assert [step for step, _ in scalars(run_dir, "eval/mean_return")] == [400, 600]  # fresh, then resumed

    # the evaluation runs through the patched copy: its clipped normaliser is the one called
    ablation, calls = load_experiment("omnisafe_ablation.py"), []
    module = ablation.load_trpo_lag()
    ablation.patch(module, {"obs-clip"})
    clipped = module.ObsNormalizer.__call__
    monkeypatch.setattr(module.ObsNormalizer, "__call__", lambda self, obs: calls.append(1) or clipped(self, obs))
    monkeypatch.setattr(load("evaluate"), "load_script", load("evaluate").load_script)
    assert ablation.evaluate_checkpoint(module, str(checkpoint), 1).shape == (1, 2) and calls
    trpo_lag = load("trpo_lag")  # the checkpoint is one that trpo_lag.py itself takes
    args = parse(trpo_lag.Args, [*flags, "--total-timesteps", "600", "--resume", str(checkpoint)])
    assert trpo_lag.load_checkpoint(str(checkpoint), args)["global_step"] == 600
    assert plot.RUN_NAME.match(run_dir.name)["exp_name"] == "trpo_lag_omnisafe1m_all"


@pytest.mark.parametrize("argv, message", [
    (["--ablation", "jc-window", "reset", "--"], "jc-window: trpo_lag.py does this itself since 33a5831"),
    (["--ablation", "cg-eps", "jc-window"], "cg-eps and jc-window: trpo_lag.py does this itself"),
    (["--ablation", "cost-norm", "noise", "--"], "usage: --ablation [cost-norm reset obs-clip]..."),
    (["--env-id", "Walker2d-v4"], "usage: --ablation"),
    (["--ablation", "reset", "--", "--env-id", "NoSuchTask-v0"], "unsupported --env-id 'NoSuchTask-v0'"),
    (["--ablation", "reset", "--", "--env-id", "Walker2d-v4", "--resume", "missing.pt"], "cannot read missing.pt"),
    (["--ablation", "reset", "--eval-episodes", "2", "--", "--env-id", "Walker2d-v4"], "give --save-model"),
])
def test_ablation_command_line_errors(argv, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        run_ablation_cli(*argv, monkeypatch=monkeypatch)
    assert str(exit_info.value.code).startswith("omnisafe_ablation.py: error: ")
    assert message in str(exit_info.value.code)
    assert not (tmp_path / "runs").exists()


def test_ablation_evaluates_only_a_run_that_reached_its_last_epoch(tmp_path, monkeypatch):
    ablation = load_experiment("omnisafe_ablation.py")
    trpo_lag = load("trpo_lag")
    monkeypatch.chdir(tmp_path)
    args = trpo_lag.Args(env_id="Walker2d-v4", seed=3, exp_name="x", steps_per_epoch=200, total_timesteps=500)
    for started, step in ((1700000000, 400), (1700000100, 200)):  # the newest folder is the run's
        (tmp_path / "runs" / f"Walker2d-v4__x__3__{started}").mkdir(parents=True)
        torch.save({"global_step": step}, tmp_path / "runs" / f"Walker2d-v4__x__3__{started}" / "checkpoint.pt")
    assert ablation.final_checkpoint(args) is None
    torch.save({"global_step": 400}, tmp_path / "runs" / "Walker2d-v4__x__3__1700000100" / "checkpoint.pt")
    assert ablation.final_checkpoint(args) == str(Path("runs") / "Walker2d-v4__x__3__1700000100" / "checkpoint.pt")
    args.resume = str(tmp_path / "runs" / "Walker2d-v4__x__3__1700000000" / "checkpoint.pt")
    assert ablation.final_checkpoint(args) == args.resume


def test_ablation_patch_refuses_what_trpo_lag_now_does_itself():
    ablation = load_experiment("omnisafe_ablation.py")
    assert set(ablation.ABLATIONS) == {"cost-norm", "reset", "obs-clip"}
    for name in ("jc-window", "cg-eps"):
        with pytest.raises(ValueError, match=name):
            ablation.patch(ablation.load_trpo_lag(), {name})


# ---------------------------------------------------------------------------------------------
# Tables and figures on synthetic logs
# ---------------------------------------------------------------------------------------------
def test_omnisafe_tables_beside_the_published_numbers(tmp_path):
    tables = load_experiment("omnisafe_tables.py")
    runs, last = tmp_path / "runs", 1_024_000
    epochs = [(512_000, 10.0), (last, 20.0)]

    def finished(name, seed, returns, costs, evaluation):
        episodes = [(last - 100 * (len(returns) - k), r, c) for k, (r, c) in enumerate(zip(returns, costs))]
        extra = [("eval/mean_return", evaluation[0], last), ("eval/mean_cost", evaluation[1], last)]
        write_run(runs, f"SafetyHopperVelocity-v1__{name}__{seed}__1700000000", episodes, epochs, extra)

    finished("trpo_lag_omnisafe1m", 0, [900, 1100], [20, 30], (1000.0, 24.0))
    finished("trpo_lag_omnisafe1m", 1, [1200, 1400], [10, 20], (1500.0, 12.0))
    finished("trpo_lag_omnisafe1m_costnorm", 0, [1600, 1600], [4, 6], (1700.0, 9.0))
    finished("trpo_lag_omnisafe10m", 0, [1, 1], [1, 1], (1.0, 1.0))  # the other recipe
    finished("trpo_lag_paper", 0, [1, 1], [1, 1], (1.0, 1.0))  # another slice of the grid
    write_run(runs, "SafetyHopperVelocity-v1__trpo_lag_omnisafe1m__2__1700000000", [(1000, 5, 5)], [(512_000, 1.0)],
              [("eval/mean_return", 5.0, 512_000), ("eval/mean_cost", 5.0, 512_000)])  # not finished
    table = tmp_path / "omnisafe1m.md"
    tables.main(parse(tables.Args, ["--runs-dir", str(runs), "--table", str(table), "--last-episodes", "2"]))
    rows = {(r[0], r[1]): r[2:] for r in table_rows(table.read_text())[1:]}
    assert set(rows) == {("trpo_lag", "SafetyHopperVelocity-v1"), ("trpo_lag + costnorm", "SafetyHopperVelocity-v1")}
    # seeds, OmniSafe's return, eval. return, training return, OmniSafe's cost, eval. cost, training cost
    assert rows["trpo_lag", "SafetyHopperVelocity-v1"] == [
        "2", "1013.9 ± 18.0", "1250.0 ± 250.0", "1150.0 ± 150.0", "1.6 ± 2.3", "18.0 ± 6.0", "20.0 ± 5.0"]
    assert rows["trpo_lag + costnorm", "SafetyHopperVelocity-v1"][:3] == ["1", "1013.9 ± 18.0", "1700.0 ± 0.0"]
    with pytest.raises(SystemExit, match="no finished \\*_omnisafe10m\\* runs"):
        tables.main(tables.Args(runs_dir=str(runs / "none"), recipe="10m"))


def test_sensitivity_figure_and_paired_table(tmp_path):
    sensitivity = load_experiment("sensitivity.py")
    runs = tmp_path / "runs"
    # (rho, delta) -> per seed: final return, cumulative cost at step 300
    grid = {("0", "0"): [(10, 30), (20, 60)], ("0", "1e-05"): [(15, 27), (23, 66)],
            ("0.05", "0"): [(40, 10), (50, 20)], ("0.05", "1e-05"): [(30, 12), (50, 20)]}
    for (rho, delta), per_seed in grid.items():
        for seed, (final_return, cost) in enumerate(per_seed):
            episodes = [(50, final_return, 1), (150, final_return, 1), (250, final_return, 1), (350, 1e6, 1)]
            epochs = [(100, cost / 3), (200, 2 * cost / 3), (300, cost), (400, 100 * cost)]  # past --steps: cut
            name = f"trpo_lag_shapo_pid-delta_down={delta}-critic_sam_rho={rho}"
            write_run(runs, f"Walker2d-v4__{name}__{seed}__1700000000", episodes, epochs)
    out = tmp_path / "out"
    sensitivity.main(parse(sensitivity.Args, ["--runs-dir", str(runs), "--out-dir", str(out), "--steps", "300"]))
    rows = {(r[0], r[1]): r[2:] for r in table_rows((out / "results.md").read_text())[1:]}
    assert set(rows) == {("0", "0"), ("0", "1e-05"), ("0.05", "0"), ("0.05", "1e-05")}
    seeds, final_return, cost, d_return, d_cost = rows["0", "1e-05"]
    assert (seeds, point(final_return), point(cost), point(d_return), point(d_cost)) == ("2", 19.0, 46.5, 4.0, 1.5)
    seeds, final_return, cost, d_return, d_cost = rows["0.05", "1e-05"]
    assert (point(final_return), point(cost), point(d_return), point(d_cost)) == (40.0, 16.0, -5.0, 1.0)
    assert rows["0", "0"][3:] == ["", ""]  # no paired difference of the base with itself
    assert (out / "sensitivity.png").stat().st_size > 10_000


def test_compare_release_falls_per_seed_and_paired(tmp_path, capsys):
    compare = load_experiment("release_falls/compare.py")
    header = "epoch,vec_step,env,return,length,terminated,truncated\n"
    release = {0: [3, 2, 1, 0], 1: [4, 1, 2, 1], 2: [9, 9, 9, 9]}
    for seed, falls in release.items():
        rows = [f"{epoch},0,0,1.0,10,1,0\n" for epoch, count in enumerate(falls, 1) for _ in range(count)]
        rows += ["1,0,0,1.0,10,0,1\n", "5,0,0,1.0,10,1,0\n"]  # a truncation and a fall after epoch 4 do not count
        name = f"release_seed{seed}.csv" + (".part" if seed == 2 else "")  # a tally under way is left out
        (tmp_path / name).write_text(header + "".join(rows))
    (tmp_path / "release_totalcost_seed0.csv").write_text("epoch,total_cost_last\n1,3\n")
    ours = {0: [5, 8, 10, 11], 1: [6, 10, 11, 13]}  # cumulative falls at the four epoch ends
    for seed, cumulative in ours.items():
        epochs = list(zip((20_000, 40_000, 60_000, 80_000), cumulative))
        write_run(tmp_path / "runs", f"Walker2d-v4__trpo_lag_pid__{seed}__1700000000", [(10_000, 1, 1)], epochs)
    write_run(tmp_path / "runs", "Walker2d-v4__trpo_lag_pid__2__1700000000", [(10_000, 1, 1)], [(20_000, 4)])  # under way
    compare.main(out_dir=str(tmp_path))
    text = capsys.readouterr().out
    rows = table_rows(text)
    assert rows[0][1:] == ["release (1bb7704): epochs 1-4 (per epoch)", "trpo_lag_pid: epochs 1-4 (per epoch)"]
    assert rows[1] == ["0", "6 (3 / 2 / 1 / 0)", "11 (5 / 3 / 2 / 1)"]
    assert rows[2] == ["1", "8 (4 / 1 / 2 / 1)", "13 (6 / 4 / 1 / 2)"]
    assert "trpo_lag_pid (2 seeds) against the release (2 seeds)" in text
    summary = {row[0]: row[1:] for row in rows[4:]}
    assert (point(summary["epochs 1-4"][0]), point(summary["epochs 1-4"][1])) == (7.0, 12.0)
    assert point(summary["epochs 1-4"][2]) == 5.0 and summary["epochs 1-4"][4] == "+5.0"
    assert summary["epoch 1"][4] == "+2.0" and summary["epoch 4"][4] == "+1.0"
    assert inspect.signature(compare.main).parameters["out_dir"].default == "sweeps/release_falls"


# ---------------------------------------------------------------------------------------------
# Files that need the authors' release or OmniSafe, with those stubbed
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def release_stub(monkeypatch, tmp_path):
    """safepo.common.model.ActorVCritic built from our own actor and critics, the actor first (so that it
    draws the weights ours draws after the same seed), each instance recorded; RELEASE_SRC set."""
    trpo_lag = load("trpo_lag")
    actor_class, mlp = trpo_lag.Actor, trpo_lag.mlp
    built = []

    class ActorVCritic(torch.nn.Module):
        def __init__(self, obs_dim, act_dim):
            super().__init__()
            self.actor = actor_class(obs_dim, act_dim)
            self.reward_critic = types.SimpleNamespace(critic=mlp(obs_dim, 1))
            self.cost_critic = types.SimpleNamespace(critic=mlp(obs_dim, 1))
            built.append(self)

    names = ("safepo", "safepo.common", "safepo.common.model")
    stubs = {name: types.ModuleType(name) for name in names}
    stubs["safepo.common.model"].ActorVCritic = ActorVCritic
    for name, stub in stubs.items():
        monkeypatch.setitem(sys.modules, name, stub)
    monkeypatch.setenv("RELEASE_SRC", str(tmp_path / "release"))
    monkeypatch.setattr(sys, "path", list(sys.path))
    return built


def test_release_init_falls_pairs_env_seeds_and_noise(release_stub, monkeypatch, capsys):
    # the stub's actor is drawn after the same torch.manual_seed as ours: with the same env seeds and
    # action noise both must fall exactly as often
    monkeypatch.setattr(sys, "argv", ["init_falls.py", "0", "2", "40"])
    runpy.run_path(str(EXPERIMENTS / "release_falls" / "init_falls.py"), run_name="__main__")
    out = capsys.readouterr().out
    match = re.search(r"seeds 0-1, 200 steps each: falls ours (\S+), release (\S+); paired difference (\S+) ± (\S+)", out)
    assert match, out
    assert float(match[1]) == float(match[2]) > 0 and float(match[3]) == 0.0
    assert len(release_stub) == 2


def test_release_init_takes_the_release_weights(release_stub, monkeypatch, tmp_path):
    trpo_lag = load("trpo_lag")
    main, built_parts = trpo_lag.main, []
    for name in ("Actor", "mlp"):  # release_init replaces them in the shared module: put them back afterwards
        monkeypatch.setattr(trpo_lag, name, getattr(trpo_lag, name))

    def shortened_main(args, checkpoint=None):  # its own Args, with no epoch to run and 2 envs
        assert (args.env_id, args.lagrangian, args.cost_limit, args.seed) == ("Walker2d-v4", "pid", 10, 7)
        args.total_timesteps, args.num_envs = 0, 2
        built_parts.append(main(args, checkpoint))

    monkeypatch.setattr(trpo_lag, "main", shortened_main)
    monkeypatch.setattr(sys, "argv", ["release_init.py", "7"])
    monkeypatch.chdir(tmp_path)
    module = runpy.run_path(str(EXPERIMENTS / "release_falls" / "release_init.py"), run_name="__main__")
    (agent,), (release,) = built_parts, release_stub
    for ours, theirs in ((agent.actor, release.actor), (agent.reward_critic, release.reward_critic.critic),
                         (agent.cost_critic, release.cost_critic.critic)):
        for key, value in theirs.state_dict().items():
            assert torch.equal(ours.state_dict()[key], value), key
    assert module["release_critics"] == []  # both critics taken, reward first
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert plot.RUN_NAME.match(run_dir.name)["exp_name"] == "trpo_lag_release_init"


def test_run_release_writes_what_release_falls_sh_moves():
    tree = ast.parse((EXPERIMENTS / "release_falls" / "run_release.py").read_text())
    sums = [ast.unparse(node) for node in ast.walk(tree) if isinstance(node, ast.BinOp)]
    assert "falls_csv + '.release_totalcost.csv'" in sums
    assert any(ast.unparse(node) == "falls_csv = sys.argv[1]" for node in ast.walk(tree) if isinstance(node, ast.Assign))
    assert any(ast.unparse(node) == "assert sys.argv[2] == '--'" for node in ast.walk(tree) if isinstance(node, ast.Assert))


@pytest.fixture
def omnisafe_stub(monkeypatch):
    agents = []

    class Agent:
        def __init__(self, algo, env_id, custom_cfgs):
            self.learned = 0
            agents.append((algo, env_id, custom_cfgs, self))

        def learn(self):
            self.learned += 1

    stub = types.ModuleType("omnisafe")
    stub.Agent = Agent
    for name, module in (("omnisafe", stub), ("wandb", types.ModuleType("wandb")), ("gdown", types.ModuleType("gdown"))):
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(sys, "path", list(sys.path))
    return agents


def test_omnisafe_trpolag_configures_omnisafe_from_its_command_line(omnisafe_stub, monkeypatch):
    script = str(EXPERIMENTS / "omnisafe_trpolag.py")
    monkeypatch.setattr(sys, "argv", ["omnisafe_trpolag.py", "SafetyHopperVelocity-v1", "3"])
    with pytest.raises(SystemExit, match="usage: python experiments/omnisafe_trpolag.py ENV_ID SEED TOTAL_STEPS LOG_DIR"):
        runpy.run_path(script, run_name="__main__")
    monkeypatch.setattr(sys, "argv", ["omnisafe_trpolag.py", "SafetyHopperVelocity-v1", "3", "50000", "logs"])
    runpy.run_path(script, run_name="__main__")
    ((algo, env_id, cfgs, agent),) = omnisafe_stub
    assert (algo, env_id, agent.learned) == ("TRPOLag", "SafetyHopperVelocity-v1", 1)
    assert cfgs == {"seed": 3, "train_cfgs": {"total_steps": 50000, "torch_threads": 1},
                    "algo_cfgs": {"steps_per_epoch": 20000}, "logger_cfgs": {"log_dir": "logs", "use_wandb": False}}


def test_omnisafe_equivalence_feeds_make_batch_and_reads_its_keys():
    """The data it builds is all make_batch needs; the batch and stats keys it reads are make_batch's
    and trpo_update's (found by running them on a tiny synthetic epoch)."""
    tree = ast.parse((EXPERIMENTS / "omnisafe_equivalence.py").read_text())
    data_keys, read = set(), {"batch": set(), "stats": set()}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and [ast.unparse(t) for t in node.targets] == ["data"] and isinstance(node.value, ast.DictComp):
            data_keys |= set(ast.literal_eval(node.value.generators[0].iter))
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Subscript) and ast.unparse(target.value) == "data":
                    data_keys.add(ast.literal_eval(target.slice))
        if isinstance(node, ast.Subscript) and ast.unparse(node.value) in read and isinstance(node.slice, ast.Constant):
            read[ast.unparse(node.value)].add(node.slice.value)
    assert {"obs", "next_obs", "act", "done"} <= data_keys and read["batch"] and read["stats"]
    trpo_lag = load("trpo_lag")
    torch.manual_seed(0)
    steps, shapes = 8, {"obs": (3,), "next_obs": (3,), "act": (2,)}
    data = {key: torch.randn(steps, 1, *shapes.get(key, ())) for key in data_keys}
    for key in {"terminated", "done"} & data_keys:
        data[key] = torch.zeros(steps, 1)
    data["done"][-1] = 1.0
    args = trpo_lag.Args()
    batch = trpo_lag.make_batch(data, trpo_lag.mlp(3, 1), trpo_lag.mlp(3, 1), 0.5, args)
    assert read["batch"] <= set(batch), read["batch"] - set(batch)
    stats = trpo_lag.trpo_update(trpo_lag.Actor(3, 2), batch, args)
    assert read["stats"] <= set(stats), read["stats"] - set(stats)


# ---------------------------------------------------------------------------------------------
# Shell scripts: run with python, git and pip replaced by a recorder
# ---------------------------------------------------------------------------------------------
RECORDER = """#!{python} -S
import json, os, sys
from pathlib import Path
prog, argv = Path(sys.argv[0]).name, sys.argv[1:]
record = {{"prog": prog, "argv": argv, "cwd": os.getcwd()}}
if argv[:1] == ["-"]:
    record["stdin"] = sys.stdin.read()
if argv[:2] == ["-m", "venv"]:  # a venv whose python and pip record too
    (Path(argv[2]) / "bin").mkdir(parents=True)
    for name in ("python", "pip"):
        (Path(argv[2]) / "bin" / name).symlink_to({recorder!r})
for arg in argv:  # run_release.py writes its episode tally and the release's total cost beside it
    if arg.endswith(".csv.part"):
        Path(arg).touch(), Path(arg + ".release_totalcost.csv").touch()
with open(os.environ["RECORDER_LOG"], "a") as log:
    log.write(json.dumps(record) + "\\n")
"""


EVIDENCE_CHECKPOINTS = ("SafetyHopperVelocity-v1__trpo_lag_omnisafe1m__0__1700000000",
                        "SafetyWalker2dVelocity-v1__ppo_lag_omnisafe10m__0__1700000000",  # no slice runs this one
                        "SafetyHopperVelocity-v1__trpo_lag_omnisafe10m__1__1700000000",
                        "SafetyHopperVelocity-v1__trpo_lag_omnisafe10m_table2__0__1700000000")


@dataclass
class ShellRun:
    returncode: int
    stderr: str
    repo: Path
    out: Path
    calls: list  # (what was run, argv after it, record)


def called(record, repo):
    """What a recorded command ran: a path relative to the repository, or a program name."""
    argv = record["argv"]
    if not record["prog"].startswith("python"):
        return record["prog"], argv
    if argv[:1] == ["-"] or argv[:2] == ["-m", "venv"]:
        return " ".join(argv[:2]) if argv[0] == "-m" else "-", argv[1:]
    path = Path(record["cwd"]) / argv[0]
    path = Path(os.path.realpath(path.parent)) / path.name
    try:
        return str(path.relative_to(repo.resolve())), argv[1:]
    except ValueError:
        return str(path), argv[1:]


@pytest.fixture(scope="module")
def shell_runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("shell")
    repo = base / "repo"
    repo.mkdir()
    shutil.copytree(EXPERIMENTS, repo / "experiments")  # a copy: the scripts write their tables there
    for path in ROOT.iterdir():
        if path.suffix == ".py" or path.name == "requirements.txt":
            (repo / path.name).symlink_to(path)
    bin_dir = base / "bin"
    bin_dir.mkdir()
    recorder = bin_dir / "python"
    recorder.write_text(RECORDER.format(python=sys.executable, recorder=str(recorder)))
    recorder.chmod(0o755)
    for name in ("python3", "git"):
        (bin_dir / name).symlink_to(recorder)
    runs = {}
    for script in SHELL_SCRIPTS:
        out, log = base / "out" / script.removesuffix(".sh"), base / f"{script.replace('/', '_')}.jsonl"
        (out / "sweep_logs").mkdir(parents=True)  # as a real sweep leaves it
        for name in EVIDENCE_CHECKPOINTS if script == "evidence.sh" else ():  # for its evaluations to find
            (out / "runs" / name).mkdir(parents=True)
            (out / "runs" / name / "checkpoint.pt").touch()
        env = {key: value for key, value in os.environ.items() if key not in ("WORKERS", "STEPS", "SEEDS")}
        env.update(PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", RECORDER_LOG=str(log), TMPDIR=str(base), SEEDS="3")
        done = subprocess.run(["bash", str(repo / "experiments" / script), str(out)], env=env, capture_output=True,
                              text=True, timeout=120)
        records = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        runs[script] = ShellRun(done.returncode, done.stderr, repo, out,
                                [(*called(record, repo), record) for record in records])
    return runs


def check_sweep_call(argv):
    """sweep.py's flags, then each run it would start through that script's own Args and check_args;
    returns the runs' exp-names with their parsed Args."""
    args, extra = parse(sweep.Args, argv, unknown=True)
    sweep.check_args(args, extra)
    parsed = {}
    for job in sweep.make_jobs(args):
        command = sweep.command(job, "python", extra, args.exp_name_suffix, None)
        module = load(job.script)
        run_args = parse(module.Args, command[2:])
        module.check_args(run_args)
        parsed.setdefault(sweep.exp_name(job, args.exp_name_suffix), []).append(run_args)
    return parsed


def check_ablation_call(argv):
    ablation = load_experiment("omnisafe_ablation.py")
    ours, theirs = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
    evaluates = ours[-2:-1] == ["--eval-episodes"]
    if evaluates:
        assert ours[-1].isdigit() and int(ours[-1]) > 0, ours
        ours = ours[:-2]
    assert ours[0] == "--ablation" and set(ours[1:]) <= set(ablation.ABLATIONS), ours
    trpo_lag = load("trpo_lag")
    args = parse(trpo_lag.Args, theirs)
    trpo_lag.check_args(args)
    assert args.save_model or not evaluates, "--eval-episodes needs --save-model"
    assert load_experiment("omnisafe_tables.py").OURS.match(args.exp_name), f"omnisafe_tables.py would not find {args.exp_name}"
    return {args.exp_name: [args]}


def check_evaluate_call(argv):
    args = parse(load("evaluate").Args, argv)
    assert Path(args.checkpoint).is_file() and args.episodes > 0, argv


def check_flags_of_function(function, argv):
    names = [token[2:].replace("-", "_") for token in argv if token.startswith("--")]
    assert names and set(names) <= set(inspect.signature(function).parameters), argv


def check_run_release_call(argv):
    assert argv[0].endswith(".csv.part") and argv[1] == "--", f"run_release.py takes <falls_csv> -- <flags>, got {argv}"


def check_release_init_call(argv):
    assert len(argv) == 1 and argv[0].isdigit(), f"release_init.py takes a seed, got {argv}"


CHECKS = {  # what a shell script may run -> check of its arguments (returns the exp-names it starts, if any)
    "sweep.py": check_sweep_call,
    "plot.py": lambda argv: parse(plot.Args, argv) and None,
    "evaluate.py": check_evaluate_call,
    "experiments/omnisafe_ablation.py": check_ablation_call,
    "experiments/omnisafe_tables.py": lambda argv: parse(load_experiment("omnisafe_tables.py").Args, argv) and None,
    "experiments/sensitivity.py": lambda argv: parse(load_experiment("sensitivity.py").Args, argv) and None,
    "experiments/release_falls/compare.py": lambda argv: check_flags_of_function(
        load_experiment("release_falls/compare.py").main, argv),
    "experiments/release_falls/run_release.py": check_run_release_call,
    "experiments/release_falls/release_init.py": check_release_init_call,
    "experiments/reweighting.py": lambda argv: parse(load_experiment("reweighting.py").Args, argv) and None,
}
EXPECTED_CALLS = {
    "evidence.sh": {"sweep.py", "evaluate.py", "experiments/omnisafe_ablation.py", "plot.py", "experiments/omnisafe_tables.py"},
    "init_falls.sh": {"git", "sweep.py", "<592eaf5>/sweep.py", "-"},
    "omnisafe_ablation.sh": {"experiments/omnisafe_ablation.py", "experiments/omnisafe_tables.py"},
    "release_falls.sh": {"git", "-m venv", "pip", "experiments/release_falls/run_release.py", "sweep.py",
                         "experiments/release_falls/release_init.py", "experiments/release_falls/compare.py"},
    "sensitivity/run.sh": {"sweep.py", "experiments/sensitivity.py", "plot.py"},
    "walker10.sh": {"sweep.py", "plot.py"},
    "reweighting.sh": {"sweep.py", "experiments/reweighting.py"},
}


@pytest.mark.parametrize("script", SHELL_SCRIPTS)
def test_shell_script_runs_only_what_exists_with_flags_that_parse(script, shell_runs):
    syntax = subprocess.run(["bash", "-n", str(EXPERIMENTS / script)], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    run = shell_runs[script]
    assert run.returncode == 0, run.stderr
    what = {name if not name.endswith("/old/sweep.py") else "<592eaf5>/sweep.py" for name, _, _ in run.calls}
    assert what == EXPECTED_CALLS[script]
    started = {}
    for name, argv, record in run.calls:
        assert not any("docs/" in token for token in argv), f"{name} is given a path under docs/: {argv}"
        for token in argv:  # outputs and inputs named under experiments/ exist there (or their folder does)
            if token.startswith("experiments/") or "/experiments/" in token:
                path = Path(record["cwd"]) / token
                assert path.exists() or path.parent.is_dir(), f"{name}: {token} does not exist"
        if name in CHECKS:
            assert (run.repo / name).is_file(), name
            started.update(CHECKS[name](argv) or {})
        elif name == "pip" and "-r" in argv:
            assert (Path(record["cwd"]) / argv[argv.index("-r") + 1]).is_file()
    if script == "evidence.sh":  # the figures and tables read the runs the sweeps start
        for name, argv, _ in run.calls:
            if name == "plot.py":
                algorithms = parse(plot.Args, argv).algorithms
                assert algorithms and set(algorithms) <= set(started), algorithms
        assert {"trpo_lag_omnisafe1m", "ppo_lag_omnisafe1m", "trpo_lag_omnisafe10m", "trpo_lag_omnisafe10m_table2"} <= set(started)
        # each finished run of slices 2 and 4 evaluated once; the table2 run by omnisafe_ablation.py itself
        evaluated = sorted(Path(argv[0]).parent.name for name, argv, _ in run.calls if name == "evaluate.py")
        assert evaluated == sorted(EVIDENCE_CHECKPOINTS[i] for i in (0, 2))
        (table2,) = [argv for name, argv, _ in run.calls if name == "experiments/omnisafe_ablation.py"
                     and "SafetyHopperVelocity-v1" in argv]
        assert table2[table2.index("--resume") + 1].endswith(EVIDENCE_CHECKPOINTS[3] + "/checkpoint.pt")
        assert "--eval-episodes" in table2[: table2.index("--")]
    if script == "sensitivity/run.sh":  # sensitivity.py reads delta_Down and rho_critic back from the exp-names
        assert len(started) == 10
        for exp_name, parsed in started.items():
            settings = sweep.split_exp_name(exp_name)[1]
            assert set(load_experiment("sensitivity.py").GRID) <= set(settings), exp_name
            for args in parsed:
                values = (float(settings["delta-down"]), float(settings["critic-sam-rho"]))
                assert values == (args.delta_down, args.critic_sam_rho)
    if script == "omnisafe_ablation.sh":
        assert sorted(started) == ["trpo_lag_omnisafe1m_all", "trpo_lag_omnisafe1m_costnorm"]
        assert sum(name == "experiments/omnisafe_ablation.py" for name, _, _ in run.calls) == 6


def test_init_falls_table_from_its_runs(shell_runs, tmp_path, monkeypatch, capsys):
    """The table init_falls.sh pipes into Python, run on synthetic runs of both versions."""
    (code,) = [record["stdin"] for name, _, record in shell_runs["init_falls.sh"].calls if name == "-"]
    out = tmp_path / "init_falls"
    for folder, offset in (("old", 0), ("new", 100)):
        for seed in (0, 1):
            cumulative = [(20_000 * k, offset + 10 * seed + 100 * k) for k in range(1, 6)]
            episodes = [(10_000 * k, 50.0 * (seed + 1) + offset, 1.0) for k in range(1, 11)]
            write_run(out / folder / "runs", f"Walker2d-v4__trpo_lag__{seed}__1700000000", episodes, cumulative)
    monkeypatch.setattr(sys, "argv", ["-", str(out)])
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.chdir(ROOT)
    exec(compile(code, "init_falls.sh", "exec"), {"__name__": "__main__"})
    rows = table_rows(capsys.readouterr().out)[1:]
    assert [row[0] for row in rows] == ["orthogonal, output gain 0.01 (592eaf5)", "PyTorch default (this commit)"]
    # falls by 80 000 steps, in the whole run, final return: means over seeds 0 and 1
    assert [[row[1], *map(point, row[2:])] for row in rows] == [["2", 405.0, 505.0, 75.0], ["2", 505.0, 605.0, 175.0]]


def test_init_falls_old_version_takes_the_flags(shell_runs):
    """init_falls.sh checks out 592eaf5 and runs its sweep.py: every flag it gives is one that version knows."""
    calls = shell_runs["init_falls.sh"].calls
    (worktree,) = [argv for name, argv, _ in calls if name == "git" and argv[:2] == ["worktree", "add"]]
    commit = worktree[-1]
    sources = {}
    for file in ("sweep.py", "trpo_lag.py"):
        shown = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:{file}"], capture_output=True, text=True)
        if shown.returncode:
            pytest.skip(f"commit {commit} is not in this checkout's history")
        (args_class,) = [n for n in ast.parse(shown.stdout).body if isinstance(n, ast.ClassDef) and n.name == "Args"]
        sources[file] = {n.target.id.replace("_", "-") for n in args_class.body if isinstance(n, ast.AnnAssign)}
    (argv,) = [argv for name, argv, _ in calls if name.endswith("/old/sweep.py")]
    flags = {token[2:] for token in argv if token.startswith("--")}
    assert flags - sources["sweep.py"] <= sources["trpo_lag.py"], flags - sources["sweep.py"] - sources["trpo_lag.py"]
    assert {"scripts", "out-dir", "python"} <= flags


# ---------------------------------------------------------------------------------------------
# reweighting.py: the study of how SHAPO reweights the samples, on a tiny real run
# ---------------------------------------------------------------------------------------------
def test_reweighting_study_on_a_tiny_run(tmp_path, monkeypatch):
    """A two-epoch SHAPO-TRPO-Lag checkpoint: the table has a row per delta_Down with the KL inside the ball and the
    logged statistics of its perturbation; the figures are written; the shares of g~ - g from complementary sets of
    samples add up to 1, and all samples give the whole change."""
    monkeypatch.chdir(tmp_path)
    shapo = load("trpo_lag_shapo")
    shapo.main(shapo.Args(env_id="Walker2d-v4", num_envs=2, steps_per_epoch=200, total_timesteps=400, save_model=True,
                          lagrangian="pid", cost_limit=0.0))
    (checkpoint,) = (tmp_path / "runs").glob("*/checkpoint.pt")
    study = load_experiment("reweighting.py")
    args = study.Args(checkpoints=(f"tiny={checkpoint}",), delta_downs=(1e-5, 1e-4), steps=400, out_dir=str(tmp_path / "out"))
    rows = table_rows(study.main(args))[1:]
    assert [row[0] for row in rows] == ["tiny", "tiny"] and [float(row[4]) for row in rows] == [1e-5, 1e-4]
    assert all(0 < float(row[5]) <= float(row[4]) for row in rows)  # the KL reached, inside the ball
    assert all((tmp_path / "out" / name).stat().st_size > 0 for name in ("reweighting.png", "reweighting_cost.png", "results.md"))
    _, batch, facts = study.collect_batch(str(checkpoint), 400, None, args.seed)
    assert facts["lambda"] > 0 and facts["step"] == 400
    result = study.perturb(facts["actor"], batch, 1e-4)
    stats = shapo.reweighting_stats(result["logp0"], result["logp0"] + result["log_w"], batch["adv"])
    assert float(rows[1][6]) == pytest.approx(stats["shapo/w_mean_negative_adv"], abs=1e-4)
    negative = batch["adv"] < 0
    shares = [study.change_share(facts["actor"], batch, result["epsilon"], mask) for mask in (negative, ~negative)]
    assert sum(shares) == pytest.approx(1.0, abs=1e-6)
    assert study.change_share(facts["actor"], batch, result["epsilon"], torch.ones_like(negative)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="label=path"):
        study.main(study.Args(checkpoints=(str(checkpoint),), out_dir=str(tmp_path / "out")))


def test_diagnostics_overhead_times_the_diagnostics_inside_each_update():
    study = load_experiment("diagnostics_overhead.py")
    args = study.Args(batch=256, repeats=2)
    for name in ("trpo_lag_shapo", "ppo_lag_shapo"):
        timings = study.shares(name, args)
        assert len(timings) == 2 and all(0 < spent < total for total, spent in timings), timings
