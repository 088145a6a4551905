"""The fast learner keeps the algorithm's numbers, and the speed flags work: the minibatch loops against a plain
re-implementation of the same steps (three Adams, one backward, one clip, as the update was first written),
--compile against the eager update, the device of every tensor that enters an update (--cuda), the envs in
subprocesses (--async-envs) against the envs in this process, and a stop that abandons an update under way."""

import copy
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import ROOT, load

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
RUNNING = SimpleNamespace(signal=None)


def ppo_agent_and_batch(module, seed=0, rows=200, obs_dim=5, act_dim=2, **flags):
    torch.manual_seed(seed)
    agent = module.make_agent(obs_dim, act_dim, module.Args(**flags), torch.device("cpu"))
    obs = torch.randn(rows, obs_dim)
    with torch.no_grad():
        dist = agent.actor(obs)
        act = dist.sample()
    batch = {
        "obs": obs,
        "act": act,
        "logp": dist.log_prob(act).sum(-1),
        "adv": torch.randn(rows),
        "target_reward": torch.randn(rows),
        "target_cost": torch.randn(rows),
    }
    return agent, batch


def flat(*modules):
    return torch.cat([torch.nn.utils.parameters_to_vector(m.parameters()).detach() for m in modules])


def test_ppo_update_is_bit_for_bit_the_plain_minibatch_loop():
    """ppo_update (one Adam with two groups, foreach, losses kept as tensors) against the loop written plainly:
    an Adam per network, the summed loss, one clip over all parameters; the same permutations. Equal bit for bit."""
    module = load("ppo_lag")
    args = module.Args(update_epochs=3, minibatch_size=32, target_kl=1e9, learning_rate=1e-3, critic_lr=2e-3)
    agent, batch = ppo_agent_and_batch(module, learning_rate=1e-3, critic_lr=2e-3)
    plain = copy.deepcopy(agent)
    torch.manual_seed(1)
    stats = module.ppo_update(agent, batch, args, RUNNING)

    networks = (plain.actor, plain.reward_critic, plain.cost_critic)
    optimizers = [
        torch.optim.Adam(net.parameters(), lr=lr, foreach=False) for net, lr in zip(networks, (1e-3, 2e-3, 2e-3))
    ]
    params = [p for net in networks for p in net.parameters()]
    policy_losses = []
    torch.manual_seed(1)
    for _ in range(3):
        for mb in torch.randperm(len(batch["obs"])).split(32):
            for optimizer in optimizers:
                optimizer.zero_grad()
            obs = batch["obs"][mb]
            reward = ((plain.reward_critic(obs).squeeze(-1) - batch["target_reward"][mb]) ** 2).mean()
            cost = ((plain.cost_critic(obs).squeeze(-1) - batch["target_cost"][mb]) ** 2).mean()
            l2 = 1e-3 * sum((p**2).sum() for net in networks[1:] for p in net.parameters())
            ratio = torch.exp(plain.actor(obs).log_prob(batch["act"][mb]).sum(-1) - batch["logp"][mb])
            adv = batch["adv"][mb]
            surrogate = torch.min(ratio * adv, ratio.clamp(0.8, 1.2) * adv).mean()
            (reward + cost + l2 - surrogate).backward()
            torch.nn.utils.clip_grad_norm_(params, 40.0)
            for optimizer in optimizers:
                optimizer.step()
            policy_losses.append(-surrogate.item())
    assert torch.equal(flat(agent.actor, agent.reward_critic, agent.cost_critic), flat(*networks))
    assert stats["losses/policy_loss"] == pytest.approx(np.mean(policy_losses), rel=1e-6)


@pytest.mark.parametrize("name", ("trpo_lag", "trpo_lag_shapo"))
def test_critic_updates_are_bit_for_bit_two_adams_clipped_one_by_one(name):
    """update_critics (one Adam for both critics) against an Adam per critic, each critic clipped on its own."""
    module = load(name)
    args = module.Args(critic_update_epochs=2, critic_minibatch_size=64)
    agent, batch = ppo_agent_and_batch(module)
    plain = copy.deepcopy(agent)
    torch.manual_seed(3)
    module.update_critics(agent, batch, args, RUNNING)
    optimizers = {
        name: torch.optim.Adam(getattr(plain, f"{name}_critic").parameters(), lr=args.critic_lr, foreach=False)
        for name in ("reward", "cost")
    }
    torch.manual_seed(3)
    for _ in range(2):
        for mb in torch.randperm(len(batch["obs"])).split(64):
            for name, optimizer in optimizers.items():
                critic = getattr(plain, f"{name}_critic")
                optimizer.zero_grad()
                loss = ((critic(batch["obs"][mb]).squeeze(-1) - batch[f"target_{name}"][mb]) ** 2).mean()
                (loss + 1e-3 * sum((p**2).sum() for p in critic.parameters())).backward()
                torch.nn.utils.clip_grad_norm_(critic.parameters(), args.max_grad_norm)
                optimizer.step()
    assert torch.equal(flat(agent.reward_critic, agent.cost_critic), flat(plain.reward_critic, plain.cost_critic))


