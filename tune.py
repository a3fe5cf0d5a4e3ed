"""Hyperparameter tuning with Optuna for the scripts of this project (or any CleanRL-style script).

Each trial runs the script as a learner would, `python <script> <fixed flags> <trial flags> --seed S`, once per
seed, each in a folder of its own (runs/tune/<study>/trial_<n>/seed_<S>/); tune.py adds `--save-model` (the Atari
scripts evaluate a saved model) and `--checkpoint-frequency 0` unless the fixed flags set them, and prints the best
trial as the commands of its runs, every flag included. Its score is the mean over the seeds
of `eval/episodic_return` from the run's TensorBoard events. While the runs go, the running mean of
`charts/episodic_return` goes to Optuna every --report-every steps, and the pruner stops a trial that is clearly
behind: its processes get a SIGTERM (the scripts here then stop training, save and exit), a SIGKILL only if they hang.

    python tune.py dqn_frozenlake_tabular.py --param learning-rate=0.01:1:log gamma=0.8:0.9999 --n-trials 10 \
        -- --is-slippery                     # flags after -- go to every run
    tensorboard --logdir runs/tune           # every run of every trial
    optuna-dashboard sqlite:///runs/tune/optuna.db   # the studies in a browser (pip install optuna-dashboard)

    # several workers: the same command in several terminals, or on several machines with one database
    python tune.py dqn_atari.py --param learning-rate=2.5e-5:1e-3:log target-network-frequency=1000,4000,10000 \
        --report-every 50000 --warmup-steps 500000 --storage postgresql://USER:PASSWORD@HOST/optuna \
        --study-name pong-2m --max-trials 24 -- --env-id PongNoFrameskip-v4 --total-timesteps 2000000

Search space: `--param FLAG=LOW:HIGH` (uniform), `FLAG=LOW:HIGH:log` (log-uniform), `FLAG=A,B,C` (a choice), or
the same lines in a file given to --space. Int flags get int values, bool flags take `true,false`. Flags are
checked against the script's `Args` dataclass, then by the script's own checks before the study: it is started
with the fixed flags and the lowest and the highest searched values, until it starts training (its first
TensorBoard event), so that a flag it refuses stops tune.py with its error, and no study is created. Flags after
`--` are passed to every run.

Storage: `--storage sqlite:///FILE.db` (the default, runs/tune/optuna.db), a journal file `PATH.log` or
`PATH.journal`, or any database URL that SQLAlchemy opens (postgresql://, mysql://). Several workers share a study
by running tune.py with the same --storage and --study-name, on one machine or many, as many at once as you like
(a new storage too): Optuna's own distributed mode. A study continues when started again with its settings
(script, fixed flags, seeds, search space, objective); one with no trial but failed ones takes new settings.
With a database URL or SQLite a killed worker's trial is noticed by its missing heartbeat and run again, while a
journal file (no heartbeat) shows it as RUNNING for good.
The same command with `--n-trials 0` prints the study's table, best command and importances. Ctrl-C (or a
SIGTERM) stops the worker and its runs, and its trial is marked failed.
"""

import ast
import bisect
import contextlib
import dataclasses
import difflib
import functools
import math
import os
import random
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Optional, Union

import numpy as np
import optuna
import tyro
from optuna.trial import TrialState
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


