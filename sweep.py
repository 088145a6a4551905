"""Sweep: run a grid scripts x env ids x seeds [x parameter values] of the training scripts, in parallel,
in slices if need be.

    python sweep.py --scripts ppo_lag ppo_lag_shapo --env-ids SafetyPointGoal1-v0 Walker2d-v4 \
        --seeds 0 1 2 --out-dir sweeps/first --workers 4 --total-timesteps 1000000

Every flag the sweep does not know (here --total-timesteps 1000000) is passed through unchanged to
every run. Each run is one subprocess
    <python> <script>.py --env-id <env-id> --seed <seed> [--exp-name <exp-name>] <pass-through flags...>
        [<grid flags...>] --save-model [--resume <checkpoint>]
started with its working directory set to --out-dir, so its TensorBoard logs and its checkpoint.pt
land in <out-dir>/runs/<env-id>__<exp-name>__<seed>__<unix-time>/ (read them with plot.py --runs-dir
<out-dir>/runs). The exp-name is the script's name, or <script>_<suffix> with --exp-name-suffix. The
run's stdout, then its stderr, are appended to <out-dir>/sweep_logs/<exp-name>__<env-id>__<seed>.log.

Parameter grids: --grid delta-down=0,1e-5,1e-4 critic-sam-rho=0,0.05 also runs every combination of
these values of the scripts' flags (named without their leading dashes): here 3 x 2 grid points for
each script, env id and seed, each run given e.g. --delta-down 1e-5 --critic-sam-rho 0.05. A grid
point's exp-name is the one above followed by -<flag>=<value> for each grid flag in the order given,
the flag's dashes written as underscores and the value as written on the command line:
    trpo_lag_shapo-delta_down=1e-5-critic_sam_rho=0.05     (with --exp-name-suffix pid: trpo_lag_shapo_pid-...)
Values take letters, digits, '.', '+' and '-' only, so the name holds no '__' (the separator of the
run folder's name) and splits back unambiguously: a setting starts at each '-' followed by a
lowercase flag name and '=' (split_exp_name; plot.py reads the values back with it). A grid flag
must be a flag of every script run, and may be neither passed through nor one the sweep sets itself.

Each run gets OMP_NUM_THREADS=MKL_NUM_THREADS=--threads-per-run (default 1): PyTorch's default of
one thread per core in every one of several parallel runs oversubscribes the CPU (a tiny run took
7x longer with 2 threads than with 1 on a busy 2-core machine).

Skip, resume, stop: the same command, run again, goes on where the last one ended, so a grid can be
run in slices (several sittings, preemptible nodes, `timeout 2h python sweep.py ...` on a shared machine).
  * Before it starts anything, the sweep looks for each run's folders in <out-dir>/runs/ and takes
    the newest one holding a checkpoint.pt. If that checkpoint's global_step has reached the budget
    (--total-timesteps as passed through, else the script's default, rounded down to whole epochs of
    the checkpoint's --steps-per-epoch) the run is skipped; otherwise it is started with --resume
    <checkpoint> and goes on in that folder. The checkpoints are read by --python in one subprocess
    (the sweep itself does without PyTorch). Only the steps are compared: a finished run is skipped
    whatever its other flags, and an unfinished one whose flags other than --total-timesteps and
    --save-every differ fails with the script's own --resume error; use a new --out-dir for other
    settings.
  * A run without any folder holding a checkpoint starts fresh in a new folder. Folders without a
    checkpoint (a run killed before its first one, or a run made without --save-model, e.g. by an
    earlier sweep.py) and older folders of a run are left as they are, never removed: the sweep cannot
    tell a stale one from finished results. It names their number in one warning on stderr, as
    plot.py reads every folder as a run of its own: remove the stale ones before plotting.
  * Pass --save-every N through to bound what a run killed without warning (SIGKILL, power loss)
    loses: the epochs since its last checkpoint (the scripts write one every 10 epochs by default).
  * Ctrl-C or SIGTERM to the sweep stops it: every running run gets SIGTERM, finishes its current
    environment step (or the policy update under way, then one step), writes the
    checkpoint of its last epoch boundary and exits 0. The runs live in sessions of their own, so the
    terminal's Ctrl-C reaches only the sweep, which forwards it. The sweep waits for them, starts no
    new run, prints one summary line on stderr and exits with 128 + the signal's number (130 for
    Ctrl-C, 143 for SIGTERM). If the sweep itself is killed (SIGKILL, SIGHUP of a closed terminal:
    use nohup or tmux), its runs go on on their own to their end.

One progress line is printed per run (skipped, or ended: fresh or resumed at step N, its exit status).
A failing run does not stop the others; the sweep exits with status 1 and a one-line summary on
stderr if any run failed.

Backends:
  * local (default): at most --workers subprocesses at a time on this machine.
  * ray: the same runs, each in a Ray task (`ray.remote`), at most --workers in flight; Ray is
    imported only then, and started only if some run is to start. Without --ray-address the sweep
    starts a local Ray instance of its own (never joins a running one): --workers x --threads-per-run
    CPUs, no dashboard, bound to 127.0.0.1; it shuts it down at the end, stopped or not. Skipping and
    resuming are decided by the driver as above. On a cluster (--ray-address auto) the repository,
    the Python of --python and --out-dir must exist at the same paths on every node (a shared file
    system). Stopping is best effort: the sweep cancels its tasks (ray.cancel), which raises
    KeyboardInterrupt in each task; a running task then sends SIGTERM to its run and returns once the
    run has written its checkpoint, and a task not yet started never starts. If the driver or a Ray
    worker dies, its runs go on on their own to their end, and a node lost on a cluster loses what
    its runs did since their last checkpoint.
"""

