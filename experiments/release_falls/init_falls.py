"""Do the release's initial actors fall as often as ours? Paired by seed s: the same env seeds and the
same action-noise stream, only the initial weights differ (ours: trpo_lag.Actor after torch.manual_seed(s);
the release's: the actor of ActorVCritic after torch.manual_seed(s), built as its trpo_pid.py builds it).
Each actor runs <steps> steps of 5 Walker2d-v4 envs from a fresh reset; prints the mean falls and the
mean paired difference with its standard error and a paired t-test (scipy).

Usage, from the release's venv: RELEASE_SRC=<release source tree> python init_falls.py <first seed> <end seed> <steps>
"""

import os
import sys
from functools import partial
from types import SimpleNamespace

import numpy as np
import torch
from scipy.stats import ttest_rel

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
sys.path.insert(0, os.environ["RELEASE_SRC"])
from safepo.common.model import ActorVCritic  # noqa: E402

import trpo_lag  # noqa: E402

if __name__ == "__main__":
    first, end, steps = map(int, sys.argv[1:4])
    torch.set_num_threads(1)
    envs = trpo_lag.safety_gymnasium.vector.SafetySyncVectorEnv([partial(trpo_lag.make_env, "Walker2d-v4")] * 5)
    falls = {"ours": [], "release": []}
    for seed in range(first, end):
        torch.manual_seed(seed)
        ours = trpo_lag.Actor(17, 6)
        torch.manual_seed(seed)
        release = ActorVCritic(17, 6).actor
        for name, actor in (("ours", ours), ("release", release)):
            normalizer = trpo_lag.ObsNormalizer(shape=(17,))
            obs, _ = envs.reset(seed=1000 + 5 * seed)
            normalizer.update(obs)
            torch.manual_seed(12345 + seed)
            agent, stop = SimpleNamespace(actor=actor, normalizer=normalizer), SimpleNamespace(signal=None)
            data, _, _ = trpo_lag.rollout(envs, agent, normalizer(obs), np.zeros((3, 5)), steps, stop)
            falls[name].append(float(data["terminated"].sum()))
    o, r = np.array(falls["ours"]), np.array(falls["release"])
    print(
        f"seeds {first}-{end - 1}, {steps * 5} steps each: falls ours {o.mean():.2f}, release {r.mean():.2f}; "
        f"paired difference {np.mean(o - r):+.2f} ± {np.std(o - r, ddof=1) / np.sqrt(len(o)):.2f} (standard error), "
        f"paired t-test p = {ttest_rel(o, r).pvalue:.2f}"
    )