@dataclass
class Args:
    script: tyro.conf.Positional[str]
    """the script to tune: dqn_frozenlake_tabular.py, dqn_atari.py, ddqn_atari.py (any script with an Args dataclass)"""
    param: tuple[str, ...] = ()
    """the searched flags: FLAG=LOW:HIGH, FLAG=LOW:HIGH:log or FLAG=A,B,C"""
    space: Optional[str] = None
    """a file with more searched flags, one FLAG=... per line (# starts a comment)"""
    seeds: tuple[int, ...] = (1,)
    """the seeds of each trial, run at the same time; the score is the mean over them"""
    objective: str = "eval/episodic_return"
    """the TensorBoard tag whose mean is the score of a run"""
    direction: Literal["maximize", "minimize"] = "maximize"
    """whether a higher or a lower score is better"""
    progress_tag: str = "charts/episodic_return"
    """the TensorBoard tag whose running mean goes to the pruner while a run goes (same direction as the score)"""
    n_trials: Optional[int] = None
    """the trials this worker runs (default: 20, or no limit with --timeout or --max-trials; 0: only print the
    study's results)"""
    max_trials: Optional[int] = None
    """stop when the study, all workers together, has this many finished (complete or pruned) trials"""
    timeout: Optional[float] = None
    """seconds after which this worker starts no new trial"""
    pruner: Literal["median", "halving", "none"] = "median"
    """stop trials whose running return is below the median of the finished trials at the same step, or
    successive halving, or never"""
    startup_trials: int = 5
    """the median pruner prunes nothing until this many trials are complete"""
    warmup_steps: int = 0
    """steps before a trial can be pruned (halving: the first rung; 0: a hundredth of the first complete trial)"""
    report_every: int = 10_000
    """environment steps between the values a trial reports to the pruner"""
    report_window: int = 100
    """the running mean of the progress tag is over this many last episodes"""
    storage: str = "sqlite:///runs/tune/optuna.db"
    """sqlite:///FILE.db, a journal file PATH.log or PATH.journal, or a database URL (postgresql://, mysql://)"""
    study_name: Optional[str] = None
    """the study's name in the storage (default: the script's name)"""
    workdir: str = "runs/tune"
    """the runs go to WORKDIR/<study name>/trial_<number>/seed_<seed>/ (tensorboard --logdir WORKDIR)"""
    heartbeat: int = 10
    """seconds between a worker's heartbeats in a SQLite or database storage: a trial silent for twice as long
    is marked failed and run again"""
    stop_timeout: float = 60.0
    """seconds a stopped run may take to save and exit before it is killed"""
    sampler_seed: Optional[int] = None
    """seed of Optuna's TPE sampler"""


class UsageError(Exception):
    """Bad input: main prints it as one line and exits with code 2, without a traceback."""


class TrialFailed(Exception):
    """A run crashed or logged no score: the trial is marked failed and the study goes on."""


# SEARCH SPACE: the script's flags, read from its source, and the FLAG=SPEC syntax
def script_flags(script: str) -> dict[str, str]:
    """{flag: kind} for the fields of the script's `Args` dataclass; kind is int, float, bool or str."""
    path = Path(script)
    if path.suffix != ".py" or not path.is_file():
        raise UsageError(f"no script {script!r}: name a Python file, e.g. dqn_frozenlake_tabular.py or dqn_atari.py")
    # read, not imported: importing would load torch and the games, and run whatever the module does
    try:
        tree = ast.parse(path.read_text(), filename=script)
    except (SyntaxError, ValueError) as e:  # ValueError: not text
        raise UsageError(f"{script} is not a Python script ({type(e).__name__}): tune a CleanRL-style script") from None
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "Args":
            fields = [item for item in node.body if isinstance(item, ast.AnnAssign)]
            # Optional[int] and `int | None` are ints; anything that is not a number or a bool is taken as text
            kinds = {f: re.search(r"\b(int|float|bool)\b", ast.unparse(f.annotation)) for f in fields}
            return {f.target.id.replace("_", "-"): kind[1] if kind else "str" for f, kind in kinds.items()}
    raise UsageError(f"{script} has no `class Args` dataclass to read its flags from: tune a CleanRL-style script")


@dataclass
class Param:
    flag: str
    kind: str
    low: Optional[float] = None
    high: Optional[float] = None
    log: bool = False
    choices: Optional[tuple] = None

    def suggest(self, trial: optuna.Trial) -> Union[int, float, bool, str]:
        if self.choices is not None:
            return trial.suggest_categorical(self.flag, self.choices)
        if self.kind == "int":
            return trial.suggest_int(self.flag, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.flag, self.low, self.high, log=self.log)

    def ends(self) -> tuple:
        """The lowest and the highest value searched (the first and the last choice)."""
        return (self.choices[0], self.choices[-1]) if self.choices is not None else (self.low, self.high)

    def as_flags(self, value) -> list[str]:
        if self.kind == "bool":
            return [f"--{self.flag}" if value else f"--no-{self.flag}"]
        return [f"--{self.flag}", f"{value:.6g}" if isinstance(value, float) else str(value)]