import ast
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Literal, NamedTuple, Optional, Tuple

import tyro

ROOT = Path(__file__).resolve().parent
SCRIPTS = ("ppo_lag", "ppo_lag_shapo", "trpo_lag", "trpo_lag_shapo")
# flags the sweep sets itself for every run; passing them through would clash (and --exp-name
# shared by two scripts would make their run folders collide: use --exp-name-suffix)
RESERVED_FLAGS = ("--env-id", "--seed", "--exp-name", "--save-model", "--no-save-model", "--resume")
GRID_ITEM = re.compile(r"(?P<flag>[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*)=(?P<values>[^=]+)")  # flag=v1,v2,...
GRID_VALUE = re.compile(r"[A-Za-z0-9.+-]+")
SETTING_START = re.compile(r"-(?=[a-z][a-z0-9_]*=)")  # where a -<flag>=<value> setting begins in an exp-name
POLL_SECONDS = 0.2
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # they stop the sweep: Ctrl-C, and e.g. a preempted node's notice
# run by --python: prints [global_step, steps_per_epoch] of each checkpoint named in argv (null if unreadable)
READ_CHECKPOINTS = """
import json, sys, torch
def steps(path):
    try:
        checkpoint = torch.load(path, weights_only=False)
        return [checkpoint["global_step"], checkpoint["args"]["steps_per_epoch"]]
    except Exception:
        return None
print(json.dumps([steps(path) for path in sys.argv[1:]]))
"""


@dataclass
class Args:
    """Run the grid scripts x env ids x seeds in parallel, skipping finished runs and resuming stopped
    ones. Flags not listed here (e.g. --total-timesteps 400) are passed through unchanged to every run."""

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
    """'local' runs subprocesses on this machine; 'ray' runs each subprocess in a Ray task (needs ray)"""
    ray_address: Optional[str] = None
    """address for ray.init ('auto' joins a running cluster); None starts a local Ray instance of the sweep's own"""
    python: str = sys.executable
    """Python interpreter that runs the scripts (and reads their checkpoints)"""
    exp_name_suffix: str = ""
    """if set, each run is named <script>_<suffix> (e.g. pid, with --lagrangian pid passed through),
    so that plot.py shows it apart from the same script's default runs"""
    grid: Tuple[str, ...] = ()
    """parameter grid, FLAG=V1,V2,... per flag of the scripts, without its dashes (e.g. delta-down=0,1e-4):
    every combination of the values is run; its values are written into the exp-name"""


