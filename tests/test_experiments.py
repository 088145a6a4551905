"""The studies under experiments/ (a folder each: run.sh, Python files, results.md, figures) against the
current training scripts, plot.py and sweep.py, so that a rename or a broken import fails here rather than in
a study months later. Each Python file: what it uses of our modules exists and its calls bind (an AST check),
and it imports and reads its command line where it runs without OmniSafe or the release. Each run.sh: run
with python, git and pip replaced by a recorder, every command it would run names an existing file and
parses with that program's own flags. Tiny real runs remain only where a study reads what our code returns
(dict keys, fields), which no source check sees."""

import ast
import importlib.util
import inspect
import json
import os
import shutil
import subprocess
import sys
import types
from dataclasses import fields
from pathlib import Path

import pytest
import torch
import tyro
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.tensorboard import SummaryWriter

import plot
import sweep
from conftest import ROOT, load

EXPERIMENTS = ROOT / "experiments"
OURS = ("ppo_lag", "trpo_lag", "ppo_lag_shapo", "trpo_lag_shapo", "plot", "sweep", "evaluate")
PYTHON_FILES = (
    "omnisafe/omnisafe_ablation.py",
    "omnisafe/omnisafe_equivalence.py",
    "omnisafe/omnisafe_tables.py",
    "omnisafe/omnisafe_trpolag.py",
    "sensitivity/sensitivity.py",
    "dose_response/dose_response.py",
    "release_falls/compare.py",
    "release_falls/init_falls.py",
    "release_falls/release_init.py",
    "release_falls/run_release.py",
    "reweighting/reweighting.py",
    "diagnostics_overhead/diagnostics_overhead.py",
    "throughput/learner.py",
)
# those that import without OmniSafe or the release, and how their command line is read
COMMAND_LINES = {
    "omnisafe/omnisafe_tables.py": "Args",
    "sensitivity/sensitivity.py": "Args",
    "dose_response/dose_response.py": "Args",
    "reweighting/reweighting.py": "Args",
    "diagnostics_overhead/diagnostics_overhead.py": "Args",
    "release_falls/compare.py": "main",
    "omnisafe/omnisafe_ablation.py": None,
}
SHELL_SCRIPTS = (
    "evidence/run.sh",
    "init_falls/run.sh",
    "omnisafe/run.sh",
    "release_falls/run.sh",
    "sensitivity/run.sh",
    "dose_response/run.sh",
    "walker10/run.sh",
    "reweighting/run.sh",
)
# files that use a training script under a name they do not import it as (its functions take the loaded copy)
EXTRA_ALIASES = {"omnisafe/omnisafe_ablation.py": {"trpo_lag": "trpo_lag"}}


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
    sys.modules[spec.name] = module  # where tyro looks for the source of its dataclasses' help
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


def test_every_experiment_file_is_checked():
    assert {str(p.relative_to(EXPERIMENTS)) for p in EXPERIMENTS.rglob("*.py")} == set(PYTHON_FILES)
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


def check_uses(source, path, aliases=None):
    """Problems with the uses of our modules in `source` (the file at `path`), and the names found per module."""
    tree, aliases, problems, used = ast.parse(source), dict(aliases or {}), [], {}
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
        is_insert = isinstance(node, ast.Call) and dotted(node.func) == ["sys", "path", "insert"]
        if is_insert and "__file__" in ast.unparse(node):
            root = eval(ast.unparse(node.args[1]), {"__file__": str(path), "Path": Path, "os": os, "str": str})
            if Path(root).resolve() != ROOT:
                problems.append(f"sys.path lookup at line {node.lineno} finds {Path(root).resolve()}, not the root")
    return problems, used


@pytest.mark.parametrize("relative", PYTHON_FILES)
def test_python_file_uses_what_exists(relative):
    path = EXPERIMENTS / relative
    problems, used = check_uses(path.read_text(), path, EXTRA_ALIASES.get(relative))
    assert not problems, "\n".join(problems)
    # learner.py calls the scripts through a loop variable; the other two run outside this repository's venv
    exempt = ("omnisafe/omnisafe_trpolag.py", "release_falls/run_release.py", "throughput/learner.py")
    assert used or relative in exempt, "found no use to check"
    if relative != "omnisafe/omnisafe_ablation.py":  # it loads trpo_lag.py by path, from ROOT
        assert "sys.path.insert" in path.read_text()
    else:
        assert load_experiment(relative).ROOT == ROOT


