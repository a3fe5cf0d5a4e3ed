"""Tests for tune.py: tiny studies of the tabular script, with workers as real processes, pruning, killed
workers, and bad input."""

import os
import re
import shlex
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy  # optuna's database layer
from optuna.trial import TrialState
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import tune
from helpers import processes_left_in_group

ROOT = Path(tune.__file__).parent
SCRIPT = ROOT / "dqn_frozenlake_tabular.py"
SPACE = ["--param", "learning-rate=0.05:1:log", "gamma=0.8:0.99"]
QUICK = ["--total-episodes", "300", "--eval-episodes", "20"]  # a run takes about a second, mostly Python's start
STUDY = "dqn_frozenlake_tabular"  # the default study name: the script's


def tune_argv(tmp_path: Path, *flags: str, storage: str = "study.db", fixed=QUICK) -> list[str]:
    url = f"sqlite:///{tmp_path / storage}" if storage.endswith(".db") else str(tmp_path / storage)
    return [str(SCRIPT), *SPACE, "--storage", url, "--workdir", str(tmp_path / "runs"), *flags, "--", *fixed]


def start_worker(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, tune.__file__, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def load_study(tmp_path: Path) -> optuna.Study:
    return optuna.load_study(study_name=STUDY, storage=f"sqlite:///{tmp_path / 'study.db'}")


def script_error(*flags: str) -> str:
    """The script's own error line for these flags (its wording is its own, the tests do not repeat it)."""
    result = subprocess.run([sys.executable, str(SCRIPT), *flags], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    return line.removeprefix("error: ")


def eval_returns(folder: Path) -> list[float]:
    """The eval/episodic_return values of the one run under folder/runs/."""
    (events,) = folder.glob("runs/*/events.out.tfevents.*")
    accumulator = EventAccumulator(str(events.parent))
    accumulator.Reload()
    return [event.value for event in accumulator.Scalars("eval/episodic_return")]


def test_progress_points_align_the_steps_of_every_run():
    # two seeds: (steps, returns) of their episodes so far; the first one has ended, the second goes on
    curves = [([5, 15, 25], [0.0, 1.0, 1.0]), ([8, 12, 31], [0.0, 0.0, 1.0])]
    points = tune.progress_points(curves, finished=[True, False], every=10, window=2, after=0)
    # step 10: means of (0) and (0); 20: (0, 1) and (0, 0); 30: (1, 1) and (0, 0); 40 not passed by the second
    assert points == [(10, 0.0), (20, 0.25), (30, 0.5)]
    assert tune.progress_points(curves, [True, False], 10, 2, after=20) == [(30, 0.5)]
    assert tune.progress_points(curves, [True, True], 10, 2, after=30) == []  # no run went past 31
    assert tune.progress_points([([], []), *curves[1:]], [False, False], 10, 2, after=0) == []


def test_two_workers_share_one_study(tmp_path, capsys):
    """Two tune.py processes on one journal file: six trials, each run once, and the best one reported."""
    argv = tune_argv(tmp_path, "--n-trials", "3", storage="study.log")
    workers = [start_worker(argv) for _ in range(2)]
    outputs = [worker.communicate(timeout=120) for worker in workers]
    for worker, (out, err) in zip(workers, outputs):
        assert worker.returncode == 0, err
        assert "Traceback" not in err
    numbers = [int(line.split()[1]) for out, _ in outputs for line in out.splitlines() if line.startswith("trial ")]
    assert sorted(numbers) == list(range(6)), "each worker prints its own three trials"

    study = tune.main(tune_argv(tmp_path, "--n-trials", "0", storage="study.log"))
    assert sorted(t.number for t in study.trials) == list(range(6))
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    trial_folders = sorted((tmp_path / "runs" / STUDY).iterdir())
    assert [p.name for p in trial_folders] == [f"trial_{n}" for n in range(6)]
    for folder in trial_folders:  # one run per trial: no trial ran twice
        assert len(list(folder.glob("seed_1/runs/*/events.out.tfevents.*"))) == 1
    best = study.best_trial
    assert best.value == max(t.value for t in study.trials)
    summary = capsys.readouterr().out
    assert f"best: trial {best.number}, score {best.value:.4g}" in summary
    assert "importance of each flag: " in summary
    assert summary.count("| complete |") == 6


def test_the_best_command_is_what_its_runs_ran(tmp_path, capsys, monkeypatch):
    """The printed commands hold every flag tune.py gave the best trial's runs (--save-model too) and their
    seeds, and one of them run again scores what its run scored."""
    started = []
    popen = subprocess.Popen
    monkeypatch.setattr(tune.subprocess, "Popen", lambda argv, **kw: started.append((argv, kw["cwd"])) or popen(argv, **kw))
    study = tune.main(tune_argv(tmp_path, "--n-trials", "1", "--seeds", "1", "2"))
    best = study.best_trial
    out = capsys.readouterr().out
    commands = [shlex.split(line) for line in out.splitlines() if line.startswith("  python ")]
    assert len(commands) == 2, out
    for seed, command in zip((1, 2), commands):
        folder = tmp_path / "runs" / STUDY / f"trial_{best.number}" / f"seed_{seed}"
        (ran,) = [argv for argv, cwd in started if Path(cwd) == folder]
        script_at = ran.index(str(SCRIPT))  # after the interpreter and its launcher
        assert command[0] == "python" and Path(command[1]).resolve() == SCRIPT
        assert command[2:] == ran[script_at + 1 :]
        assert command[-2:] == ["--seed", str(seed)]

    again = tmp_path / "again"
    again.mkdir()
    subprocess.run([sys.executable, *commands[0][1:]], cwd=again, check=True, capture_output=True, timeout=120)
    assert eval_returns(again) == eval_returns(tmp_path / "runs" / STUDY / f"trial_{best.number}" / "seed_1")


class AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study, trial):
        return True


def test_a_pruned_trial_stops_its_runs(tmp_path, monkeypatch):
    started = []
    popen = subprocess.Popen
    monkeypatch.setattr(tune.subprocess, "Popen", lambda *a, **kw: started.append(popen(*a, **kw)) or started[-1])
    args = tune.Args(script=str(SCRIPT), seeds=(1, 2), report_every=1000, stop_timeout=20)
    params = [tune.parse_param("learning-rate=0.1:0.9", tune.script_flags(args.script), args.script)]
    # a million episodes would take minutes: the first report, at step 1,000, prunes the trial
    command = [str(SCRIPT), "--total-episodes", "1000000"]
    study = optuna.create_study(direction="maximize", pruner=AlwaysPrune())
    start = time.time()
    study.optimize(lambda trial: tune.run_trial(trial, args, params, command, tmp_path), n_trials=1)

    (trial,) = study.trials
    assert trial.state == TrialState.PRUNED
    assert trial.user_attrs["pruned_at"] == 1000
    assert len(started) == 2
    for seed, process in zip((1, 2), started):
        # the SIGTERM stops its training as Ctrl-C does: it says so, evaluates and exits
        log = (tmp_path / "trial_0" / f"seed_{seed}" / "output.log").read_text()
        assert "interrupted after " in log, "the run was not stopped, it ended by itself"
        assert processes_left_in_group(process.pid) == []
    assert time.time() - start < 60


def started_run(worker: subprocess.Popen, timeout: float = 60) -> int:
    """The pid of a trial's run started by the tune.py process `worker`, once it has become the script (the
    runs that check the flags before the study run in a scratch folder, not a trial's)."""
    deadline = time.time() + timeout
    while time.time() < deadline and worker.poll() is None:
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
                argv = (stat.parent / "cmdline").read_bytes().split(b"\0")
                folder = os.readlink(stat.parent / "cwd")
            except (OSError, ValueError):
                continue  # gone meanwhile
            if parent == worker.pid and argv[1:2] == [str(SCRIPT).encode()] and "/trial_" in folder:
                return int(stat.parent.name)
        time.sleep(0.05)
    pytest.fail(f"tune.py started no run: {worker.communicate()}")


@pytest.mark.parametrize("kill", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "sigkill"])
def test_a_killed_study_continues_from_its_storage(tmp_path, kill):
    argv = tune_argv(tmp_path, "--max-trials", "2", "--heartbeat", "1")
    worker = start_worker(argv)
    run = started_run(worker)
    worker.send_signal(kill)
    out, err = worker.communicate(timeout=60)
    assert processes_left_in_group(run) == [], "the trial's run outlived its worker"
    log = (tmp_path / "runs" / STUDY / "trial_0" / "seed_1" / "output.log").read_text()
    # stopped in training, it says so before its evaluation; stopped before, it has none
    assert "interrupted after " in log or "eval over" not in log, "the run was not stopped: it trained to the end"
    if kill == signal.SIGINT:
        assert worker.returncode == 130
        assert "Traceback" not in err and err.strip().startswith("interrupted: ")
        assert load_study(tmp_path).trials[0].state == TrialState.FAIL
    else:  # no goodbye: the trial stays RUNNING until its missing heartbeat is noticed
        assert load_study(tmp_path).trials[0].state == TrialState.RUNNING
        time.sleep(2.5)  # the grace period: twice --heartbeat

    again = start_worker(argv)
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    trials = load_study(tmp_path).trials
    assert trials[0].state == TrialState.FAIL
    assert len([t for t in trials if t.state == TrialState.COMPLETE]) == 2
    if kill == signal.SIGKILL:  # the lost trial is run again, with its flags
        assert trials[1].system_attrs["failed_trial"] == 0
        assert trials[1].params == trials[0].params
    assert "best: trial " in out