class Job(NamedTuple):
    """One cell of the grid; settings: (flag without dashes, value) of its grid point, in --grid's order."""

    script: str
    env_id: str
    seed: int
    settings: Tuple[Tuple[str, str], ...] = ()


class Plan(NamedTuple):
    """What the sweep does with one cell: resume it from `checkpoint` (None: start it fresh) at
    `step` (None: unreadable, the script's --resume then says why), or skip it if `finished`."""

    checkpoint: Optional[Path]
    step: Optional[int]
    finished: bool


class Result(NamedTuple):
    """How one run ended: exit code (127 if it could not start), wall-clock seconds, last stderr line,
    whether the sweep stopped it."""

    returncode: int
    seconds: float
    last_error: str
    stopped: bool


def flag_value(flags: List[str], name: str) -> Optional[str]:
    """The value of `name` (e.g. --total-timesteps; also as --total_timesteps or --total-timesteps=N)
    among `flags`, the last one if given several times; "" if it has none, None if it is not given."""
    value = None
    for k, flag in enumerate(flags):
        key, equals, inline = flag.partition("=")
        if key.replace("_", "-") == name:
            value = inline if equals else "".join(flags[k + 1 : k + 2])
    return value


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
    total = flag_value(extra, "--total-timesteps")
    if total is not None and not (total.isdigit() and int(total) > 0):
        raise ValueError(f"--total-timesteps takes a positive whole number, got {total!r}")
    if args.exp_name_suffix and not re.fullmatch(r"[A-Za-z0-9-]+", args.exp_name_suffix):
        raise ValueError(f"--exp-name-suffix takes letters, digits and '-' only, got {args.exp_name_suffix!r}")
    if extra and not extra[0].startswith("-"):
        raise ValueError(f"unexpected argument {extra[0]!r} (pass-through flags must start with --)")
    for flag, values in parse_grid(args.grid):
        for script in args.scripts:
            if flag.replace("-", "_") not in script_fields(script.removesuffix(".py")):
                raise ValueError(f"--grid: --{flag} is not a flag of {script.removesuffix('.py')}")
        if f"--{flag}" in RESERVED_FLAGS:
            raise ValueError(f"--{flag} is set by the sweep for each run and cannot be in --grid")
        if flag_value(extra, f"--{flag}") is not None:
            raise ValueError(f"--{flag} is both in --grid and passed through: give it in one place")
        if flag == "total-timesteps" and not all(value.isdigit() and int(value) > 0 for value in values):
            raise ValueError(f"--total-timesteps takes positive whole numbers, got {','.join(values)} in --grid")


def parse_grid(items: Tuple[str, ...]) -> List[Tuple[str, List[str]]]:
    """--grid's items FLAG=V1,V2,... as [(flag with dashes, [values...])], in the order given.

    Raises ValueError with a one-line message for an item without FLAG=, with dashes before the flag,
    a flag given twice, or an empty, duplicate or non-filesystem-safe value (only letters, digits and
    . + - are allowed, so that the exp-name stays free of '__' and '=' inside values).
    """
    grid: List[Tuple[str, List[str]]] = []
    for item in items:
        if item.startswith("-"):
            raise ValueError(f"--grid takes FLAG=V1,V2,... without the flag's leading dashes, got {item!r}")
        match = GRID_ITEM.fullmatch(item)
        if not match:
            raise ValueError(f"--grid takes FLAG=V1,V2,... (e.g. delta-down=0,1e-4), got {item!r}")
        flag, values = match["flag"].replace("_", "-"), match["values"].split(",")
        if flag in [known for known, _ in grid]:
            raise ValueError(f"--grid names {flag} twice")
        bad = [value for value in values if not GRID_VALUE.fullmatch(value)]
        if bad:
            raise ValueError(f"--grid {flag}: values take letters, digits, '.', '+' and '-' only, got {bad[0]!r}")
        if len(set(values)) != len(values):
            raise ValueError(f"--grid {flag} has duplicate values: {match['values']}")
        grid.append((flag, values))
    return grid