def test_compiled_ppo_update_matches_the_eager_one():
    """--compile (the whole minibatch step traced, Adam's arithmetic fused) takes the same steps as the eager
    update up to rounding: after 2 passes of 7 minibatches every parameter agrees within 1e-5."""
    module = load("ppo_lag")
    args = module.Args(update_epochs=2, minibatch_size=32, target_kl=1e9)
    eager, batch = ppo_agent_and_batch(module)
    compiled, _ = ppo_agent_and_batch(module, compile=True)
    torch.manual_seed(1)
    eager_stats = module.ppo_update(eager, batch, args, RUNNING)
    torch.manual_seed(1)
    compiled_stats = module.ppo_update(compiled, batch, module.Args(**{**vars(args), "compile": True}), RUNNING)
    names = ("actor", "reward_critic", "cost_critic")
    before = flat(*(getattr(ppo_agent_and_batch(module)[0], n) for n in names))
    after_eager, after_compiled = (
        flat(*(getattr(eager, n) for n in names)),
        flat(*(getattr(compiled, n) for n in names)),
    )
    assert (after_eager - before).abs().max() > 1e-3  # the update moved the networks
    torch.testing.assert_close(after_compiled, after_eager, rtol=0, atol=1e-5)
    assert compiled_stats["losses/policy_loss"] == pytest.approx(eager_stats["losses/policy_loss"], rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ("ppo_lag_shapo", "trpo_lag_shapo"))
def test_every_tensor_entering_the_update_is_on_the_run_device(name, device, tmp_path, monkeypatch):
    """With --cuda the networks, their optimizer state and every batch tensor are on the GPU; without it, on the CPU.
    (On a machine without a GPU only the CPU case runs; --cuda there is a one-line error, see test_scripts.)"""
    module = load(name)
    monkeypatch.chdir(tmp_path)
    seen = []
    update_name = "ppo_update" if name.startswith("ppo") else "trpo_update"
    true_update = getattr(module, update_name)

    def recording_update(agent_or_actor, batch, *rest):
        seen.extend(value.device.type for value in batch.values())
        seen.extend(p.device.type for p in getattr(agent_or_actor, "actor", agent_or_actor).parameters())
        return true_update(agent_or_actor, batch, *rest)

    monkeypatch.setattr(module, update_name, recording_update)
    flags = {"update_epochs": 1} if name.startswith("ppo") else {"critic_update_epochs": 1}
    agent = module.main(
        module.Args(
            env_id="Walker2d-v4", num_envs=2, steps_per_epoch=100, total_timesteps=200, cuda=device == "cuda", **flags
        )
    )
    seen.extend(state.device.type for group in agent.optimizer.state.values() for state in group.values())
    assert len(seen) > 10 and set(seen) == {device}


def test_async_envs_give_the_same_data_as_the_envs_in_this_process(tmp_path, monkeypatch):
    """The same seeds through subprocess envs give the same metrics (the same rollouts and updates); a resumed
    run with --async-envs goes on from the checkpoint as the in-process one does."""
    module = load("trpo_lag")
    monkeypatch.chdir(tmp_path)
    settings = dict(
        env_id="SafetyPointGoal1-v0",
        num_envs=2,
        steps_per_epoch=200,
        max_episode_steps=60,
        critic_update_epochs=1,
        save_model=True,
    )
    logged = []
    for async_envs in (False, True):
        (tmp_path / str(async_envs)).mkdir()
        monkeypatch.chdir(tmp_path / str(async_envs))
        module.main(module.Args(**settings, total_timesteps=400, async_envs=async_envs))
        (run_dir,) = (tmp_path / str(async_envs) / "runs").iterdir()
        resume = module.Args(
            **settings, total_timesteps=600, async_envs=async_envs, resume=str(run_dir / "checkpoint.pt")
        )
        module.main(resume, module.load_checkpoint(resume.resume, resume))
        logged.append(torch.load(run_dir / "checkpoint.pt", weights_only=False))
    assert logged[0]["global_step"] == 600 and logged[0]["cumulative_cost"] == logged[1]["cumulative_cost"]
    assert torch.equal(logged[0]["actor"]["mean.0.weight"], logged[1]["actor"]["mean.0.weight"])
    np.testing.assert_array_equal(logged[0]["normalizer"]["mean"], logged[1]["normalizer"]["mean"])