@pytest.mark.parametrize(
    "flags, fixed, message",
    [
        (["--param", "learning-rate=0.01:1:log"], ["--learnin-rate", "0.1"], "has no flag --learnin-rate: did you mean --learning-rate?"),
        (["--param", "lr=0.01:1"], [], "has no flag --lr"),
        (["--param", "learning-rate=0.5:0.5"], [], "the range is empty or inverted"),
        (["--param", "learning-rate=1:0.01:log"], [], "the range is empty or inverted"),
        (["--param", "learning-rate=0.1:inf"], [], "the range is empty or inverted"),
        (["--param", "learning-rate=0:1:log"], [], "a log range needs a positive LOW"),
        (["--param", "learning-rate=0.1-0.9"], [], "write FLAG=LOW:HIGH"),
        (["--param", "total-episodes=10.5:20"], [], "--total-episodes takes int values"),
        (["--param", "is-slippery=yes,no"], [], "--is-slippery takes bool values (true,false)"),
        (["--param", "seed=1:9"], [], "give the seeds of every trial with --seeds"),
        (["--param", "gamma=0.9:0.99"], ["--gamma", "0.95"], "--gamma is both searched (--param) and fixed"),
        (["--param", "gamma=0.9:0.99", "--storage", "sqlite:////no/such/folder/study.db"], [], "does not open"),
        (["--param", "gamma=0.9:0.99", "--storage", "nosuchdb://host/db"], [], "does not open"),
        (["--param", "gamma=0.9:0.99", "--storage", "/no/such/folder/study.log"], [], "does not open"),
        (["--param", "gamma=0.9:0.99", "--storage", "study.txt"], [], "give sqlite:///FILE.db, a journal file"),
        ([], [], "nothing to search"),
        (["--param", "gamma=0.9:0.99", "--space", "no-such-file.txt"], [], "--space no-such-file.txt: cannot read it"),
        # tune.py's own options: one line, as the scripts say it, not tyro's box
        (["--param", "gamma=0.9:0.99", "--n-trails", "3"], [], "unknown option --n-trails: did you mean --n-trials?"),
        (["--param", "gamma=0.9:0.99", "--total-episodes", "3"], [], "a flag of the script goes after --"),
        (["--param", "gamma=0.9:0.99", "--n-trials", "many"], [], "bad value for --n-trials"),
        (["--param", "gamma=0.9:0.99", "--pruner", "mediam"], [], "choose one of median, halving, none"),
        (["--param", "gamma=0.9:0.99", "--timeout", "-5"], [], "--timeout must be a positive number of seconds"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys, flags, fixed, message):
    argv = [str(SCRIPT), *flags, "--workdir", str(tmp_path)]
    argv += [] if "--storage" in flags else ["--storage", f"sqlite:///{tmp_path / 'study.db'}"]
    with pytest.raises(SystemExit) as exit_info:
        tune.main([*argv, "--", *fixed])
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: ") and message in line


@pytest.mark.parametrize("script", ["no_such_script.py", "README.md", "tests/helpers.py"])
def test_a_script_that_is_not_one_is_refused(capsys, script):
    with pytest.raises(SystemExit, match="2"):
        tune.main([str(ROOT / script), "--param", "gamma=0.9:0.99"])
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: no script {str(ROOT / script)!r}") or "has no `class Args`" in line


def test_a_study_continues_only_with_its_own_settings_and_runs(tmp_path, capsys):
    tune.main(tune_argv(tmp_path, "--n-trials", "1"))  # a complete trial: the study's settings are its own now
    out = capsys.readouterr().out
    counts = re.findall(r"\b(\d+) (trials?)\b", out)
    assert ("1", "trial") in counts and all((n == "1") == (noun == "trial") for n, noun in counts), out
    with pytest.raises(SystemExit, match="2"):
        tune.main(tune_argv(tmp_path, "--n-trials", "0", fixed=["--total-episodes", "500"]))
    (line,) = capsys.readouterr().err.splitlines()
    assert f"was started with different fixed flags ({shlex.join(QUICK)}): " in line and "--study-name" in line

    (tmp_path / "runs" / STUDY / "trial_1").mkdir(parents=True)  # left by a study whose storage is gone
    with pytest.raises(SystemExit, match="2"):
        tune.main(tune_argv(tmp_path, "--n-trials", "0"))
    (line,) = capsys.readouterr().err.splitlines()
    assert f"{tmp_path / 'runs' / STUDY / 'trial_1'} holds runs of another study named {STUDY}" in line


def test_a_failed_trial_is_recorded_and_the_study_goes_on(tmp_path, capsys):
    argv = tune_argv(tmp_path, "--n-trials", "2", "--objective", "eval/no_such_tag")
    study = tune.main(argv)
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.FAIL]
    out = capsys.readouterr().out
    assert out.count(" failed: no eval/no_such_tag in ") == 2
    assert "no complete trial yet: no best flags" in out

    # no trial completed with these fixed flags: the study takes others, and says so
    other = ["--total-episodes", "200", "--eval-episodes", "20"]
    study = tune.main(tune_argv(tmp_path, "--n-trials", "0", "--objective", "eval/no_such_tag", fixed=other))
    out = capsys.readouterr().out
    assert f"study {STUDY} has no complete trial (2 failed trials): it goes on with the new fixed flags\n" in out
    assert study.user_attrs["settings"]["fixed flags"] == shlex.join(other)


@pytest.mark.parametrize(
    "space, fixed, refused",
    [
        ("learning-rate=0.05:1:log", ["--env-id", "FrozenLak-v1", *QUICK], "the fixed flags (after --) --env-id FrozenLak-v1 "),
        ("learning-rate=0.5:1.5", QUICK, "--learning-rate 1.5, the highest values of the searched ranges"),
    ],
    ids=["fixed-flag-typo", "range-too-high"],
)  # fmt: skip
def test_flags_the_script_refuses_stop_tune_before_the_study(tmp_path, capsys, space, fixed, refused):
    """The script's own checks run before the study: the flags it refuses are named, and nothing is created."""
    argv = tune_argv(tmp_path, fixed=fixed)
    argv[argv.index(SPACE[1]) : argv.index(SPACE[2]) + 1] = [space]
    with pytest.raises(SystemExit, match="2"):
        tune.main(argv)
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: dqn_frozenlake_tabular.py refused {refused}"), line
    searched = [] if "fixed" in refused else ["--learning-rate", "1.5"]
    assert line.split(": ", 2)[2].startswith(script_error(*fixed, *searched))
    assert optuna.get_all_study_names(f"sqlite:///{tmp_path / 'study.db'}") == []
    assert not (tmp_path / "runs").exists()


def test_a_trial_the_script_refuses_stops_the_study(tmp_path, capsys):
    """The lowest and highest values pass the checks, a value between them does not: the script's error line
    ends the study, naming the trial's flags. A study with no complete trial may then search other values."""
    argv = tune_argv(tmp_path, "--n-trials", "6", "--sampler-seed", "0")  # seed 0: the first trial is refused
    argv[argv.index(SPACE[1]) : argv.index(SPACE[2]) + 1] = ["learning-rate=0.5,1.5,2,3,0.9"]
    with pytest.raises(SystemExit, match="2"):
        tune.main(argv)
    (line,) = capsys.readouterr().err.splitlines()
    (refused,) = load_study(tmp_path).trials  # --sampler-seed 0 draws a refused value first
    assert refused.state == TrialState.FAIL and refused.params["learning-rate"] in (1.5, 2, 3)
    flags = ["--learning-rate", refused.user_attrs["flags"].split()[1]]
    assert line.startswith(f"error: dqn_frozenlake_tabular.py refused the flags of trial {refused.number}, {shlex.join(flags)}: ")
    assert script_error(*QUICK, *flags) in line

    argv[argv.index("learning-rate=0.5,1.5,2,3,0.9")] = "learning-rate=0.5,0.9"
    tune.main([*argv[: argv.index("--")], "--n-trials", "0", *argv[argv.index("--") :]])
    assert f"study {STUDY} has no complete trial (1 failed trial): it goes on with the new search space\n" in capsys.readouterr().out


# Issue 28: workers started at once on a new storage
hide_heartbeat_warning = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # as tune.main does


@hide_heartbeat_warning
def test_workers_started_together_on_a_new_storage_all_open_it(tmp_path):
    """Each worker creates the new SQLite file's tables: most of them failed with 'table studies already exists'
    or 'UNIQUE constraint failed: alembic_version.version_num'. Threads, so that they start at the same instant."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    start, outcomes = threading.Barrier(4), []

    def worker():
        start.wait()
        try:
            outcomes.append(type(tune.open_storage(url, heartbeat=10)).__name__)
        except tune.UsageError as e:
            outcomes.append(str(e))

    workers = [threading.Thread(target=worker, daemon=True) for _ in range(4)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(timeout=60)
    assert outcomes == ["RDBStorage"] * 4
    assert optuna.create_study(storage=url).trials == []  # the storage they made works


@hide_heartbeat_warning
@pytest.mark.parametrize("storage", ["race", "no-such-folder"])
def test_only_a_storage_being_created_is_opened_again(tmp_path, monkeypatch, storage):
    """A worker that loses the race to create the storage tries again; a storage that cannot open is said at
    once, with its own cause."""
    rdb_storage, calls = optuna.storages.RDBStorage, []

    def first_two_lose_the_race(url, **kwargs):
        calls.append(url)
        if storage == "race" and len(calls) <= 2:
            orig = sqlite3.IntegrityError("UNIQUE constraint failed: alembic_version.version_num")
            raise sqlalchemy.exc.IntegrityError("INSERT INTO alembic_version (version_num) VALUES (?)", None, orig)
        return rdb_storage(url, **kwargs)

    monkeypatch.setattr(optuna.storages, "RDBStorage", first_two_lose_the_race)
    folder = tmp_path if storage == "race" else tmp_path / "no" / "such" / "folder"
    url = f"sqlite:///{folder / 'study.db'}"
    if storage == "race":
        assert isinstance(tune.open_storage(url, heartbeat=10), rdb_storage) and len(calls) == 3
    else:
        with pytest.raises(tune.UsageError, match=r"does not open \(\(sqlite3.OperationalError\) unable to open database file\)"):
            tune.open_storage(url, heartbeat=10)
        assert len(calls) == 1