@pytest.mark.parametrize("relative", sorted(COMMAND_LINES))
def test_python_file_imports_and_reads_its_command_line(relative):
    module = load_experiment(relative)
    if COMMAND_LINES[relative]:
        with pytest.raises(SystemExit) as help_exit:
            tyro.cli(getattr(module, COMMAND_LINES[relative]), args=["--help"])
        assert help_exit.value.code == 0


# ---------------------------------------------------------------------------------------------
# Tiny real runs: what the studies read of our code's return values
# ---------------------------------------------------------------------------------------------
def test_ablation_patches_train_a_tiny_run(tmp_path, monkeypatch):
    ablation = load_experiment("omnisafe/omnisafe_ablation.py")
    module = ablation.load_trpo_lag()
    ablation.patch(module, set(ablation.ABLATIONS))
    monkeypatch.chdir(tmp_path)
    args = module.Args(env_id="Walker2d-v4", num_envs=2, steps_per_epoch=200, total_timesteps=400, seed=0)
    module.check_args(args)
    agent = module.main(args)
    (run_dir,) = (tmp_path / "runs").iterdir()
    logged = scalars(run_dir, "charts/policy_std")  # the ablation's own tag, the last one the trained actor's
    assert [step for step, _ in logged] == [200, 400]
    assert logged[-1][1] == pytest.approx(agent.actor.log_std.exp().mean().item(), rel=1e-6)
    with pytest.raises(ValueError, match="jc-window"):  # trpo_lag.py's own behaviour now
        ablation.patch(ablation.load_trpo_lag(), {"jc-window"})


def test_reweighting_study_on_a_tiny_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shapo = load("trpo_lag_shapo")
    shapo.main(
        shapo.Args(
            env_id="Walker2d-v4",
            num_envs=2,
            steps_per_epoch=200,
            total_timesteps=400,
            save_model=True,
            lagrangian="pid",
            cost_limit=0.0,
        )
    )
    (checkpoint,) = (tmp_path / "runs").glob("*/checkpoint.pt")
    study = load_experiment("reweighting/reweighting.py")
    args = study.Args(
        checkpoints=(f"tiny={checkpoint}",), delta_downs=(1e-5, 1e-4), steps=400, out_dir=str(tmp_path / "out")
    )
    rows = table_rows(study.main(args))[1:]
    assert [row[0] for row in rows] == ["tiny", "tiny"] and [float(row[4]) for row in rows] == [1e-5, 1e-4]
    assert all(0 < float(row[5]) <= float(row[4]) for row in rows)  # the KL reached, inside the ball
    for name in ("reweighting.png", "reweighting_cost.png", "results.md"):
        assert (tmp_path / "out" / name).stat().st_size > 0


def test_diagnostics_overhead_times_the_diagnostics_inside_each_update():
    study = load_experiment("diagnostics_overhead/diagnostics_overhead.py")
    for name in ("trpo_lag_shapo", "ppo_lag_shapo"):
        timings = study.shares(name, study.Args(batch=256, repeats=2))
        assert len(timings) == 2 and all(0 < spent < total for total, spent in timings), timings


def test_omnisafe_tables_on_synthetic_runs(tmp_path):
    tables = load_experiment("omnisafe/omnisafe_tables.py")
    last = 1_024_000
    for seed, (returns, evaluation) in enumerate((([900, 1100], 1000.0), ([1200, 1400], 1500.0))):
        episodes = [(last - 100 * (2 - k), r, 20.0) for k, r in enumerate(returns)]
        extra = [("eval/mean_return", evaluation, last), ("eval/mean_cost", 24.0, last)]
        write_run(
            tmp_path / "runs",
            f"SafetyHopperVelocity-v1__trpo_lag_omnisafe1m__{seed}__1700000000",
            episodes,
            [(512_000, 10.0), (last, 20.0)],
            extra,
        )
    table = tmp_path / "omnisafe1m.md"
    tables.main(
        parse(tables.Args, ["--runs-dir", str(tmp_path / "runs"), "--table", str(table), "--last-episodes", "2"])
    )
    (row,) = table_rows(table.read_text())[1:]
    # algorithm, task, seeds, OmniSafe's return, eval. return (mean ± std over seeds), training return
    assert row[:3] == ["trpo_lag", "SafetyHopperVelocity-v1", "2"]
    assert row[4:6] == ["1250.0 ± 250.0", "1150.0 ± 150.0"]


