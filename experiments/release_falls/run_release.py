"""Run the SHAPO release's safepo/single_agent/trpo_pid.py unchanged on Python 3.11.

Usage: RELEASE_SRC=<release source tree> python run_release.py <falls_csv> -- <arguments of trpo_pid.py>
(experiments/release_falls/run.sh runs it; the release needs wandb and joblib besides our requirements)

What this runner adds around the release script (none of it touches the algorithm):
1. The safety_gymnasium 1.0.0 import shim of trpo_lag.py, by importing trpo_lag, so that
   `import safety_gymnasium` works on Python 3.11; its submodules then import without it.
2. torch.set_num_threads is pinned to 1 (the release calls torch.set_num_threads(4); this
   machine's CPU is shared). Thread count does not change the algorithm.
3. An observation-only tally of every finished episode: gymnasium's AsyncVectorEnv, as seen
   by safepo.common.env, is replaced by a subclass whose step() returns exactly what the
   parent returns and appends one CSV row per finished episode
   (epoch, vec_step, env, return, length, terminated, truncated). With Walker2d-v4 the
   release's cost of a step is `terminated` (trpo_pid.py: `cost = terminated` when info has
   no "cost"), so falls = number of rows with terminated == 1.
4. The release's own cumulative cost (the last value of "Metrics/TotalCost" stored in an
   epoch; its progress.csv logs the *mean* of these stored values instead) is appended to
   <falls_csv>.release_totalcost.csv at each dump_tabular, as a cross-check of 3.
"""

import csv
import os
import runpy
import sys

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402

# --- 1. the import shim: importing trpo_lag imports safety_gymnasium through it ---
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
# --- 2. one torch thread ---
import torch  # noqa: E402

import trpo_lag  # noqa: E402,F401

torch.set_num_threads(1)
torch.set_num_threads = lambda n: None  # the release's set_num_threads(4) becomes a no-op

# --- paths: the release is run from its source tree ---
SRC = os.environ["RELEASE_SRC"]
SCRIPT = os.path.join(SRC, "safepo/single_agent/trpo_pid.py")
sys.path.insert(0, os.path.join(SRC, "safepo/single_agent"))  # for `from shapo import *`
sys.path.insert(0, SRC)

falls_csv = sys.argv[1]
assert sys.argv[2] == "--"
script_args = sys.argv[3:]

import safepo.common.env as sp_env  # noqa: E402
from gymnasium.vector.async_vector_env import AsyncVectorEnv  # noqa: E402
from safepo.common.logger import EpochLogger  # noqa: E402


def _arg(name, default):
    return type(default)(script_args[script_args.index(name) + 1]) if name in script_args else default


NUM_ENVS = _arg("--num-envs", 5)
STEPS_PER_EPOCH = _arg("--steps-per-epoch", 20000)
LOCAL_STEPS = STEPS_PER_EPOCH // NUM_ENVS

# --- 3. observation-only episode tally ---
_f = open(falls_csv, "w", newline="", buffering=1)
_w = csv.writer(_f)
_w.writerow(["epoch", "vec_step", "env", "return", "length", "terminated", "truncated"])


class CountingAsyncVectorEnv(AsyncVectorEnv):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self._tally_step = 0
        self._ret = np.zeros(self.num_envs)
        self._len = np.zeros(self.num_envs, dtype=int)

    def step(self, actions):
        out = super().step(actions)
        _, rew, term, trunc, _ = out
        epoch = self._tally_step // LOCAL_STEPS + 1
        self._ret += rew
        self._len += 1
        for i in range(self.num_envs):
            if term[i] or trunc[i]:
                _w.writerow(
                    [
                        epoch,
                        self._tally_step,
                        i,
                        float(self._ret[i]),
                        int(self._len[i]),
                        int(bool(term[i])),
                        int(bool(trunc[i])),
                    ]
                )
                self._ret[i] = 0.0
                self._len[i] = 0
        self._tally_step += 1
        return out


sp_env.AsyncVectorEnv = CountingAsyncVectorEnv

# --- 4. the release's own cumulative cost, exact value at each epoch's dump ---
_tc_f = open(falls_csv + ".release_totalcost.csv", "w", newline="", buffering=1)
_tc_w = csv.writer(_tc_f)
_tc_w.writerow(["epoch", "total_cost_last", "total_cost_logged_mean", "lambda"])
_orig_store = EpochLogger.store
_orig_dump = EpochLogger.dump_tabular
_state = {"last_tc": None}


def _store(self, add_value=False, **kwargs):
    if "Metrics/TotalCost" in kwargs:
        _state["last_tc"] = float(kwargs["Metrics/TotalCost"])
    return _orig_store(self, add_value=add_value, **kwargs)


def _dump(self):
    row = self.log_current_row
    _tc_w.writerow(
        [row.get("Train/Epoch"), _state["last_tc"], row.get("Metrics/TotalCost"), row.get("Train/LagragianMultiplier")]
    )
    return _orig_dump(self)


EpochLogger.store = _store
EpochLogger.dump_tabular = _dump

# --- 5. wandb (WANDB_MODE=disabled): the release saves policy.pt into wandb.run.dir every epoch;
# in disabled mode that folder is not created, so create it right after wandb.init ---
import wandb  # noqa: E402

_orig_init = wandb.init


def _init(*a, **k):
    run = _orig_init(*a, **k)
    os.makedirs(run.dir, exist_ok=True)
    return run


wandb.init = _init

sys.argv = [SCRIPT] + script_args
runpy.run_path(SCRIPT, run_name="__main__")