def grid_points(args: Args) -> List[Tuple[Tuple[str, str], ...]]:
    """Every combination of the --grid values, the last flag varying fastest; [()] without --grid."""
    grid = parse_grid(args.grid)
    flags = [flag for flag, _ in grid]
    return [tuple(zip(flags, values)) for values in itertools.product(*[values for _, values in grid])]


def make_jobs(args: Args) -> List[Job]:
    """The grid in the order env ids x seeds x grid points x scripts (script varies fastest), so that what
    finishes first is useful on its own: a base and its SHAPO twin on the same task, seed and grid point,
    and whole seeds of a grid cut short."""
    return [
        Job(script.removesuffix(".py"), env_id, seed, settings)
        for env_id in args.env_ids
        for seed in args.seeds
        for settings in grid_points(args)
        for script in args.scripts
    ]


def exp_name(job: Job, suffix: str) -> str:
    """The run's experiment name: its script, plus `_suffix` if one is given, plus -<flag>=<value> per
    grid setting (the flag's dashes written as underscores), e.g. trpo_lag_shapo_pid-delta_down=1e-4."""
    return join_exp_name(f"{job.script}_{suffix}" if suffix else job.script, dict(job.settings))


def join_exp_name(head: str, settings: Dict[str, str]) -> str:
    """head followed by -<flag>=<value> per setting, the flag's dashes written as underscores."""
    return head + "".join(f"-{flag.replace('-', '_')}={value}" for flag, value in settings.items())


def split_exp_name(name: str) -> Tuple[str, Dict[str, str]]:
    """An exp-name split into its part before the grid settings and {flag with dashes: value}, in order:
    "trpo_lag_shapo-delta_down=1e-4-critic_sam_rho=0" -> ("trpo_lag_shapo", {"delta-down": "1e-4",
    "critic-sam-rho": "0"}); a name without settings -> (name, {}). The inverse of join_exp_name."""
    head, *settings = SETTING_START.split(name)
    pairs = [setting.split("=", 1) for setting in settings]
    return head, {flag.replace("_", "-"): value for flag, value in pairs}


def grid_flags(job: Job) -> List[str]:
    """The job's grid settings as command-line flags: ["--delta-down", "1e-4", ...]."""
    return [token for flag, value in job.settings for token in (f"--{flag}", value)]


def run_folders(runs_dir: Path, job: Job, suffix: str) -> List[Path]:
    """The run's folders <env-id>__<exp-name>__<seed>__<unix-time> in runs_dir, oldest first."""
    prefix = f"{job.env_id}__{exp_name(job, suffix)}__{job.seed}__"
    found = [p for p in runs_dir.iterdir() if p.name.startswith(prefix) and p.name[len(prefix) :].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(prefix) :]))


def script_fields(script: str) -> Dict[str, ast.AnnAssign]:
    """The fields of the script's Args class by name (total_timesteps, delta_down, ...), read from its
    source (importing the script would load PyTorch and the simulators)."""
    tree = ast.parse((ROOT / f"{script}.py").read_text())
    (args,) = [node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "Args"]
    return {node.target.id: node for node in args.body if isinstance(node, ast.AnnAssign)}


def total_timesteps(script: str, flags: List[str]) -> int:
    """The --total-timesteps a run of `script` gets: the one among `flags`, else the script's default."""
    if (value := flag_value(flags, "--total-timesteps")) is not None:
        return int(value)
    return ast.literal_eval(script_fields(script)["total_timesteps"].value)