def parse_param(text: str, flags: dict[str, str], script: str) -> Param:
    """FLAG=LOW:HIGH, FLAG=LOW:HIGH:log or FLAG=A,B,C, checked against the script's flags."""
    syntax = "write FLAG=LOW:HIGH, FLAG=LOW:HIGH:log or FLAG=A,B,C"
    match = re.fullmatch(r"(?:--)?([A-Za-z][\w-]*)=(.+)", text.strip())
    if not match:
        raise UsageError(f"--param {text!r}: {syntax}")
    flag, spec = match[1].replace("_", "-"), match[2]
    check_flag(flag, flags, script)
    kind = flags[flag]
    number = int if kind == "int" else float
    if "," in spec or kind in ("bool", "str"):
        words = [word.strip() for word in spec.split(",")]
        try:
            if kind == "bool":
                choices = tuple({"true": True, "false": False}[word.lower()] for word in words)
            else:
                choices = tuple(words) if kind == "str" else tuple(number(word) for word in words)
        except (KeyError, ValueError):
            raise UsageError(f"--param {text!r}: --{flag} takes {kind} values ({'true,false' if kind == 'bool' else syntax})") from None
        return Param(flag, kind, choices=choices)
    parts = spec.split(":")
    if len(parts) not in (2, 3) or parts[2:] not in ([], ["log"]):
        raise UsageError(f"--param {text!r}: {syntax}")
    try:
        low, high = number(parts[0]), number(parts[1])
    except ValueError:
        raise UsageError(f"--param {text!r}: --{flag} takes {kind} values, {parts[0]!r} or {parts[1]!r} is not one") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise UsageError(f"--param {text!r}: the range is empty or inverted, write LOW:HIGH with LOW < HIGH, both finite")
    if len(parts) == 3 and low <= 0:
        raise UsageError(f"--param {text!r}: a log range needs a positive LOW (got {parts[0]}); drop :log to search linearly")
    return Param(flag, kind, low, high, log=len(parts) == 3)


def check_flag(flag: str, flags: dict[str, str], script: str) -> None:
    if flag == "seed":
        raise UsageError("--seed is tune.py's: give the seeds of every trial with --seeds")
    if flag not in flags:
        close = difflib.get_close_matches(flag, flags, n=1)
        hint = f"did you mean --{close[0]}?" if close else f"see python {script} --help"
        raise UsageError(f"{script} has no flag --{flag}: {hint}")


def read_space(args: Args, flags: dict[str, str]) -> list[Param]:
    lines = list(args.param)
    if args.space:
        try:
            text = Path(args.space).read_text()
        except OSError as e:
            raise UsageError(f"--space {args.space}: cannot read it ({e.strerror})") from None
        lines += [line.split("#")[0] for line in text.splitlines() if line.split("#")[0].strip()]
    params = [parse_param(line, flags, args.script) for line in lines]
    if not params:
        raise UsageError("nothing to search: give at least one --param FLAG=LOW:HIGH (or a --space file)")
    searched = [p.flag for p in params]
    if len(set(searched)) < len(searched):
        raise UsageError(f"a flag is searched twice in {' '.join('--' + f for f in searched)}: keep one range per flag")
    return params


def check_fixed_flags(fixed: list[str], flags: dict[str, str], params: list[Param], script: str) -> None:
    """The flags after `--` must be the script's, and none of them searched too."""
    for token in fixed:
        if not token.startswith("--"):
            continue  # a value
        flag = token[2:].split("=")[0]
        if flag.startswith("no-") and flags.get(flag[3:]) == "bool":
            flag = flag[3:]
        check_flag(flag, flags, script)
        if flag in [p.flag for p in params]:
            raise UsageError(f"--{flag} is both searched (--param) and fixed (after --): drop one of them")


def runner_flags(flags: dict[str, str], fixed: list[str], objective: str) -> list[str]:
    """Flags a tuning run needs that a learner's run does not, unless the fixed flags set them."""
    given = {token[2:].split("=")[0].removeprefix("no-") for token in fixed if token.startswith("--")}
    extra = []
    if objective.startswith("eval/") and "save-model" in flags and "save-model" not in given:
        extra.append("--save-model")  # the Atari scripts evaluate only a saved model
    if "checkpoint-frequency" in flags and "checkpoint-frequency" not in given:
        extra += ["--checkpoint-frequency", "0"]  # a trial is never resumed, and a checkpoint holds the replay buffer
    return extra


# STORAGE, SAMPLER AND PRUNER: Optuna's own, so that any number of workers can share one study
STORAGE_ATTEMPTS = 10


def created_meanwhile(e: Exception) -> bool:
    """Whether opening a database failed only because another worker was creating its tables at that moment."""
    # each worker started on a new database creates the tables it does not find: the others' CREATE TABLE or
    # schema-version INSERT then fails ("table studies already exists", "UNIQUE constraint failed:
    # alembic_version.version_num", a MySQL or PostgreSQL duplicate), though the database is fine a moment later
    from sqlalchemy.exc import DBAPIError, IntegrityError  # optuna's database layer, loaded by RDBStorage

    duplicate = isinstance(e, IntegrityError) or "already exists" in str(e)
    return isinstance(e, DBAPIError) and (duplicate or "database is locked" in str(e))


