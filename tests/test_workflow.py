"""A run that is never lost: checkpoints, stop and resume, evaluation (evaluate.py), video, reproducibility,
numerical faults and bad checkpoint input. The code is common to the four scripts; the tests run
it through one or two of them and tests/test_scripts.py checks that it is identical in all four.

Resume contract (README): a run continues at the epoch boundary of its checkpoint with fresh
episodes in every env, seeded from (seed, epoch), so a given checkpoint always continues the same
way; counters, parameters, optimiser states, the Lagrange multiplier, the observation statistics
and the TensorBoard steps carry over."""

import copy
import math
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import imageio
import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import ROOT, load

WALKER = ["--env-id", "Walker2d-v4", "--num-envs", "2", "--steps-per-epoch", "200"]


def start(name, flags, cwd):
    return subprocess.Popen(
        [sys.executable, "-u", str(ROOT / f"{name}.py"), *flags],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run(name, flags, cwd):
    return subprocess.run(
        [sys.executable, str(ROOT / f"{name}.py"), *flags], cwd=cwd, capture_output=True, text=True, timeout=600
    )


def stop_after_first_epoch(process, signum):
    """Send `signum` once the run has printed its first epoch; return (stdout, stderr)."""
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith("epoch 1/"):
            process.send_signal(signum)
            break
    out, err = process.communicate(timeout=600)
    return "".join(lines) + out, err


def only_run_dir(cwd):
    (run_dir,) = (Path(cwd) / "runs").iterdir()
    return run_dir


def scalars(run_dir):
    """{tag: [(step, value)]} of a run, wall-clock measurements (steps/s, perf/*) left out."""
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)]
        for tag in events.Tags()["scalars"]
        if tag != "charts/SPS" and not tag.startswith("perf/")
    }


def final_parameters(run_dir):
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    return {name: checkpoint[name] for name in ("global_step", "cumulative_cost", "actor", "reward_critic", "lagrange")}


def assert_same_state(a, b):
    """Equal nested checkpoint entries: tensors bit for bit, everything else with ==."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same_state(a[key], b[key])
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b


@pytest.mark.parametrize(
    "name, task_flags, signum",
    [
        ("trpo_lag_shapo", [*WALKER, "--total-timesteps", "800", "--lagrangian", "pid"], signal.SIGINT),
        (
            "ppo_lag",
            [
                "--env-id",
                "SafetyPointGoal1-v0",
                "--num-envs",
                "2",
                "--steps-per-epoch",
                "120",
                "--max-episode-steps",
                "50",
                "--total-timesteps",
                "480",
            ],
            signal.SIGTERM,
        ),
    ],
)
def test_stop_keeps_the_last_good_checkpoint_and_a_resume_always_goes_on_the_same_way(
    name, task_flags, signum, tmp_path
):
    """Stopped after its first epoch, a run exits 0 with one line and its epoch-boundary checkpoint;
    two resumes from copies of that checkpoint end identically, logging at the uninterrupted run's
    steps with nothing twice, and their counters carry on from the checkpoint's."""
    flags = [*task_flags, "--save-model", "--save-every", "1"]
    process = start(name, flags, tmp_path)
    out, err = stop_after_first_epoch(process, signum)
    assert process.returncode == 0 and "Traceback" not in err, err
    message = [line for line in out.splitlines() if "stopped by" in line]
    assert len(message) == 1 and f"stopped by {signal.Signals(signum).name}" in message[0]
    run_dir = only_run_dir(tmp_path)
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    steps_per_epoch = int(flags[flags.index("--steps-per-epoch") + 1])
    assert checkpoint["epoch"] >= 1 and checkpoint["global_step"] == checkpoint["epoch"] * steps_per_epoch
    assert f"last good checkpoint (step {checkpoint['global_step']})" in message[0]
    assert scalars(run_dir)["charts/lagrange_multiplier"], "TensorBoard must be flushed on the stop"

    for label in ("a", "b"):
        shutil.copytree(run_dir, tmp_path / label / "runs" / run_dir.name)
        resumed = run(
            name,
            [*flags, "--resume", str(tmp_path / label / "runs" / run_dir.name / "checkpoint.pt")],
            tmp_path / label,
        )
        assert resumed.returncode == 0, resumed.stderr
        assert f"epoch {checkpoint['epoch'] + 1}/" in resumed.stdout.splitlines()[0]
    ends = [final_parameters(only_run_dir(tmp_path / label)) for label in ("a", "b")]
    assert_same_state(ends[0], ends[1])
    assert ends[0]["global_step"] == int(flags[flags.index("--total-timesteps") + 1])
    assert ends[0]["cumulative_cost"] >= checkpoint["cumulative_cost"]
    logged = [scalars(only_run_dir(tmp_path / label)) for label in ("a", "b")]
    assert logged[0] == logged[1]
    epoch_steps = [step for step, _ in logged[0]["charts/lagrange_multiplier"]]
    assert epoch_steps == list(range(steps_per_epoch, ends[0]["global_step"] + 1, steps_per_epoch))
    assert [step for step, _ in logged[0]["charts/cumulative_cost"]][: checkpoint["epoch"]] == epoch_steps[
        : checkpoint["epoch"]
    ]