def make_plans(jobs: List[Job], args: Args, extra: List[str]) -> Tuple[Dict[Job, Plan], int]:
    """Each job's Plan, and the number of run folders of these jobs the plans leave unused."""
    runs_dir = Path(args.out_dir) / "runs"
    folders = {job: run_folders(runs_dir, job, args.exp_name_suffix) if runs_dir.is_dir() else [] for job in jobs}
    newest = {
        job: next((f / "checkpoint.pt" for f in reversed(found) if (f / "checkpoint.pt").is_file()), None)
        for job, found in folders.items()
    }
    paths = [str(path) for path in newest.values() if path]
    steps = dict(zip(paths, read_checkpoints(args.python, paths))) if paths else {}
    plans = {}
    for job, path in newest.items():
        step, steps_per_epoch = steps.get(str(path)) or (None, None)
        budget = total_timesteps(job.script, [*extra, *grid_flags(job)])
        finished = step is not None and step >= budget // steps_per_epoch * steps_per_epoch
        plans[job] = Plan(path, step, finished)
    unused = sum(map(len, folders.values())) - len(paths)
    return plans, unused


def read_checkpoints(python: str, paths: List[str]) -> List[Optional[List[int]]]:
    """[global_step, steps_per_epoch] of each checkpoint (None if unreadable), read by `python`."""
    try:
        proc = subprocess.run([python, "-c", READ_CHECKPOINTS, *paths], capture_output=True, text=True)
    except OSError as error:
        raise ValueError(f"cannot read the runs' checkpoints with --python {python}: {error}") from None
    if proc.returncode:
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise ValueError(f"cannot read the runs' checkpoints with --python {python}: {last}")
    return json.loads(proc.stdout)


def command(job: Job, python: str, extra: List[str], suffix: str, checkpoint: Optional[Path]) -> List[str]:
    name = ["--exp-name", exp_name(job, suffix)] if suffix or job.settings else []
    resume = ["--resume", str(checkpoint.resolve())] if checkpoint else []
    return [
        python,
        str(ROOT / f"{job.script}.py"),
        "--env-id",
        job.env_id,
        "--seed",
        str(job.seed),
        *name,
        *extra,
        *grid_flags(job),
        "--save-model",
        *resume,
    ]


class Run:
    """One training subprocess, started at once in a session of its own (the terminal's Ctrl-C does
    not reach it: the sweep forwards the stop); its stdout is appended to log_path as it comes, its
    stderr after it when it ends."""

    def __init__(self, cmd: List[str], cwd: str, env: dict, log_path: str):
        self.start, self.stopped = time.time(), False
        self.log, self.stderr = open(log_path, "a"), tempfile.TemporaryFile("w+", errors="replace")
        self.log.write(f"$ {' '.join(cmd)}\n")
        self.log.flush()
        try:
            self.proc = subprocess.Popen(
                cmd, cwd=cwd, env=env, stdout=self.log, stderr=self.stderr, start_new_session=True
            )
        except OSError as error:  # e.g. --python does not exist
            self.proc = None
            self.stderr.write(f"could not start: {error}\n")

    def stop(self) -> None:
        """SIGTERM, once: the script finishes its step, writes its last epoch boundary's checkpoint and exits."""
        if self.proc and not self.stopped:
            self.proc.terminate()
        self.stopped = True

    def poll(self) -> Optional[Result]:
        """None while the run goes on; once it has ended, its Result (call it no more then)."""
        returncode = self.proc.poll() if self.proc else 127
        if returncode is None:
            return None
        self.stderr.seek(0)
        stderr = self.stderr.read()
        self.log.write(f"\n--- stderr ---\n{stderr}")
        self.log.close()
        self.stderr.close()
        # the last non-empty stderr line, without tyro's box-drawing frame
        lines = [line.strip("│╭╮╰╯─ ") for line in stderr.splitlines()]
        lines = [line for line in lines if line and not line.startswith("For full helptext")]
        return Result(returncode, time.time() - self.start, lines[-1] if lines else "", self.stopped)