def open_storage(url: str, heartbeat: int) -> optuna.storages.BaseStorage:
    if url == Args.storage:
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    try:
        if "://" not in url and url.endswith((".log", ".journal")):
            return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(url))
        if "://" not in url:
            raise UsageError(f"--storage {url}: give sqlite:///FILE.db, a journal file FILE.log, or a database URL")
        for attempt in range(1, STORAGE_ATTEMPTS + 1):
            try:
                # a worker that stops beating (killed, machine lost): the next one fails its trial and runs it again
                return optuna.storages.RDBStorage(
                    url,
                    heartbeat_interval=heartbeat,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1),
                )
            except Exception as e:
                if not created_meanwhile(e) or attempt == STORAGE_ATTEMPTS:
                    raise
                time.sleep(random.uniform(0.05, 0.3))  # at random: the workers that lost do not meet again
    except UsageError:
        raise
    except Exception as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(f"--storage {url} does not open ({reason}): check the path, the server or its driver") from None


def make_pruner(args: Args) -> optuna.pruners.BasePruner:
    if args.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=args.startup_trials, n_warmup_steps=args.warmup_steps)
    if args.pruner == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=args.warmup_steps or "auto")
    return optuna.pruners.NopPruner()


# A TRIAL: one run of the script per seed, watched through its TensorBoard events
# On Linux a run gets a SIGTERM when its worker dies, even by SIGKILL, so that no run outlives a killed tune.py;
# the child sets this up itself before it becomes the script (Popen's preexec_fn is unsafe with threads)
LAUNCH = [
    "-c",
    "import ctypes, os, signal, sys; ctypes.CDLL(None).prctl(1, signal.SIGTERM); "  # 1: PR_SET_PDEATHSIG
    "os.execv(sys.executable, [sys.executable] + sys.argv[1:])",
]


class Run:
    """One seed of a trial: the script's process, in its own folder and its own process group."""

    def __init__(self, command: list[str], folder: Path, env: Optional[dict] = None):
        folder.mkdir(parents=True)
        self.folder, self.log = folder, folder / "output.log"
        self.events = None
        env = {"OMP_NUM_THREADS": "1", **os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}  # one thread unless set
        launch = LAUNCH if sys.platform == "linux" else []
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, *launch, *command], cwd=folder, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=env, start_new_session=True,
            )  # fmt: skip

    def started(self) -> bool:
        """Whether the run has written its TensorBoard events: the script's checks of its flags are behind it."""
        return any(self.folder.glob("runs/*/events.out.tfevents.*"))

    def scalars(self, tag: str) -> tuple[list[int], list[float]]:
        """(steps, values) of a tag logged so far; reads only what is new since the last call."""
        if self.events is None:
            found = sorted(self.folder.glob("runs/*/events.out.tfevents.*"))
            if not found:
                return [], []
            self.events = EventAccumulator(str(found[0].parent), size_guidance={"scalars": 0})
        self.events.Reload()
        if tag not in self.events.Tags()["scalars"]:
            return [], []
        events = self.events.Scalars(tag)
        return [e.step for e in events], [e.value for e in events]

    def stop(self, timeout: float) -> None:
        """SIGTERM to the run's process group (a run of the scripts here saves and exits), SIGKILL after timeout."""
        with contextlib.suppress(ProcessLookupError):  # it may end meanwhile
            if self.process.poll() is None:
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except (subprocess.TimeoutExpired, KeyboardInterrupt):  # it hangs, or a second Ctrl-C: kill it now
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def error_line(self) -> str:
        """The script's `error:` line, else its exit code and last line (a traceback's exception)."""
        lines = self.log.read_text(errors="replace").splitlines()
        errors = [line for line in lines if line.startswith("error: ")]
        if errors:
            return errors[-1].removeprefix("error: ")
        texts = [line.strip("│╭╮╰╯─ ") for line in lines if re.search(r"[A-Za-z]", line)]
        return f"exit code {self.process.returncode}" + (f" ({texts[-1]})" if texts else "")