def children(pid):
    """Pids of the live processes whose parent is `pid` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry))
    return found


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
@pytest.mark.parametrize("signum", (signal.SIGTERM, signal.SIGINT))
def test_a_stop_with_async_envs_leaves_no_child_process(signum, tmp_path):
    """Ctrl-C (sent to the whole process group, as a terminal does) or SIGTERM (to the run only): the run writes
    its checkpoint and exits 0, and the env subprocesses are gone."""
    flags = [
        "--env-id",
        "SafetyPointGoal1-v0",
        "--num-envs",
        "2",
        "--steps-per-epoch",
        "200",
        "--max-episode-steps",
        "60",
        "--total-timesteps",
        "100000",
        "--critic-update-epochs",
        "1",
        "--async-envs",
        "--save-model",
    ]
    process = subprocess.Popen(
        [sys.executable, "-u", str(ROOT / "trpo_lag.py"), *flags],
        cwd=tmp_path,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    for line in process.stdout:
        if line.startswith("epoch 2/"):
            break
    workers = children(process.pid)
    assert len(workers) >= 2
    if signum == signal.SIGINT:
        os.killpg(process.pid, signum)
    else:
        process.send_signal(signum)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0 and "Traceback" not in err, err
    assert f"stopped by {signal.Signals(signum).name}" in out
    time.sleep(1)
    assert not any(os.path.exists(f"/proc/{pid}") for pid in workers)


@pytest.mark.parametrize(
    "name, step_function",
    [
        ("ppo_lag", "ppo_step"),
        ("ppo_lag_shapo", "shapo_gradient"),
        ("trpo_lag", "critics_step"),
        ("trpo_lag_shapo", "critics_step"),
    ],
)
def test_a_stop_during_the_update_abandons_it_and_keeps_the_epoch_boundary(
    name, step_function, tmp_path, monkeypatch, capsys
):
    """SIGTERM arriving at the 3rd minibatch of the second epoch's update: the update ends at the next minibatch,
    the run writes the checkpoint of that epoch's start (epoch 1) and returns; no later minibatch runs."""
    module = load(name)
    monkeypatch.chdir(tmp_path)
    true_step, calls = getattr(module, step_function), []

    def step_that_signals(*args, **kwargs):
        calls.append(len(calls))
        if len(calls) == per_epoch + 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return true_step(*args, **kwargs)

    if name.startswith("ppo"):
        flags = {"update_epochs": 2, "minibatch_size": 50, "target_kl": 1e9}
    else:
        flags = {"critic_update_epochs": 2, "critic_minibatch_size": 50}
    per_epoch = 2 * 4  # 2 passes of 200 / 50 minibatches
    monkeypatch.setattr(module, step_function, step_that_signals)
    module.main(
        module.Args(
            env_id="Walker2d-v4", num_envs=2, steps_per_epoch=200, total_timesteps=1000, save_model=True, **flags
        )
    )
    out = capsys.readouterr().out
    (run_dir,) = (tmp_path / "runs").iterdir()
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert f"{name}.py: stopped by SIGTERM in epoch 2; last good checkpoint (step 200)" in out
    assert checkpoint["epoch"] == 1 and checkpoint["global_step"] == 200
    assert len(calls) == per_epoch + 3


def test_benchmark_measures_the_limit_the_scripts_and_the_minibatch_step(tmp_path):
    """benchmark.py on a tiny budget: a row for the limit and each script, and the SHAPO / PPO minibatch ratio."""
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmark.py"),
            "--env-ids",
            "Walker2d-v4",
            "--num-envs",
            "2",
            "--steps",
            "200",
            "--epochs",
            "1",
            "--scripts",
            "ppo_lag",
            "ppo_lag_shapo",
            "--passes",
            "1",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    rows = [line.split("|")[1].strip() for line in result.stdout.splitlines() if line.startswith("| ")]
    assert {"random actions (limit)", "ppo_lag", "ppo_lag_shapo", "eager"} <= set(rows)
    ratio = float(result.stdout.strip().splitlines()[-1].split("|")[-2])
    assert ratio > 1.0  # SHAPO's step does more than PPO's