def test_sensitivity_figure_and_paired_table(tmp_path):
    sensitivity = load_experiment("sensitivity/sensitivity.py")
    runs = tmp_path / "runs"
    # (rho, delta) -> per seed: final return, cumulative cost at step 300
    grid = {
        ("0", "0"): [(10, 30), (20, 60)],
        ("0", "1e-05"): [(15, 27), (23, 66)],
        ("0.05", "0"): [(40, 10), (50, 20)],
        ("0.05", "1e-05"): [(30, 12), (50, 20)],
    }
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


def test_dose_response_table_pairs_by_seed_and_averages_the_diagnostics(tmp_path):
    study = load_experiment("dose_response/dose_response.py")
    runs = tmp_path / "runs"
    # delta -> per seed: final return, share of falls in the last episodes, cumulative falls at step 300, cos
    grid = {"0": [(10, 1.0, 30, 1.0), (20, 0.0, 60, 1.0)], "1e-4": [(16, 0.0, 24, 0.9), (22, 0.0, 70, 0.7)]}
    for delta, per_seed in grid.items():
        for seed, (final_return, fall, falls, cos) in enumerate(per_seed):
            episodes = [(50, final_return, fall), (150, final_return, fall), (350, 1e6, 1)]
            epochs = [(100, falls / 3), (200, 2 * falls / 3), (300, falls), (400, 100 * falls)]  # past --steps: cut
            extra = [("shapo/cos_sim", cos, 100), ("shapo/cos_sim", 2 * cos - 1, 300), ("shapo/cos_sim", -9, 400)]
            name = f"trpo_lag_shapo_pid-delta_down={delta}-critic_sam_rho=0"
            write_run(runs, f"Walker2d-v4__{name}__{seed}__1700000000", episodes, epochs, extra)
    write_run(runs, "Walker2d-v4__trpo_lag_shapo_pid-delta_down=1e-2-critic_sam_rho=0__0__1700000000", [], [])
    write_run(runs, "Walker2d-v4__trpo_lag_shapo_pid-delta_down=1e-3__0__1700000000", [(50, 1, 0)], [(100, 0)])
    # an earlier session's rows: seed 2 at delta 0 joins, the row of delta 1e-4 seed 0 gives way to its run folder
    earlier = tmp_path / "earlier.csv"
    earlier.write_text(
        "delta_down,seed,final_return,falls_during_training,final_share_of_falls,shapo/cos_sim,run\n"
        "0.0,2,30,90,1.0,,kept\n0.0001,0,999,999,1.0,0.5,replaced\n"
    )
    out = tmp_path / "out"
    argv = f"--runs-dir {runs} --out-dir {out} --steps 300 --rows {earlier}"
    study.main(parse(study.Args, argv.split()))
    text = (out / "results.md").read_text()
    measures, improvement, diagnostics = [table_rows(part)[1:] for part in text.split("\n\n") if part.startswith("|")]
    assert [row[:2] for row in measures] == [["0", "0, 1, 2"], ["0.0001", "0, 1"]]
    assert [point(cell) for cell in measures[1][2:8]] == [19.0, 47.0, 0.0, 4.0, 2.0, -0.5]  # paired: seeds 0, 1
    assert measures[1][8] == "2/2, 1/2, 1/2"  # return higher on both, falls fewer on seed 0, share tied on seed 1
    assert measures[0][5:] == ["", "", "", ""]  # no paired difference of the base with itself
    # returns 16, 22 against 10, 20, 30: 3 of 6 pairs higher; falls 24, 70 against 30, 60, 90: 4 of 6 lower
    assert [point(cell) for cell in improvement[1][4:]] == [0.5, pytest.approx(4 / 6, abs=0.005)]
    assert point(diagnostics[1][4]) == pytest.approx(((0.9 + 0.8) / 2 + (0.7 + 0.4) / 2) / 2)
    assert diagnostics[0][1] == "0, 1"  # seed 2's row has no diagnostics
    assert diagnostics[1][2] == ""  # a diagnostic no run logged stays empty
    assert "delta_down=1e-3__0__1700000000 (100 steps)" in text  # short of --steps: left out, and said so
    assert (out / "dose_response.png").stat().st_size > 10_000
    rows = {(row["delta_down"], row["seed"]): row for row in study.read_rows(str(out / "runs.csv"))}
    assert sorted(rows) == [(0.0, 0), (0.0, 1), (0.0, 2), (1e-4, 0), (1e-4, 1)]
    assert rows[(0.0, 2)]["run"] == "kept"
    assert rows[(1e-4, 0)]["final_return"] == 16.0