def run_to_end(launch: dict) -> Result:
    """A Ray task: one Run, polled (ray.cancel raises KeyboardInterrupt in the task only between Python
    bytecodes, never inside a blocking wait), stopped like a local one when cancelled."""
    run = Run(**launch)
    while (result := run.poll()) is None:
        try:
            time.sleep(POLL_SECONDS)
        except KeyboardInterrupt:
            run.stop()
    return result


def run_local(jobs: List[Job], launch: dict, workers: int, stop: list) -> Iterator[Tuple[Job, Result]]:
    """Yield (job, result) as the runs end, at most `workers` at a time; once `stop` is not empty,
    stop the running ones and start no more."""
    pending, running = list(jobs), {}
    while running or (pending and not stop):
        while pending and len(running) < workers and not stop:
            job = pending.pop(0)
            running[job] = Run(**launch[job])
        for job, run in list(running.items()):
            if stop:
                run.stop()
            if (result := run.poll()) is not None:
                del running[job]
                yield job, result
        time.sleep(POLL_SECONDS)


def run_ray(jobs: List[Job], launch: dict, workers: int, threads: int, stop: list) -> Iterator[Tuple[Job, Result]]:
    """As run_local, each run a Ray task (ray.init done): once `stop` is not empty, cancel the tasks."""
    import ray

    task = ray.remote(num_cpus=threads)(run_to_end)
    pending, in_flight, cancelled = list(jobs), {}, False
    while in_flight or (pending and not stop):
        while pending and len(in_flight) < workers and not stop:
            job = pending.pop(0)
            in_flight[task.remote(launch[job])] = job
        if stop and not cancelled:
            for ref in in_flight:
                ray.cancel(ref)
            cancelled = True
        done, _ = ray.wait(list(in_flight), num_returns=1, timeout=POLL_SECONDS)  # a timeout lets signals in
        for ref in done:
            job = in_flight.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.TaskCancelledError:  # cancelled before it started
                continue
            yield job, result


def start_ray(args: Args):
    """ray.init, returning the module: the cluster at --ray-address, else a local instance of the sweep's
    own with --workers x --threads-per-run CPUs, no dashboard, on the loopback interface only."""
    import ray

    if args.ray_address:
        ray.init(address=args.ray_address, log_to_driver=False)
    else:
        ray.init(
            address="local",
            num_cpus=args.workers * max(args.threads_per_run, 1),
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            log_to_driver=False,
        )
    return ray