def progress_points(curves, finished, every, window, after) -> list[tuple[int, float]]:
    """The values to report at steps every, 2*every, ... after `after`: at each, the mean over the runs of the
    running mean of their last `window` episodes. A step is reported once all runs have passed it (or ended), so
    that every trial reports at the same steps and the pruner compares like with like."""
    last_steps = [steps[-1] if steps else 0 for steps, _ in curves]
    reached = min(last if not done else math.inf for last, done in zip(last_steps, finished))
    points = []
    for step in range((after // every + 1) * every, int(min(reached, max(last_steps))) + 1, every):
        ends = [bisect.bisect_right(steps, step) for steps, _ in curves]
        if min(ends) == 0:
            continue  # a run has not finished an episode yet
        running_means = [np.mean(values[max(0, end - window) : end]) for (_, values), end in zip(curves, ends)]
        points.append((step, float(np.mean(running_means))))
    return points


def run_trial(trial: optuna.Trial, args: Args, params: list[Param], command: list[str], folder: Path) -> float:
    """Optuna's objective: runs the script with the trial's flags for each seed, reports, returns the score."""
    flags = [flag for p in params for flag in p.as_flags(p.suggest(trial))]
    trial.set_user_attr("flags", shlex.join(flags))
    trial_folder = folder / f"trial_{trial.number}"
    runs = []
    try:
        for seed in args.seeds:
            runs.append(Run([*command, *flags, "--seed", str(seed)], trial_folder / f"seed_{seed}"))
        reported = 0
        while True:
            finished = [run.process.poll() is not None for run in runs]  # before the read: it gets the last events
            curves = [run.scalars(args.progress_tag) for run in runs]
            for step, value in progress_points(curves, finished, args.report_every, args.report_window, reported):
                trial.report(value, step)
                reported = step
                if not all(finished) and trial.should_prune():
                    trial.set_user_attr("pruned_at", step)
                    raise optuna.TrialPruned(f"at step {step:,}: running mean {value:.4g}")
            if all(finished):
                break
            time.sleep(0.5)
    finally:  # pruned, failed, or tune.py interrupted: nothing is left running
        for run in runs:
            run.stop(args.stop_timeout)

    scores = []
    for run in runs:
        if run.process.returncode == 2:  # the script's own UsageError: these flags can never run
            raise UsageError(
                f"{Path(args.script).name} refused the flags of trial {trial.number}, {shlex.join(flags)}: "
                f"{run.error_line()}: search only values it accepts (this trial is marked failed)"
            )
        _, values = run.scalars(args.objective)
        if run.process.returncode != 0 or not values:
            why = f"{run.error_line()}, see {run.log}" if run.process.returncode else f"no {args.objective} in {run.folder}"
            trial.set_user_attr("failed", why)
            raise TrialFailed(why)
        scores.append(np.mean(values))
    return float(np.mean(scores))


# BEFORE THE STUDY: the script's own checks of the flags, so that a typo stops tune.py before anything is created
def refusals(commands: list[list[str]]) -> list[Optional[tuple[int, str]]]:
    """Runs the commands at once, each in a scratch folder, only until the script has checked its flags (its
    first TensorBoard event is written) or has ended; for each, (exit code, error line) if it ended with an
    error, else None."""
    with tempfile.TemporaryDirectory(prefix="tune-check-", ignore_cleanup_errors=True) as scratch:
        runs, ended = [], []
        try:
            for i, command in enumerate(commands):  # --track: no W&B run
                runs.append(Run(command, Path(scratch) / str(i), env={"WANDB_MODE": "disabled"}))
            while not all(run.process.poll() is not None or run.started() for run in runs):
                time.sleep(0.1)
        finally:  # nothing to save: a SIGKILL to each run and its game processes
            for run in runs:
                ended.append(run.process.poll() is not None)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(run.process.pid, signal.SIGKILL)
                run.process.wait()
        return [
            (run.process.returncode, run.error_line()) if by_itself and run.process.returncode != 0 else None
            for run, by_itself in zip(runs, ended)
        ]


def check_flags_run(script: str, command: list[str], fixed: list[str], params: list[Param], seed: int) -> None:
    """The script's own checks, before the study: the fixed flags with the lowest searched values and with
    the highest. A refusal is blamed on the fixed flags when they alone get the same error."""
    name = Path(script).name
    lowest, highest = ([flag for p in params for flag in p.as_flags(p.ends()[end])] for end in (0, 1))
    points = [("lowest", lowest)] + ([("highest", highest)] if highest != lowest else [])
    print(f"checking the flags: {name} with the {' and the '.join(which for which, _ in points)} searched values, "
          "until it starts training")  # fmt: skip
    found_at = refusals([[*command, *flags, "--seed", str(seed)] for _, flags in points])
    for (which, flags), found in zip(points, found_at):
        if found is None:
            continue
        code, why = found
        if code != 2:
            again = shlex.join(["python", script, *command[1:], *flags, "--seed", str(seed)])
            raise UsageError(f"{name} crashed before it started training ({why}); to see why, run: {again}")
        if refusals([[*command, "--seed", str(seed)]]) == [found]:
            given = f"the fixed flags (after --) {shlex.join(fixed)}" if fixed else "its default flags"
            raise UsageError(f"{name} refused {given}: {why}")
        raise UsageError(
            f"{name} refused {shlex.join(flags)}, the {which} values of the searched ranges: {why}: "
            "search only values it accepts"
        )


# OUTPUT: a line per trial, then the study's table, its best command and the importance of each flag
def count(n: int, noun: str) -> str:
    """1 trial, 2 trials"""
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def best_trial(study: optuna.Study) -> Optional[optuna.trial.FrozenTrial]:
    return study.best_trial if study.get_trials(states=(TrialState.COMPLETE,)) else None


def trial_line(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """The callback after each trial of this worker (complete, pruned or failed)."""
    seconds = (trial.datetime_complete - trial.datetime_start).total_seconds()
    if trial.state == TrialState.COMPLETE:
        outcome = f"score {fmt(trial.value)}"
    elif trial.state == TrialState.PRUNED:
        outcome = f"pruned at step {trial.user_attrs['pruned_at']:,}"
    else:
        outcome = f"failed: {trial.user_attrs['failed']}"
    best = best_trial(study)
    best_text = f"best {fmt(best.value)} (trial {best.number})" if best else "no complete trial yet"
    print(f"trial {trial.number} {outcome} in {seconds:.1f} s, {best_text}: {trial.user_attrs.get('flags', '')}")


def print_summary(study: optuna.Study, args: Args, base: list[str], params: list[Param]) -> None:
    """The study's table, the commands of its best trial (`base`: the flags of every run) and the importances."""
    trials = study.get_trials()
    finished = [t for t in trials if t.state == TrialState.COMPLETE]
    # the best first, then the pruned, running and failed ones
    order = [TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING, TrialState.FAIL]
    sign = -1 if args.direction == "maximize" else 1
    trials.sort(key=lambda t: (order.index(t.state), sign * t.value if t.state == TrialState.COMPLETE else 0, t.number))
    print(f"\nstudy {study.study_name}: {count(len(trials), 'trial')}, {len(finished)} complete ({args.direction} {args.objective})")
    columns = ["trial", "state", "score", *[f"--{p.flag}" for p in params], "seconds"]
    print("| " + " | ".join(columns) + " |\n|" + " --- |" * len(columns))
    for t in trials:
        state = f"pruned at {t.user_attrs['pruned_at']:,}" if "pruned_at" in t.user_attrs else t.state.name.lower()
        values = [fmt(t.params.get(p.flag, "")) for p in params]
        seconds = f"{(t.datetime_complete - t.datetime_start).total_seconds():.1f}" if t.datetime_complete else ""
        score = fmt(t.value) if t.state == TrialState.COMPLETE else ""  # a pruned one holds its last report
        print(f"| {t.number} | {state} | {score} | " + " | ".join(values) + f" | {seconds} |")

    best = best_trial(study)
    if best is None:
        print("no complete trial yet: no best flags")
        return
    # its runs exactly as they ran: every flag tune.py gave them (--save-model, ...) and their seeds
    seeds = f"the mean over seeds {', '.join(map(str, args.seeds))}" if len(args.seeds) > 1 else f"seed {args.seeds[0]}"
    flags = [*base, *shlex.split(best.user_attrs["flags"])]
    commands = [["python", args.script, *flags, "--seed", str(seed)] for seed in args.seeds]
    print(f"best: trial {best.number}, score {fmt(best.value)} ({seeds}), run by:")
    print("\n".join("  " + shlex.join(command) for command in commands))
    if len(finished) < 2:
        print("importance of each flag: needs at least 2 complete trials")
        return
    try:
        with warnings.catch_warnings():  # e.g. "importances will be equal" when few trials differ
            warnings.simplefilter("ignore")
            importances = optuna.importance.get_param_importances(study)
        print("importance of each flag: " + ", ".join(f"--{flag} {value:.2f}" for flag, value in importances.items()))
    except (RuntimeError, ValueError) as e:  # e.g. all complete trials have the same flags
        print(f"importance of each flag: not computed ({e})")


def check_args(args: Args) -> None:
    problems = [
        (args.n_trials is not None and args.n_trials < 0, "--n-trials cannot be negative (0: only print the results)"),
        (args.max_trials is not None and args.max_trials < 1, "--max-trials must be at least 1"),
        (not args.seeds, "--seeds needs at least one seed"),
        (args.report_every < 1 or args.report_window < 1, "--report-every and --report-window must be at least 1"),
        (args.startup_trials < 0 or args.warmup_steps < 0, "--startup-trials and --warmup-steps cannot be negative"),
        (args.heartbeat < 1, "--heartbeat must be at least 1 second"),
        (args.timeout is not None and not args.timeout > 0, "--timeout must be a positive number of seconds"),
        (not args.stop_timeout >= 0, "--stop-timeout cannot be negative"),
    ]
    for bad, message in problems:
        if bad:
            raise UsageError(message)


# what a study was started with, as a message names it: {key: (name, "a " if it is one thing)}
SETTINGS = {"script": ("script", "a "), "fixed flags": ("fixed flags", ""), "seeds": ("seeds", ""),
            "space": ("search space", "a "), "objective": ("objective", "a ")}  # fmt: skip


def keep_settings(study: optuna.Study, storage: str, settings: dict) -> None:
    """A study goes on only with the settings it was started with: its trials would not compare. One with no
    trial but failed ones (a typo in the fixed flags, fixed since) takes the new settings."""
    saved = study.user_attrs.get("settings")
    if saved == settings:
        return
    if saved is not None:
        changed = [key for key in settings if saved.get(key) != settings[key]]
        trials = study.get_trials(deepcopy=False)
        names = {key: SETTINGS.get(key, (key, "a ")) for key in changed}
        if any(t.state != TrialState.FAIL for t in trials):
            # "different fixed flags (--total-episodes 300)", "a different search space"
            was = {"fixed flags": f" ({saved['fixed flags'] or 'none'})"}
            what = [f"{article}different {name}{was.get(key, '')}" for key, (name, article) in names.items()]
            raise UsageError(
                f"study {study.study_name!r} in {storage} was started with {' and '.join(what)}: "
                "run it with its own settings, or name a new study with --study-name"
            )
        print(f"study {study.study_name} has no complete trial ({count(len(trials), 'failed trial')}): it goes on "
              f"with the new {' and '.join(name for name, _ in names.values())}")  # fmt: skip
    study.set_user_attr("settings", settings)


def open_study(args: Args, study_name: str, settings: dict, folder: Path, before: Callable[[], None]) -> optuna.Study:
    """Creates the study, or loads it if it exists (a second worker, or a study that goes on). An existing
    study's settings and runs are checked before `before` (the script's own checks) takes its time."""
    storage = open_storage(args.storage, args.heartbeat)
    settings = {key: value if isinstance(value, str) else repr(value) for key, value in settings.items()}
    # trial folders are named by number: one whose trial the study does not have is another study's (a storage
    # deleted, or another one), and its runs would be read as this study's
    found = {p.name for p in folder.glob("trial_*")}  # before the trials: a trial exists before its folder
    try:
        existing = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:  # a new study
        trials = []
    else:
        keep_settings(existing, args.storage, settings)
        trials = existing.get_trials(deepcopy=False)
    stale = found - {f"trial_{t.number}" for t in trials}
    if stale:
        raise UsageError(f"{folder / min(stale)} holds runs of another study named {study_name}: "
                         "move that folder away, or choose another --workdir or --study-name")  # fmt: skip
    before()
    # constant_liar: while trials run, the sampler counts them as bad, so that workers spread out
    sampler = optuna.samplers.TPESampler(seed=args.sampler_seed, constant_liar=True)
    study = optuna.create_study(
        storage=storage, study_name=study_name, direction=args.direction, sampler=sampler,
        pruner=make_pruner(args), load_if_exists=True,
    )  # fmt: skip
    keep_settings(study, args.storage, settings)  # a new study's (or another worker's, started meanwhile)
    return study


def tune(args: Args, fixed: list[str]) -> optuna.Study:
    """Checks everything, opens (or continues) the study, runs this worker's trials, prints the results."""
    flags = script_flags(args.script)
    params = read_space(args, flags)
    check_fixed_flags(fixed, flags, params, args.script)
    check_args(args)
    study_name = args.study_name or Path(args.script).stem
    settings = {"script": Path(args.script).name, "fixed flags": shlex.join(fixed), "seeds": list(args.seeds),
                "space": [dataclasses.astuple(p) for p in params], "objective": args.objective}  # fmt: skip
    folder = Path(args.workdir) / study_name
    # every run: python SCRIPT <fixed flags> <what a tuning run needs> <the trial's flags> --seed S
    base = [*fixed, *runner_flags(flags, fixed, args.objective)]
    command = [str(Path(args.script).resolve()), *base]

    def check_flags():  # only for a worker that runs trials; before the study is created
        if args.n_trials != 0:
            check_flags_run(args.script, command, fixed, params, args.seeds[0])

    study = open_study(args, study_name, settings, folder, before=check_flags)

    # this worker's share: --n-trials, up to the study's --max-trials, until --timeout
    n_trials = args.n_trials
    if n_trials is None and args.timeout is None and args.max_trials is None:
        n_trials = 20
    callbacks = [trial_line]
    if args.max_trials is not None:
        finished = (TrialState.COMPLETE, TrialState.PRUNED)
        left = max(0, args.max_trials - len(study.get_trials(states=finished)))
        n_trials = left if n_trials is None else min(n_trials, left)
        callbacks.append(optuna.study.MaxTrialsCallback(args.max_trials, states=finished))

    limits = ([count(n_trials, "trial")] if n_trials is not None else []) + ([f"{args.timeout:g} s"] if args.timeout else [])
    share = "no trial" if n_trials == 0 else "up to " + " or ".join(limits)
    print(f"study {study_name} in {args.storage}: {count(len(study.trials), 'trial')} so far; this worker runs {share}")
    print(f"runs: {folder}/trial_<n>/seed_<seed>/ (tensorboard --logdir {folder}); optuna-dashboard {args.storage}")
    if n_trials is None or n_trials > 0:
        objective = functools.partial(run_trial, args=args, params=params, command=command, folder=folder)
        study.optimize(objective, n_trials=n_trials, timeout=args.timeout, callbacks=callbacks, catch=(TrialFailed,))
    print_summary(study, args, base, params)
    return study


def option_error(event) -> None:
    """tyro's hook on a bad tune.py option: one line (a UsageError) instead of tyro's box of ten."""
    options = [f"--{field.name.replace('_', '-')}" for field in dataclasses.fields(Args) if field.name != "script"]
    kind = type(event).__name__
    names = getattr(getattr(getattr(event, "argument", None), "lowered", None), "name_or_flags", None) or ()
    flag = "/".join(names)
    tokens = getattr(event, "tokens", None) or getattr(event, "unrecognized_tokens", None)
    if tokens:
        option = next((token.split("=")[0] for token in tokens if token.startswith("-")), None)
        if option is None:
            raise UsageError(f"unexpected {shlex.join(tokens)}: tune.py tunes one script, and its flags go after --")
        close = difflib.get_close_matches(option, options, n=1)
        hint = f"did you mean {close[0]}?" if close else "a flag of the script goes after -- (tune.py SCRIPT ... -- --flag value)"
        raise UsageError(f"unknown option {option}: {hint}")  # the scripts' words
    if kind == "MissingArgs" or flag == "script":
        raise UsageError("name the script to tune: python tune.py dqn_frozenlake_tabular.py --param FLAG=LOW:HIGH ...")
    if kind == "InvalidChoice":
        raise UsageError(f"{flag} {event.value}: choose one of {', '.join(event.choices)}")
    if kind == "BadValue" and flag:
        raise UsageError(f"{flag} needs a value: see python tune.py --help")
    if kind == "InstantiationFailure" and flag:
        raise UsageError(f"bad value for {flag}: {event.message.splitlines()[0]}")
    raise UsageError(f"bad tune.py options ({kind}): see python tune.py --help")


def parse_options(argv: list[str]) -> Args:
    """tune.py's options; a bad one is one error line, as the scripts do it."""
    hook = getattr(getattr(tyro, "_errors", None), "on_parse_error", None)  # tyro's own hook (pinned version)
    with hook(option_error) if hook else contextlib.nullcontext():  # another tyro: its own box
        return tyro.cli(Args, args=argv)


def main(argv: Optional[list[str]] = None) -> optuna.Study:
    argv = sys.argv[1:] if argv is None else argv
    # tune.py's flags, then `--`, then the script's fixed flags
    split = argv.index("--") if "--" in argv else len(argv)
    sys.stdout.reconfigure(line_buffering=True)  # one line per trial, also into a log file
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own lines instead, without tracebacks
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # the heartbeat's
    try:
        return tune(parse_options(argv[:split]), argv[split + 1 :])
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("\ninterrupted: the runs are stopped, a trial in progress is marked failed; the same command continues the study", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    # a SIGTERM (kill, a job scheduler) stops the worker as Ctrl-C does: its runs stopped, its trial marked failed
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    main()