@pytest.mark.parametrize("name, lagrangian", [("ppo_lag", "adam"), ("trpo_lag", "pid")])
def test_resume_restores_every_part_of_the_run(name, lagrangian, tmp_path, monkeypatch):
    """Parameters, optimiser states, the Lagrange multiplier (Adam or PID) and counters come back
    from the checkpoint exactly; the observation statistics go on from it with the fresh episodes'
    first observations."""
    module = load(name)
    monkeypatch.chdir(tmp_path)
    settings = dict(
        env_id="Walker2d-v4",
        num_envs=2,
        steps_per_epoch=200,
        total_timesteps=400,
        save_model=True,
        cost_limit=0.0,
        **({"lagrangian": lagrangian} if lagrangian == "pid" else {}),
    )
    module.main(module.Args(**settings))
    path = str(only_run_dir(tmp_path) / "checkpoint.pt")
    checkpoint = module.load_checkpoint(path, module.Args(**settings, resume=path))
    assert checkpoint["epoch"] == 2 and checkpoint["lagrange"] != {}
    agent = module.main(module.Args(**settings, resume=path), checkpoint)  # no epoch left to run
    for key, part in vars(agent).items():
        if key != "normalizer":
            assert_same_state(part.state_dict(), checkpoint[key])
    assert agent.lagrange.multiplier > 0.001
    assert agent.normalizer.count == pytest.approx(checkpoint["normalizer"]["count"] + 2)
    assert agent.optimizer.state_dict()["state"]
    assert checkpoint["cost_window"] and checkpoint["mean_episode_cost"] == pytest.approx(1.0)  # J_c's window is kept


def test_same_seed_same_metrics_other_seed_other_metrics(tmp_path):
    logs = {}
    for label, seed in (("first", "1"), ("again", "1"), ("other", "2")):
        (tmp_path / label).mkdir()
        assert (
            run("ppo_lag_shapo", [*WALKER, "--total-timesteps", "400", "--seed", seed], tmp_path / label).returncode
            == 0
        )
        logs[label] = scalars(only_run_dir(tmp_path / label))
    assert logs["first"] == logs["again"]
    assert logs["first"]["charts/episodic_return"] != logs["other"]["charts/episodic_return"]
    assert logs["first"]["losses/policy_loss"] != logs["other"]["losses/policy_loss"]


def test_runs_share_no_environment_seed(tmp_path, monkeypatch):
    """spec §2: runs 0-9 with 5 envs, their resumptions and their evaluations draw pairwise distinct env seeds
    (SafePO's seed + i shares 4 of 5 between seeds s and s + 1), and main resets the envs with the drawn ones."""
    module = load("trpo_lag")
    drawn = [module.draw_seeds(seed, 6, epoch)[1:] for seed in range(10) for epoch in (0, 7)]
    drawn += [module.draw_seeds(seed, 10) for seed in range(10)]
    assert len({s for seeds in drawn for s in seeds}) == sum(map(len, drawn))
    reset, seen = module.safety_gymnasium.vector.SafetySyncVectorEnv.reset, []

    def recording_reset(self, **kwargs):
        seen.append(kwargs["seed"])
        return reset(self, **kwargs)

    monkeypatch.setattr(module.safety_gymnasium.vector.SafetySyncVectorEnv, "reset", recording_reset)
    monkeypatch.chdir(tmp_path)
    for seed in (0, 1):
        module.main(module.Args(env_id="Walker2d-v4", num_envs=2, steps_per_epoch=200, total_timesteps=200, seed=seed))
    assert seen == [module.draw_seeds(0, 3, 0)[1:], module.draw_seeds(1, 3, 0)[1:]]