def main(args: Args, extra: List[str], plans: Dict[Job, Plan], unused: int) -> int:
    """Run the sweep; return the exit status (0: all runs finished, 1: some failed, 128 + signal: stopped)."""
    jobs = list(plans)
    out_dir = Path(args.out_dir).resolve()
    log_dir = out_dir / "sweep_logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    threads = args.threads_per_run
    env = dict(os.environ)
    if threads:  # several runs each with as many threads as cores oversubscribe the CPU badly
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    to_run = [job for job in jobs if not plans[job].finished]
    launch = {
        job: dict(
            cmd=command(job, args.python, extra, args.exp_name_suffix, plans[job].checkpoint),
            cwd=str(out_dir),
            env=env,
            log_path=str(log_dir / f"{exp_name(job, args.exp_name_suffix)}__{job.env_id}__{job.seed}.log"),
        )
        for job in to_run
    }
    skipped, resuming = len(jobs) - len(to_run), sum(plans[job].checkpoint is not None for job in to_run)
    points = f" x {len(grid_points(args))} grid points" if args.grid else ""
    print(
        f"sweep: {len(jobs)} runs ({len(args.scripts)} scripts x {len(args.env_ids)} envs x {len(args.seeds)} seeds"
        f"{points}): "
        f"{skipped} finished, {resuming} to resume, {len(to_run) - resuming} to start; "
        f"{args.workers} workers ({args.backend}), {threads or 'inherited'} threads each, runs in {out_dir / 'runs'}",
        flush=True,
    )
    if unused:
        print(
            f"sweep.py: warning: left as they are: {unused} run folder(s) of this grid in {out_dir / 'runs'} without "
            "a checkpoint or older than the one used; plot.py reads each as a run: remove stale ones before plotting",
            file=sys.stderr,
            flush=True,
        )
    count = 0

    def report(job: Job, outcome: str) -> None:
        nonlocal count
        count += 1
        print(f"[{count}/{len(jobs)}] {exp_name(job, '')} {job.env_id} seed {job.seed}: {outcome}", flush=True)

    for job in jobs:
        if plans[job].finished:
            report(job, f"skipped, finished at step {plans[job].step} in {plans[job].checkpoint.parent.name}")

    start, failed, stopped = time.time(), [], []
    stop: list = []  # SIGINT and SIGTERM add their signal: the runs get SIGTERM, no new run starts
    ray = start_ray(args) if args.backend == "ray" and to_run else None  # before ours: it sets a SIGTERM handler
    handlers = {sig: signal.signal(sig, lambda num, _: stop.append(signal.Signals(num))) for sig in STOP_SIGNALS}
    try:
        if ray:
            finished = run_ray(to_run, launch, args.workers, max(threads, 1), stop)
        else:
            finished = run_local(to_run, launch, args.workers, stop)
        for job, result in finished:
            step = plans[job].step
            outcome = "fresh" if not plans[job].checkpoint else f"resumed at step {'?' if step is None else step}"
            outcome += f", exit {result.returncode} in {result.seconds:.1f} s"
            if result.stopped:
                stopped.append(job)
                outcome += ", stopped"
            elif result.returncode != 0:
                failed.append(job)
            if result.returncode != 0:
                outcome += f" | {result.last_error}"
            report(job, outcome)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        if ray:
            ray.shutdown()

    elapsed = time.time() - start
    if stop:
        print(
            f"sweep.py: stopped by {stop[0].name}: {len(stopped)} runs stopped, {len(failed)} failed, "
            f"{count - skipped - len(stopped) - len(failed)} finished, {skipped} skipped, {len(jobs) - count} "
            "not started; run the same command again to go on",
            file=sys.stderr,
        )
        return 128 + stop[0].value
    if failed:
        first = failed[0]
        print(
            f"sweep.py: error: {len(failed)} of {len(jobs)} runs failed (first: {exp_name(first, '')} {first.env_id} "
            f"seed {first.seed}); logs in {log_dir}",
            file=sys.stderr,
        )
        return 1
    print(f"sweep: all {len(jobs)} runs finished in {elapsed:.1f} s ({skipped} skipped)", flush=True)
    return 0


if __name__ == "__main__":
    cli_args, extra_flags = tyro.cli(Args, return_unknown_args=True)
    try:
        if "--grid" in sys.argv[1:] and not cli_args.grid:  # tyro takes a bare --grid as the empty default
            raise ValueError("--grid needs at least one FLAG=V1,V2,... (e.g. delta-down=0,1e-4), without dashes")
        check_args(cli_args, extra_flags)
        if cli_args.backend == "ray":
            try:
                import ray  # noqa: F401
            except ImportError:
                raise ValueError(
                    "--backend ray needs the optional package ray (pip install ray), not installed"
                ) from None
        grid_plans, unused_folders = make_plans(make_jobs(cli_args), cli_args, extra_flags)
    except ValueError as error:
        sys.exit(f"sweep.py: error: {error}")
    sys.exit(main(cli_args, extra_flags, grid_plans, unused_folders))
