"""Sweep: run a grid scripts x env ids x seeds of the training scripts, in parallel.

    python sweep.py --scripts ppo_lag ppo_lag_shapo --env-ids SafetyPointGoal1-v0 Walker2d-v4 \
        --seeds 0 1 2 --out-dir sweeps/first --workers 4 --total-timesteps 1000000

Every flag the sweep does not know (here --total-timesteps 1000000) is passed through unchanged to
every run. Each run is one subprocess
    <python> <script>.py --env-id <env-id> --seed <seed> <pass-through flags...>
started with its working directory set to --out-dir, so its TensorBoard logs land in
<out-dir>/runs/<env-id>__<exp-name>__<seed>__<unix-time>/ (read them with plot.py --runs-dir
<out-dir>/runs). Its stdout and stderr go to <out-dir>/sweep_logs/<script>__<env-id>__<seed>.log.

Each run gets OMP_NUM_THREADS=MKL_NUM_THREADS=--threads-per-run (default 1): PyTorch's default of
one thread per core in every one of several parallel runs oversubscribes the CPU (a tiny run took
7x longer with 2 threads than with 1 on a busy 2-core machine).

One progress line is printed per finished run. A failing run does not stop the others; the sweep
exits with status 1 and a one-line summary on stderr if any run failed.

Backends:
  * local (default): a thread pool of --workers threads on this machine, each waiting on one
    subprocess at a time.
  * ray: the same runs as Ray tasks (`ray.remote`), at most --workers in flight; Ray is optional
    and imported only then. On a cluster (--ray-address auto) the repository, the Python of
    --python and --out-dir must exist at the same paths on every node (a shared file system).
"""

import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Literal, NamedTuple, Optional, Tuple

import tyro

ROOT = Path(__file__).resolve().parent
SCRIPTS = ("ppo_lag", "ppo_lag_shapo", "trpo_lag", "trpo_lag_shapo")
# flags the sweep sets itself for every run; passing them through would clash (and --exp-name
# shared by two scripts would make their run folders collide: use --exp-name-suffix)
RESERVED_FLAGS = ("--env-id", "--seed", "--exp-name")


@dataclass
class Args:
    """Run the grid scripts x env ids x seeds in parallel. Flags not listed here (e.g.
    --total-timesteps 400) are passed through unchanged to every run."""

    scripts: Tuple[str, ...] = SCRIPTS
    """training scripts to run, by name (with or without .py): ppo_lag, ppo_lag_shapo, trpo_lag, trpo_lag_shapo"""
    env_ids: Tuple[str, ...] = ("SafetyPointGoal1-v0",)
    """environment ids, each passed as --env-id"""
    seeds: Tuple[int, ...] = (0, 1, 2)
    """seeds, each passed as --seed"""
    out_dir: str = "."
    """working directory of every run: the runs land in <out-dir>/runs/, the logs in <out-dir>/sweep_logs/"""
    workers: int = os.cpu_count() or 1
    """runs at the same time (local: subprocesses on this machine; ray: tasks in flight)"""
    threads_per_run: int = 1
    """OMP_NUM_THREADS / MKL_NUM_THREADS of each run (PyTorch's CPU threads); 0: inherit this process's settings"""
    backend: Literal["local", "ray"] = "local"
    """'local' runs subprocesses from a thread pool; 'ray' runs each subprocess in a Ray task (needs ray)"""
    ray_address: Optional[str] = None
    """address for ray.init ('auto' joins a running cluster); None starts a local Ray instance"""
    python: str = sys.executable
    """Python interpreter that runs the scripts"""
    exp_name_suffix: str = ""
    """if set, each run is named <script>_<suffix> (e.g. pid, with --lagrangian pid passed through),
    so that plot.py shows it apart from the same script's default runs"""


class Job(NamedTuple):
    """One cell of the grid."""

    script: str
    env_id: str
    seed: int


class Result(NamedTuple):
    """How one run ended: exit code (127 if it could not start), wall-clock seconds, last stderr line."""

    returncode: int
    seconds: float
    last_error: str


def check_args(args: Args, extra: List[str]) -> None:
    """Raise ValueError with a one-line message for the first bad input."""
    unknown = [name for name in args.scripts if name.removesuffix(".py") not in SCRIPTS]
    if unknown:
        raise ValueError(f"unknown script {unknown[0]!r}; choose from {', '.join(SCRIPTS)}")
    for flag, values in (("--scripts", args.scripts), ("--env-ids", args.env_ids), ("--seeds", args.seeds)):
        if not values:
            raise ValueError(f"{flag} needs at least one value")
        if len(set(values)) != len(values):
            raise ValueError(f"{flag} has duplicates: {' '.join(map(str, values))}")
    if args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    if args.threads_per_run < 0:
        raise ValueError(f"--threads-per-run must be >= 0, got {args.threads_per_run}")
    for flag in extra:
        name = flag.split("=", 1)[0].replace("_", "-")
        if name in RESERVED_FLAGS:
            raise ValueError(f"{name} is set by the sweep for each run and cannot be passed through")
    if args.exp_name_suffix and not re.fullmatch(r"[A-Za-z0-9-]+", args.exp_name_suffix):
        raise ValueError(f"--exp-name-suffix takes letters, digits and '-' only, got {args.exp_name_suffix!r}")
    if extra and not extra[0].startswith("-"):
        raise ValueError(f"unexpected argument {extra[0]!r} (pass-through flags must start with --)")