def test_compare_release_falls_on_synthetic_tallies(tmp_path, capsys):
    compare = load_experiment("release_falls/compare.py")
    header = "epoch,vec_step,env,return,length,terminated,truncated\n"
    for seed in (0, 1):
        (tmp_path / f"release_seed{seed}.csv").write_text(header + "1,0,0,1.0,10,1,0\n" * (seed + 1))
        write_run(
            tmp_path / "runs",
            f"Walker2d-v4__trpo_lag_pid__{seed}__1700000000",
            [(10_000, 1, 1)],
            list(zip((20_000, 40_000, 60_000, 80_000), (5, 8, 10, 11 + 2 * seed))),
        )
    compare.main(out_dir=str(tmp_path))
    rows = table_rows(capsys.readouterr().out)
    assert rows[1] == ["0", "1 (1 / 0 / 0 / 0)", "11 (5 / 3 / 2 / 1)"]
    assert rows[2] == ["1", "2 (2 / 0 / 0 / 0)", "13 (5 / 3 / 2 / 3)"]


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
EVIDENCE_CHECKPOINT = "SafetyHopperVelocity-v1__trpo_lag_omnisafe1m__0__1700000000"  # for its evaluations to find


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
        if script == "evidence/run.sh":
            (out / "runs" / EVIDENCE_CHECKPOINT).mkdir(parents=True)
            (out / "runs" / EVIDENCE_CHECKPOINT / "checkpoint.pt").touch()
        env = {key: value for key, value in os.environ.items() if key not in ("WORKERS", "STEPS", "SEEDS")}
        env.update(PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", RECORDER_LOG=str(log), TMPDIR=str(base), SEEDS="3")
        done = subprocess.run(
            ["bash", str(repo / "experiments" / script), str(out)], env=env, capture_output=True, text=True, timeout=120
        )
        records = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        calls = [(*called(record, repo), record) for record in records]  # (what ran, argv after it, record)
        runs[script] = types.SimpleNamespace(returncode=done.returncode, stderr=done.stderr, repo=repo, calls=calls)
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
    ablation = load_experiment("omnisafe/omnisafe_ablation.py")
    ours, theirs = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
    if ours[-2:-1] == ["--eval-episodes"]:
        assert ours[-1].isdigit(), ours
        ours = ours[:-2]
    assert ours[0] == "--ablation" and set(ours[1:]) <= set(ablation.ABLATIONS), ours
    trpo_lag = load("trpo_lag")
    args = parse(trpo_lag.Args, theirs)
    trpo_lag.check_args(args)
    tables = load_experiment("omnisafe/omnisafe_tables.py")
    assert tables.OURS.match(args.exp_name), f"omnisafe_tables.py would not find {args.exp_name}"
    return {args.exp_name: [args]}


def check_evaluate_call(argv):
    args = parse(load("evaluate").Args, argv)
    assert Path(args.checkpoint).is_file() and args.episodes > 0, argv


def check_piped_python(argv, record):
    """Python code a script pipes into `python -`: its uses of our modules, as for the files."""
    problems, used = check_uses(record["stdin"], ROOT / "-")
    assert used and not problems, problems


CHECKS = {  # what a shell script may run -> check of its arguments (returns the exp-names it starts, if any)
    "sweep.py": check_sweep_call,
    "plot.py": lambda argv: parse(plot.Args, argv) and None,
    "evaluate.py": check_evaluate_call,
    "experiments/omnisafe/omnisafe_ablation.py": check_ablation_call,
    "experiments/omnisafe/omnisafe_tables.py": lambda argv: (
        parse(load_experiment("omnisafe/omnisafe_tables.py").Args, argv) and None
    ),
    "experiments/sensitivity/sensitivity.py": lambda argv: (
        parse(load_experiment("sensitivity/sensitivity.py").Args, argv) and None
    ),
    "experiments/dose_response/dose_response.py": lambda argv: (
        parse(load_experiment("dose_response/dose_response.py").Args, argv) and None
    ),
    "experiments/release_falls/compare.py": lambda argv: (
        None
        if {a[2:].replace("-", "_") for a in argv if a[:2] == "--"}
        <= set(inspect.signature(load_experiment("release_falls/compare.py").main).parameters)
        else argv
    ),
    "experiments/release_falls/run_release.py": lambda argv: None,  # <falls_csv> -- <the release's flags>
    "experiments/release_falls/release_init.py": lambda argv: None if len(argv) == 1 and argv[0].isdigit() else argv,
    "experiments/reweighting/reweighting.py": lambda argv: (
        parse(load_experiment("reweighting/reweighting.py").Args, argv) and None
    ),
}
EXPECTED_CALLS = {
    "evidence/run.sh": {
        "sweep.py",
        "evaluate.py",
        "experiments/omnisafe/omnisafe_ablation.py",
        "plot.py",
        "experiments/omnisafe/omnisafe_tables.py",
    },
    "init_falls/run.sh": {"git", "sweep.py", "<592eaf5>/sweep.py", "-"},
    "omnisafe/run.sh": {"experiments/omnisafe/omnisafe_ablation.py", "experiments/omnisafe/omnisafe_tables.py"},
    "release_falls/run.sh": {
        "git",
        "-m venv",
        "pip",
        "experiments/release_falls/run_release.py",
        "sweep.py",
        "experiments/release_falls/release_init.py",
        "experiments/release_falls/compare.py",
    },
    "sensitivity/run.sh": {"sweep.py", "experiments/sensitivity/sensitivity.py", "plot.py"},
    "dose_response/run.sh": {"sweep.py", "experiments/dose_response/dose_response.py"},
    "walker10/run.sh": {"sweep.py", "plot.py"},
    "reweighting/run.sh": {"sweep.py", "experiments/reweighting/reweighting.py"},
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
        for token in argv:  # outputs and inputs named under experiments/ exist there (or their folder does)
            if token.startswith("experiments/") or "/experiments/" in token:
                path = Path(record["cwd"]) / token
                assert path.exists() or path.parent.is_dir(), f"{name}: {token} does not exist"
        if name == "-":
            check_piped_python(argv, record)
        elif name in CHECKS:
            assert (run.repo / name).is_file(), name
            assert (result := CHECKS[name](argv)) is None or isinstance(result, dict), f"{name} rejects {argv}"
            started.update(result or {})
        elif name == "pip" and "-r" in argv:
            assert (Path(record["cwd"]) / argv[argv.index("-r") + 1]).is_file()
    for name, argv, _ in run.calls:  # the figures read the runs the sweeps start
        if name == "plot.py" and (algorithms := parse(plot.Args, argv).algorithms):
            assert set(algorithms) <= set(started), algorithms
    if script == "sensitivity/run.sh":  # sensitivity.py reads delta_Down and rho_critic back from the exp-names
        assert len(started) == 10
        for exp_name, parsed in started.items():
            settings = sweep.split_exp_name(exp_name)[1]
            assert set(load_experiment("sensitivity/sensitivity.py").GRID) <= set(settings), exp_name
            for args in parsed:
                values = (float(settings["delta-down"]), float(settings["critic-sam-rho"]))
                assert values == (args.delta_down, args.critic_sam_rho)
