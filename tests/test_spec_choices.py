"""docs/spec.md §2, "J_c in the first and in empty epochs": the numbers it quotes for the first-epoch
choice, recomputed here by an independent NumPy version of the two multipliers and checked against each
script's own Lagrange and PIDLagrange."""

import re

import numpy as np
import pytest

from conftest import ROOT, SCRIPTS, TRPO_SCRIPTS, load

COST_LIMIT, INIT = 25.0, 0.001
FALLING = [60.0 - 3.0 * k for k in range(12)]  # J_c = 60, 57, ..., 27: a run brought down towards the limit
FIRST_ZERO = [0.0] + FALLING[1:]  # SafePO's logger and the release: 0 until the logger's first dump


def adam_reference(costs, lr=0.035, beta1=0.9, beta2=0.999, eps=1e-8):
    """λ after Adam steps on the loss -λ (J_c - d), clamped at 0 after each step (torch.optim.Adam's defaults)."""
    lam, m, v = INIT, 0.0, 0.0
    for t, cost in enumerate(costs, 1):
        grad = -(cost - COST_LIMIT)
        m, v = beta1 * m + (1 - beta1) * grad, beta2 * v + (1 - beta2) * grad**2
        lam = max(0.0, lam - lr * (m / (1 - beta1**t)) / (np.sqrt(v / (1 - beta2**t)) + eps))
    return lam


def pid_reference(costs, kp=0.1, ki=0.01, kd=0.01, delay=10, alpha=0.95):
    """λ of the PID multiplier as spec §8 writes it, with C_-10 read from a list of past C values."""
    integral, p, c, past, lam = INIT, 0.0, 0.0, [], INIT
    for cost in costs:
        integral = max(0.0, integral + ki * (cost - COST_LIMIT))
        p = alpha * p + (1 - alpha) * (cost - COST_LIMIT)
        c_before = past[-delay] if len(past) >= delay else 0.0  # C of `delay` updates earlier, 0 until one exists
        c = alpha * c + (1 - alpha) * cost
        lam = max(0.0, kp * p + integral + kd * max(0.0, c - c_before))
        past.append(c)
    return lam


def quoted_numbers():
    text = " ".join((ROOT / "docs" / "spec.md").read_text().split())
    assert "J_c = 60, 57, 54, …, 27 over 12 epochs (d = 25" in text
    match = re.search(r"λ = ([\d.]+) \(Adam\) and ([\d.]+) \(PID\), against ([\d.]+) and ([\d.]+)", text)
    assert match, "spec §2 no longer quotes the first-epoch comparison"
    return [float(value) for value in match.groups()]


def test_spec_quotes_what_the_reference_multipliers_give():
    adam_ours, pid_ours, adam_zero, pid_zero = quoted_numbers()
    assert adam_reference(FALLING) == pytest.approx(adam_ours, abs=5e-4)
    assert adam_reference(FIRST_ZERO) == pytest.approx(adam_zero, abs=5e-4)
    assert pid_reference(FALLING) == pytest.approx(pid_ours, abs=5e-4)
    assert pid_reference(FIRST_ZERO) == pytest.approx(pid_zero, abs=5e-4)
    assert adam_ours > adam_zero and pid_ours > pid_zero  # the direction the spec states


@pytest.mark.parametrize("costs", [FALLING, FIRST_ZERO], ids=["real first epoch", "first epoch 0"])
@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_multipliers_match_the_reference(script, costs):
    module = load(script)
    adam = module.Lagrange(COST_LIMIT, INIT, 0.035)
    for cost in costs:
        adam.update(cost)
    assert adam.multiplier == pytest.approx(adam_reference(costs), rel=1e-5)
    if script in TRPO_SCRIPTS:
        pid = module.PIDLagrange(COST_LIMIT, INIT, 0.1, 0.01, 0.01)
        for cost in costs:
            pid.update(cost)
        assert pid.multiplier == pytest.approx(pid_reference(costs), rel=1e-9)