def make_jobs(args: Args) -> List[Job]:
    """The grid in the order scripts x env ids x seeds (seed varies fastest)."""
    return [
        Job(script.removesuffix(".py"), env_id, seed)
        for script in args.scripts
        for env_id in args.env_ids
        for seed in args.seeds
    ]


def exp_name(job: Job, suffix: str) -> str:
    """The run's experiment name: its script, plus `_suffix` if one is given."""
    return f"{job.script}_{suffix}" if suffix else job.script


def command(job: Job, python: str, extra: List[str], suffix: str = "") -> List[str]:
    name = ["--exp-name", exp_name(job, suffix)] if suffix else []
    return [python, str(ROOT / f"{job.script}.py"), "--env-id", job.env_id, "--seed", str(job.seed), *name, *extra]


def run_one(cmd: List[str], cwd: str, env: dict, log_path: str) -> Result:
    """Run one training subprocess to the end, its stdout and stderr into log_path."""
    start = time.time()
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
        returncode, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    except OSError as error:  # e.g. --python does not exist
        returncode, stdout, stderr = 127, "", f"could not start: {error}"
    seconds = time.time() - start
    with open(log_path, "w") as log:
        log.write(f"$ {' '.join(cmd)}\n{stdout}\n--- stderr ---\n{stderr}")
    # the last non-empty stderr line, without tyro's box-drawing frame
    lines = [line.strip("│╭╮╰╯─ ") for line in stderr.splitlines()]
    lines = [line for line in lines if line and not line.startswith("For full helptext")]
    return Result(returncode, seconds, lines[-1] if lines else "")


def run_local(jobs: List[Job], launch: dict, workers: int) -> Iterator[Tuple[Job, Result]]:
    """Yield (job, result) as the runs finish, at most `workers` at a time."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(run_one, **launch[job]): job for job in jobs}
        for future in as_completed(futures):
            yield futures[future], future.result()


def run_ray(jobs: List[Job], launch: dict, workers: int, address: Optional[str], threads: int):
    """Yield (job, result) as the runs finish, each run a Ray task, at most `workers` in flight."""
    import ray  # optional dependency; main() checked that it imports

    ray.init(address=address, log_to_driver=False)
    task = ray.remote(num_cpus=threads)(run_one)
    pending, in_flight = list(jobs), {}
    try:
        while pending or in_flight:
            while pending and len(in_flight) < workers:
                job = pending.pop(0)
                in_flight[task.remote(**launch[job])] = job
            (done,), _ = ray.wait(list(in_flight), num_returns=1)
            yield in_flight.pop(done), ray.get(done)
    finally:
        ray.shutdown()


def main(args: Args, extra: List[str]) -> int:
    """Run the sweep; return the exit status (0: all runs succeeded, 1: some failed)."""
    jobs = make_jobs(args)
    out_dir = Path(args.out_dir).resolve()
    log_dir = out_dir / "sweep_logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    threads = args.threads_per_run
    env = dict(os.environ)
    if threads:  # several runs each with as many threads as cores oversubscribe the CPU badly
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    launch = {
        job: dict(
            cmd=command(job, args.python, extra, args.exp_name_suffix),
            cwd=str(out_dir),
            env=env,
            log_path=str(log_dir / f"{exp_name(job, args.exp_name_suffix)}__{job.env_id}__{job.seed}.log"),
        )
        for job in jobs
    }
    print(
        f"sweep: {len(jobs)} runs ({len(args.scripts)} scripts x {len(args.env_ids)} envs x {len(args.seeds)} seeds), "
        f"{args.workers} workers ({args.backend}), {threads or 'inherited'} threads each, "
        f"runs in {out_dir / 'runs'}",
        flush=True,
    )
    if args.backend == "ray":
        finished = run_ray(jobs, launch, args.workers, args.ray_address, max(threads, 1))
    else:
        finished = run_local(jobs, launch, args.workers)

    start, failed = time.time(), []
    for k, (job, result) in enumerate(finished, start=1):
        line = (
            f"[{k}/{len(jobs)}] {job.script} {job.env_id} seed {job.seed}: "
            f"exit {result.returncode} in {result.seconds:.1f} s"
        )
        if result.returncode != 0:
            failed.append(job)
            line += f" | {result.last_error}"
        print(line, flush=True)

    elapsed = time.time() - start
    if failed:
        first = failed[0]
        print(
            f"sweep.py: error: {len(failed)} of {len(jobs)} runs failed (first: {first.script} {first.env_id} "
            f"seed {first.seed}); logs in {log_dir}",
            file=sys.stderr,
        )
        return 1
    print(f"sweep: all {len(jobs)} runs succeeded in {elapsed:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    cli_args, extra_flags = tyro.cli(Args, return_unknown_args=True)
    try:
        check_args(cli_args, extra_flags)
    except ValueError as error:
        sys.exit(f"sweep.py: error: {error}")
    if cli_args.backend == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            sys.exit("sweep.py: error: --backend ray needs the optional package ray (pip install ray), not installed")
    sys.exit(main(cli_args, extra_flags))