@pytest.mark.parametrize("name", ["ppo_lag", "trpo_lag"])
def test_non_finite_update_stops_with_one_line_after_saving_the_last_good_checkpoint(name, tmp_path, monkeypatch):
    module = load(name)
    monkeypatch.chdir(tmp_path)
    calls = {"n": 0}
    true_loss = module.critic_loss

    def loss_that_breaks_in_epoch_two(*args):
        calls["n"] += 1
        loss = true_loss(*args)
        return loss * float("nan") if calls["n"] > calls.setdefault("first_epoch", 10**9) else loss

    monkeypatch.setattr(module, "critic_loss", loss_that_breaks_in_epoch_two)
    # learn how many critic losses one epoch computes, then break the second epoch
    args = module.Args(env_id="Walker2d-v4", num_envs=2, steps_per_epoch=200, total_timesteps=200)
    module.main(args)
    calls["first_epoch"], calls["n"] = calls["n"], 0
    with pytest.raises(SystemExit) as stop:
        module.main(module.Args(**{**vars(args), "total_timesteps": 600, "save_model": True}))
    message = str(stop.value.code)
    assert message.startswith(f"{name}.py: error: non-finite or invalid gradient of the ")
    assert "in epoch 2; last good checkpoint (step 200)" in message and "\n" not in message
    run_dir = sorted((tmp_path / "runs").iterdir())[-1]
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert checkpoint["global_step"] == 200
    assert all(torch.isfinite(t).all() for t in checkpoint["reward_critic"].values())


def test_non_finite_loss_stops_the_run_naming_it(tmp_path, monkeypatch):
    """A non-finite value in an update's statistics (here the policy loss of the second epoch) stops
    the run with one line naming it, after the last good checkpoint is written."""
    module = load("trpo_lag")
    monkeypatch.chdir(tmp_path)
    true_update, calls = module.trpo_update, []

    def update_with_a_nan_loss_in_epoch_two(*args):
        calls.append(1)
        stats = true_update(*args)
        return {**stats, "losses/policy_loss": math.nan} if len(calls) == 2 else stats

    monkeypatch.setattr(module, "trpo_update", update_with_a_nan_loss_in_epoch_two)
    with pytest.raises(SystemExit) as stop:
        module.main(
            module.Args(env_id="Walker2d-v4", num_envs=2, steps_per_epoch=200, total_timesteps=600, save_model=True)
        )
    message = str(stop.value.code)
    assert message.startswith(
        "trpo_lag.py: error: non-finite or invalid losses/policy_loss in epoch 2; last good checkpoint (step 200)"
    )
    assert torch.load(only_run_dir(tmp_path) / "checkpoint.pt", weights_only=False)["global_step"] == 200


@pytest.fixture(scope="module")
def walker_checkpoint(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("checkpoint")
    assert run("ppo_lag", [*WALKER, "--total-timesteps", "200", "--save-model"], cwd).returncode == 0
    return only_run_dir(cwd) / "checkpoint.pt"


def bad_checkpoint_cases(checkpoint: Path, tmp_path: Path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(checkpoint.read_bytes()[:1000])
    return {
        "missing file": ("ppo_lag", [*WALKER, "--resume", str(tmp_path / "nope.pt")], "cannot read"),
        "corrupt file": ("ppo_lag", [*WALKER, "--resume", str(corrupt)], "cannot read"),
        "another script": (
            "ppo_lag_shapo",
            [*WALKER, "--resume", str(checkpoint)],
            "is a checkpoint of ppo_lag.py, not of ppo_lag_shapo.py",
        ),
        "another task": (
            "ppo_lag",
            ["--resume", str(checkpoint), "--num-envs", "2", "--steps-per-epoch", "200"],
            "--env-id Walker2d-v4, not SafetyPointGoal1-v0",
        ),
        "other settings": (
            "ppo_lag",
            [*WALKER, "--resume", str(checkpoint), "--cost-limit", "10"],
            "--cost-limit 25.0, not 10.0",
        ),
        "zero save interval": ("ppo_lag", [*WALKER, "--save-every", "0"], "--save-every must be positive"),
    }


def test_bad_checkpoint_input_gets_one_line_and_writes_nothing(walker_checkpoint, tmp_path):
    for case, (name, flags, message) in bad_checkpoint_cases(walker_checkpoint, tmp_path).items():
        before = sorted(p for p in walker_checkpoint.parent.iterdir())
        result = run(name, flags, tmp_path)
        assert result.returncode != 0, case
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.stderr, (case, result.stderr)
        assert not (tmp_path / "runs").exists(), case
        assert sorted(p for p in walker_checkpoint.parent.iterdir()) == before, case


@pytest.mark.parametrize("name", ["ppo_lag_shapo", "trpo_lag_shapo"])
def test_non_finite_shapo_perturbation_stops_the_run_with_the_actor_restored(name, tmp_path, monkeypatch):
    """A NaN in the SHAPO solve of epoch 2 stops the run with one line naming the perturbation, after the last
    good checkpoint; the actor is left as it was before that update, not perturbed."""
    module = load(name)
    monkeypatch.chdir(tmp_path)
    solver = "damped_fisher_solve_fn" if name.startswith("ppo") else "conjugate_gradient"
    true_solver, actors, epochs = getattr(module, solver), [], []
    true_update = module.ppo_update if name.startswith("ppo") else module.trpo_update

    def update_recording_the_actor(parts_or_actor, *args):
        actor = getattr(parts_or_actor, "actor", parts_or_actor)  # ppo_update takes the agent, trpo_update the actor
        actors.append(actor)
        epochs.append(copy.deepcopy(actor.state_dict()))
        return true_update(parts_or_actor, *args)

    def solver_with_a_nan_in_epoch_two(*args, **kwargs):
        solve = true_solver(*args, **kwargs)
        if len(epochs) < 2:
            return solve
        if name.startswith("ppo"):
            return lambda g: tuple(value * math.nan for value in solve(g))
        return solve * math.nan

    monkeypatch.setattr(module, solver, solver_with_a_nan_in_epoch_two)
    monkeypatch.setattr(module, "ppo_update" if name.startswith("ppo") else "trpo_update", update_recording_the_actor)
    with pytest.raises(SystemExit) as stop:
        module.main(
            module.Args(
                env_id="Walker2d-v4",
                num_envs=2,
                steps_per_epoch=200,
                total_timesteps=600,
                save_model=True,
                **({"minibatch_size": 100, "update_epochs": 2} if name.startswith("ppo") else {}),
            )
        )
    message = str(stop.value.code)
    assert message.startswith(f"{name}.py: error: non-finite or invalid ") and "\n" not in message
    assert "in epoch 2; last good checkpoint (step 200)" in message
    assert "SHAPO perturbation" in message
    for key, value in actors[-1].state_dict().items():
        assert torch.equal(value, epochs[-1][key]), key


@pytest.mark.parametrize(
    "name, flags",
    [
        ("ppo_lag_shapo", ["--learning-rate", "1e30"]),
        ("trpo_lag", ["--lambda-lr", "1e308"]),
        ("ppo_lag", ["--learning-rate", "1e30", "--max-grad-norm", "1e30"]),
    ],
)
def test_absurd_finite_flags_end_in_one_line_not_a_traceback(name, flags, tmp_path):
    result = run(name, [*WALKER, "--total-timesteps", "600", "--cost-limit", "0", *flags], tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1 and lines[0].startswith(f"{name}.py: error: non-finite or invalid "), result.stderr


def test_evaluate_a_checkpoint_and_record_videos(tmp_path):
    """evaluate.py rebuilds the policy of the script named in the checkpoint (here with the PID multiplier, which
    evaluation does not need), runs its episodes from the evaluation seeds (the same twice: the same numbers), logs
    eval/ at the checkpoint's step and writes one MP4 with frames per episode."""
    assert (
        run(
            "trpo_lag", [*WALKER, "--total-timesteps", "200", "--save-model", "--lagrangian", "pid"], tmp_path
        ).returncode
        == 0
    )
    checkpoint = only_run_dir(tmp_path) / "checkpoint.pt"
    evaluate = [
        sys.executable,
        str(ROOT / "evaluate.py"),
        str(checkpoint),
        "--episodes",
        "2",
        "--max-episode-steps",
        "15",
    ]
    results = [
        subprocess.run([*evaluate, *extra], capture_output=True, text=True, timeout=600)
        for extra in (["--capture-video"], [])
    ]
    assert all(result.returncode == 0 for result in results), results[0].stderr
    assert results[0].stdout.startswith("Walker2d-v4 trpo_lag.py seed 0 step 200: 2 episodes | return ")
    assert results[0].stdout == results[1].stdout
    videos = sorted((checkpoint.parent / "videos" / "step200").glob("*.mp4"))
    assert len(videos) == 2 and all(imageio.get_reader(video).count_frames() >= 2 for video in videos)
    assert [step for step, _ in scalars(checkpoint.parent)["eval/mean_return"]] == [200, 200]
    bad = subprocess.run([*evaluate[:2], str(tmp_path / "nope.pt")], capture_output=True, text=True, timeout=600)
    assert (
        bad.returncode != 0
        and bad.stderr.strip().startswith("evaluate.py: error: cannot read")
        and "Traceback" not in bad.stderr
    )


def test_evaluation_seeds_are_apart_from_every_training_env():
    module = load("ppo_lag")
    evaluation = {s for seed in range(10) for s in module.draw_seeds(seed, 20)}
    training = {s for seed in range(10) for epoch in range(50) for s in module.draw_seeds(seed, 6, epoch)}
    assert len(evaluation) == 200 and not evaluation & training


def test_a_checkpoint_of_another_format_gets_one_line(tmp_path):
    """A checkpoint written before the format's last change (no version: format 1) is refused by name."""
    module = load("ppo_lag")
    path = tmp_path / "checkpoint.pt"
    torch.save({"script": "ppo_lag.py", "args": vars(module.Args()), "actor": {}}, path)
    with pytest.raises(ValueError, match=f"checkpoint format 1, this ppo_lag.py reads {module.CHECKPOINT_VERSION}"):
        module.load_checkpoint(str(path), module.Args(resume=str(path)))
