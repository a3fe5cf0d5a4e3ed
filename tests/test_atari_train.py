"""Training with dqn_atari.py / ddqn_atari.py: the TD target, the epsilon schedule, learning on a tiny
image game, a short real Atari run (TensorBoard tags, saved model, --eval-only, determinism), and the
command line (bad input, --track, --capture-video, Ctrl-C) in subprocesses.

The expensive tests (Atari runs, subprocesses) run dqn_atari.py only: outside the TD-target block the two
scripts are byte-identical (tests/test_ddqn_diff.py), and the TD target is tested here for both.
"""

import math
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

import dqn_atari
from games import scalars, side_game, train_on_side_game
from helpers import ctrl_c_a_run, last_line_of_the_run

pytestmark = pytest.mark.usefixtures("single_thread")

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "dqn_atari.py"
TAGS = [
    "charts/episodic_return",
    "charts/episodic_length",
    "charts/SPS",
    "charts/epsilon",
    "losses/td_loss",
    "losses/q_values",
    "eval/episodic_return",
]


# epsilon schedule
def test_exploration_fraction_zero_means_no_decay(algo):
    """As in Stable-Baselines3: --exploration-fraction 0 is end-e from the first step, not an error."""
    assert algo.linear_schedule(1.0, 0.05, 0, 0) == algo.linear_schedule(1.0, 0.05, 0.0, 10_000) == 0.05
    algo.check_args(algo.Args(exploration_fraction=0.0))


def test_linear_schedule_endpoints_and_midpoint(algo):
    assert algo.linear_schedule(1.0, 0.01, 1000, 0) == pytest.approx(1.0)
    assert algo.linear_schedule(1.0, 0.01, 1000, 500) == pytest.approx(0.505)
    assert algo.linear_schedule(1.0, 0.01, 1000, 1000) == pytest.approx(0.01)
    assert algo.linear_schedule(1.0, 0.01, 1000, 5000) == pytest.approx(0.01), "epsilon stays at end_e"
    assert algo.linear_schedule(0.5, 0.1, 200.0, 50) == pytest.approx(0.4)


# TD target
class FixedQ(nn.Module):
    """Q-values looked up by the row number painted into the newest frame; a parameter makes the output
    require a gradient unless the target is computed under no_grad."""

    def __init__(self, table):
        super().__init__()
        self.table = torch.tensor(table, dtype=torch.float32)
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):
        return self.table[x[:, -1, 0, 0].long()] * self.scale


ONLINE = [[1.0, 5.0, 2.0], [0.0, -1.0, 3.0], [4.0, 0.0, 1.0], [2.0, 8.0, 0.0]]
TARGET = [[10.0, 3.0, 4.0], [2.0, 7.0, 1.0], [0.0, 9.0, 6.0], [5.0, 1.0, 2.0]]
OTHER = [[-50.0, 40.0, 0.0]] * 8  # what the networks say for rows 4..7, the observations s (not s')


def expected_td_target(name, rewards, dones, gamma):
    online, target = np.array(ONLINE), np.array(TARGET)
    if name == "dqn_atari":  # r + gamma * max_a Q_target(s', a)
        next_value = target.max(axis=1)
    else:  # r + gamma * Q_target(s', argmax_a Q_online(s', a))
        next_value = target[np.arange(len(target)), online.argmax(axis=1)]
    return rewards + gamma * next_value * (1 - dones)


def test_td_target_on_a_hand_made_batch(algo):
    rewards = np.array([1.0, -1.0, 0.5, 2.0])
    dones = np.array([0.0, 0.0, 1.0, 0.0])
    gamma = 0.9
    dqn = expected_td_target("dqn_atari", rewards, dones, gamma)
    ddqn = expected_td_target("ddqn_atari", rewards, dones, gamma)
    assert not np.isclose(dqn[[0, 1, 3]], ddqn[[0, 1, 3]]).any(), "the batch must tell DQN and Double DQN apart"
    assert dqn[2] == ddqn[2] == 0.5, "a terminal transition's target is its reward"

    def frames(rows):
        x = torch.zeros((len(rows), 4, 84, 84), dtype=torch.uint8)
        x[:, -1, 0, 0] = torch.tensor(rows)
        return x

    batch = algo.ReplayBatch(
        observations=frames([4, 5, 6, 7]),
        actions=torch.tensor([[0], [1], [2], [0]]),
        rewards=torch.tensor(rewards, dtype=torch.float32),
        next_observations=frames([0, 1, 2, 3]),
        dones=torch.tensor(dones, dtype=torch.float32),
    )
    q_network, target_network = FixedQ(ONLINE + OTHER), FixedQ(TARGET + OTHER)
    td_target = algo.compute_td_target(q_network, target_network, batch, gamma)
    assert td_target.shape == (4,)
    assert not td_target.requires_grad, "the target must be a fixed number (no gradient through it)"
    np.testing.assert_allclose(td_target.numpy(), expected_td_target(algo.__name__, rewards, dones, gamma), rtol=1e-6)


def test_q_network_output_shape(algo):
    q_network = algo.QNetwork(6)
    obs = torch.randint(0, 256, (2, 4, 84, 84), dtype=torch.uint8)
    assert q_network(obs).shape == (2, 6)


# learning on a tiny image game
def make_side_game(env_id, seed, video_folder=None, training=True):
    return side_game(seed)



def test_learns_to_pick_the_side_of_the_square(algo, tmp_path):
    """400 one-step episodes of experience; 100% after 300 steps in trials, so 400 steps and a 90% bar leave
    a wide margin. Cheap enough to run for both scripts."""
    _, accuracy = train_on_side_game(algo, tmp_path, make_side_game)
    assert accuracy >= 0.9, f"the greedy policy picks the right side on only {accuracy:.0%} of fresh frames"


def test_the_courses_deque_can_replace_the_replay_buffer(tmp_path, monkeypatch):
    """SimpleReplayBuffer's docstring: put in place of ReplayBuffer, train() runs and learns as well."""
    monkeypatch.setattr(dqn_atari, "ReplayBuffer", dqn_atari.SimpleReplayBuffer)
    _, accuracy = train_on_side_game(dqn_atari, tmp_path, make_side_game)
    assert accuracy >= 0.9, f"the greedy policy picks the right side on only {accuracy:.0%} of fresh frames"


# a short real Atari run, twice
SPACE_INVADERS_RUN = dict(
    env_id="SpaceInvadersNoFrameskip-v4", total_timesteps=2000, learning_starts=500, buffer_size=2000, batch_size=8,
    exploration_fraction=1.0, target_network_frequency=500, save_model=True, eval_episodes=1, cuda=False,
)  # fmt: skip


@pytest.fixture(scope="module")
def space_invaders_runs(tmp_path_factory, single_thread):
    """Two in-process runs with the same seed and arguments, each in its own folder. 2,000 steps hold
    2-4 games at mostly random play (a random game of Space Invaders lasts 500-900 agent steps) and 375
    gradient steps (td_loss is logged every 100). dqn_atari.py only (see the module docstring)."""
    runs = []
    for name in ("a", "b"):
        folder = tmp_path_factory.mktemp(f"space_invaders_{name}")
        with pytest.MonkeyPatch.context() as mp:
            mp.chdir(folder)
            result = dqn_atari.train(dqn_atari.Args(**SPACE_INVADERS_RUN))
        runs.append((folder, result, scalars(folder / "runs" / result["run_name"])))
    return runs


def test_training_run_logs_every_tag_and_saves_the_model(space_invaders_runs):
    folder, result, logged = space_invaders_runs[0]
    missing = [tag for tag in TAGS if not logged.get(tag)]
    assert not missing, f"tags never written: {missing}"
    assert all(r >= 0 for _, r in logged["charts/episodic_return"])
    assert all(length > 0 for _, length in logged["charts/episodic_length"])
    assert all(sps > 0 for _, sps in logged["charts/SPS"])
    for step, epsilon in logged["charts/epsilon"]:  # the schedule over the whole run (exploration_fraction 1)
        assert epsilon == pytest.approx(dqn_atari.linear_schedule(1.0, 0.01, 2000, step), abs=1e-3)
    assert all(math.isfinite(v) and v >= 0 for _, v in logged["losses/td_loss"])
    assert all(math.isfinite(v) for _, v in logged["losses/q_values"])
    assert len(logged["losses/td_loss"]) >= 3
    assert [r for _, r in logged["eval/episodic_return"]] == result["eval_returns"]
    assert len(result["eval_returns"]) == 1

    model_path = folder / result["model_path"]
    assert model_path.is_file() and model_path.parent == folder / "runs" / result["run_name"]
    q_network, saved_args = dqn_atari.load_model(str(model_path), torch.device("cpu"))
    assert saved_args["env_id"] == "SpaceInvadersNoFrameskip-v4"
    assert q_network(torch.zeros((1, 4, 84, 84), dtype=torch.uint8)).shape == (1, 6)


def test_eval_only_replays_the_evaluation_of_the_saved_model(space_invaders_runs, tmp_path, monkeypatch, capsys):
    """--eval-only with the run's seed plays the same games as the evaluation at the end of training."""
    folder, result, _ = space_invaders_runs[0]
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    dqn_atari.main(["--eval-only", str(folder / result["model_path"]), "--eval-episodes", "1", "--no-cuda"])
    out = capsys.readouterr().out
    scores = re.findall(r"evaluation over 1 game: (-?[\d.]+)", out)
    assert scores, out
    assert float(scores[0]) == pytest.approx(result["eval_returns"][0])
    assert not (tmp_path / "runs").exists(), "--eval-only must not start a training run folder"


def test_eval_only_takes_a_run_folder(space_invaders_runs, tmp_path, monkeypatch, capsys):
    """--eval-only runs/<run>: the model in the folder (the newest, the checkpoint aside); none: one error line."""
    folder, result, _ = space_invaders_runs[0]
    run_dir = tmp_path / "runs" / result["run_name"]
    run_dir.mkdir(parents=True)
    shutil.copy(folder / result["model_path"], run_dir / "older.pt")
    shutil.copy(folder / result["model_path"], run_dir / "dqn_atari.pt")
    (run_dir / "checkpoint.pt").write_bytes(b"a checkpoint is no model")
    os.utime(run_dir / "older.pt", (1, 1))
    monkeypatch.chdir(tmp_path)
    assert dqn_atari.resolve_model_path(f"runs/{result['run_name']}") == f"runs/{result['run_name']}/dqn_atari.pt"
    returns = dqn_atari.eval_only(dqn_atari.Args(eval_only=f"runs/{result['run_name']}", eval_episodes=1, cuda=False))
    assert returns == result["eval_returns"]
    for model in run_dir.glob("*.pt"):
        model.unlink()
    with pytest.raises(dqn_atari.UsageError, match="no model saved by an Atari script here at"):
        dqn_atari.eval_only(dqn_atari.Args(eval_only=f"runs/{result['run_name']}", cuda=False))


def scores_printed(out):
    return [float(score) for score in re.findall(r"^evaluation over \d+ games?: (-?[\d.]+)", out, re.M)]


def test_eval_only_refuses_another_game(space_invaders_runs, tmp_path, monkeypatch, capsys):
    """A Space Invaders network cannot play Pong: --env-id of another game is one error line, even when that game
    is the default one (the Pong agent in models/ and a typed --env-id SpaceInvadersNoFrameskip-v4); --env-id of
    the model's own game is no contradiction."""
    folder, result, _ = space_invaders_runs[0]
    model = str(folder / result["model_path"])
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        dqn_atari.main(["--eval-only", model, "--env-id", "PongNoFrameskip-v4", "--no-cuda"])
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert "SpaceInvadersNoFrameskip-v4" in lines[0] and "PongNoFrameskip-v4" in lines[0], lines[0]
    assert not scores_printed(out), "nothing may be played"
    with pytest.raises(SystemExit) as exit_info:
        dqn_atari.main(["--eval-only", str(ROOT / "models" / "dqn_atari_PongNoFrameskip-v4.pt"), "--env-id",
                        "SpaceInvadersNoFrameskip-v4", "--no-cuda"])
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2 and err.count("\n") == 1 and "trained on PongNoFrameskip-v4" in err, err
    assert not scores_printed(out), "nothing may be played"
    dqn_atari.main(["--eval-only", model, "--env-id", "SpaceInvadersNoFrameskip-v4", "--eval-episodes", "1", "--no-cuda"])
    assert scores_printed(capsys.readouterr().out) == result["eval_returns"]
    assert not (tmp_path / "runs").exists()


def test_the_printed_eval_only_command_replays_the_score_of_a_seed_3_run(tmp_path, monkeypatch, capsys):
    """The run prints how to evaluate its model, and that command plays its evaluation's games (the seed
    saved with the model, 3, not the default 1): the same score. --seed picks other games, even --seed 1."""
    monkeypatch.chdir(tmp_path)
    dqn_atari.main(["--save-model", "--seed", "3", "--eval-episodes", "1", "--no-cuda", *TINY_RUN])
    out = capsys.readouterr().out
    commands = re.findall(r"^evaluate it with: python dqn_atari.py ([^;]*);", out, re.M)
    assert len(commands) == 1 and len(scores_printed(out)) == 1, out
    dqn_atari.main([*shlex.split(commands[0]), "--eval-episodes", "1", "--no-cuda"])
    replayed = capsys.readouterr().out
    assert scores_printed(replayed) == scores_printed(out) and ", seed 3" in replayed, replayed

    dqn_atari.main([*shlex.split(commands[0]), "--eval-episodes", "1", "--no-cuda", "--seed", "2"])
    typed = capsys.readouterr().out
    q_network, _ = dqn_atari.load_model(shlex.split(commands[0])[1], torch.device("cpu"))
    seed_2 = dqn_atari.evaluate(q_network, "SpaceInvadersNoFrameskip-v4", 1, torch.device("cpu"), seed=2)
    assert scores_printed(typed) == seed_2 and ", seed 2" in typed, typed
    dqn_atari.main([*shlex.split(commands[0]), "--eval-episodes", "1", "--no-cuda", "--seed", "1"])  # the default, typed
    assert ", seed 1" in capsys.readouterr().out


def test_same_seed_same_run(space_invaders_runs):
    (_, result_a, logged_a), (_, result_b, logged_b) = space_invaders_runs
    for tag in ("losses/td_loss", "losses/q_values", "charts/episodic_return", "charts/episodic_length"):
        assert logged_a[tag] == logged_b[tag], tag
    assert result_a["eval_returns"] == result_b["eval_returns"]


# the command line, as a user runs it
def run_script(args, cwd, env, timeout=120):
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


BAD_INPUT = {
    # gymnasium's own hint: the versions that exist of the id's name
    "unknown env id": (["--env-id", "SpaceInvadersNoFrameskip-v5"], lambda msg: "`v4`" in msg),
    "non-Atari env id": (["--env-id", "CartPole-v1"], lambda msg: "CartPole-v1" in msg),
    "env id without a version": (["--env-id", "Pong"], lambda msg: "'Pong' (No registered env with id: Pong): ids" in msg),
    "learning never starts": (["--learning-starts", "1000", "--total-timesteps", "1000"], lambda msg: "--learning-starts" in msg),
    "batch larger than buffer": (["--batch-size", "64", "--buffer-size", "32"], lambda msg: "--batch-size" in msg),
    "zero learning rate": (["--learning-rate", "0"], lambda msg: "--learning-rate" in msg),
    "negative learning rate": (["--learning-rate=-0.0001"], lambda msg: "--learning-rate" in msg),
    "buffer larger than memory": (["--buffer-size", str(10**9)], lambda msg: "--buffer-size 1,000,000,000" in msg and "GB" in msg),
    "eval-only missing file": (["--eval-only", "missing.pt"], lambda msg: "missing.pt" in msg),
    "eval-only garbage file": (["--eval-only", "garbage.pt"], lambda msg: "garbage.pt" in msg),
    # a path under runs/ is a file, never a Hub repo id: no network call, no retry messages
    "eval-only missing run folder": (["--eval-only", "runs/nonexistent"], lambda msg: "runs/nonexistent" in msg),
    # a Hub repo id that cannot be reached (no network here) or does not exist: one line, not the client's retries
    "eval-only unreachable Hub repo": (["--eval-only", "someone/no-such-model"], lambda msg: "someone/no-such-model" in msg),
    "negative exploration fraction": (["--exploration-fraction=-0.1"], lambda msg: "--exploration-fraction" in msg),
}


@pytest.fixture(scope="module")
def bad_input_runs(tmp_path_factory, subprocess_env):
    """All bad-input runs at once (each one mostly waits on imports): {case: (cwd, CompletedProcess-like)}."""
    started = {}
    for case, (args, _) in BAD_INPUT.items():
        cwd = tmp_path_factory.mktemp("bad_input")
        (cwd / "garbage.pt").write_bytes(b"not a model\x00\x01" * 100)
        proc = subprocess.Popen([sys.executable, str(SCRIPT), *args], cwd=cwd, env=subprocess_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started[case] = (cwd, proc)
    results = {}
    for case, (cwd, proc) in started.items():
        try:
            out, err = proc.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        results[case] = (cwd, proc.returncode, out, err)
    return results


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_one_error_line_and_exit_code_2(bad_input_runs, case):
    cwd, returncode, out, err = bad_input_runs[case]
    assert "Traceback" not in err + out, err
    assert returncode == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), f"stderr should be one 'error:' line:\n{err}"
    assert BAD_INPUT[case][1](lines[0]), f"the message does not help: {lines[0]}"
    assert sorted(p.name for p in cwd.iterdir()) == ["garbage.pt"], "nothing may be written (no runs/, videos/, ...)"


@pytest.mark.parametrize(
    "argv, message",
    [  # the format the four programs share; "did you mean" only for a close flag name
        (["--n-trails", "3"], "unknown option --n-trails: see python dqn_atari.py --help"),
        (["--sed=3"], "unknown option --sed: did you mean --seed?"),
        (["--seed", "3", "4"], "unknown option 4: see python dqn_atari.py --help"),
    ],
    ids=["misspelled option", "misspelled flag", "stray argument"],
)
def test_an_unknown_option_is_one_error_line(argv, message, capsys):
    """Parsed before anything is done (so nothing is written): in-process, without a subprocess's imports."""
    with pytest.raises(SystemExit) as exit_info:
        dqn_atari.main(argv)
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2 and err == f"error: {message}\n" and out == "", err


@pytest.mark.parametrize(
    "given, expected",
    [({}, "1000"), ({"GOMP_SPINCOUNT": "5"}, "5"), ({"OMP_WAIT_POLICY": "PASSIVE"}, "None")],
    ids=["default", "your spin count", "your wait policy"],
)
def test_openmp_threads_spin_briefly_unless_you_set_it(given, expected, subprocess_env):
    """The three Atari scripts shorten the spinning of torch's OpenMP threads before torch loads (beside two busy
    processes, 2.4x slower without it); a setting of the user's own stays as it is."""
    env = {k: v for k, v in subprocess_env.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")} | given
    for script in ("dqn_atari", "ddqn_atari", "dqn_atari_fast"):
        probe = f"import os, sys; import {script}; print(os.environ.get('GOMP_SPINCOUNT'))"
        out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert out.stdout.strip() == expected, (script, out.stdout, out.stderr[-500:])
    source = SCRIPT.read_text()
    assert source.index('os.environ.setdefault("GOMP_SPINCOUNT"') < source.index("import torch"), "torch loads OpenMP"


def test_help_lists_the_flags(capsys):
    with pytest.raises(SystemExit) as exit_info:
        dqn_atari.main(["--help"])
    assert exit_info.value.code == 0 and "--eval-only" in capsys.readouterr().out


TINY_RUN = ["--total-timesteps", "64", "--learning-starts", "16", "--buffer-size", "64", "--batch-size", "4"]


def test_track_with_wandb_offline(tmp_path, subprocess_env):
    """Also the quietest run: no checkpoint, no evaluation; it still keeps its model, and its last line names its folder."""
    wandb_dir = tmp_path / "wandb-dir"
    env = dict(subprocess_env, WANDB_MODE="offline", WANDB_DIR=str(wandb_dir), WANDB_CONFIG_DIR=str(tmp_path / "wandb-config"),
               WANDB_CACHE_DIR=str(tmp_path / "wandb-cache"), WANDB_DATA_DIR=str(tmp_path / "wandb-data"))  # fmt: skip
    result = run_script(["--track", "--checkpoint-frequency", "0", *TINY_RUN], tmp_path, env)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    offline_runs = list((wandb_dir / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1, list(wandb_dir.rglob("*"))
    assert [f for f in offline_runs[0].glob("run-*.wandb") if f.stat().st_size > 0]
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert last_line_of_the_run(result.stdout, run_dir).endswith(": TensorBoard events, the model dqn_atari.pt")
    assert [p.name for p in run_dir.iterdir() if not p.name.startswith("events.out.tfevents.")] == ["dqn_atari.pt"]


def test_capture_video_records_training_and_evaluation(tmp_path, subprocess_env):
    """As a user runs it: no "Overwriting existing videos" warning for a new folder; one video of the one
    evaluation game (no clip of a game started after it, which the Hub and wandb would show as the replay)."""
    result = run_script(["--capture-video", "--save-model", "--eval-episodes", "1", "--no-cuda", *TINY_RUN], tmp_path, subprocess_env)
    out, err = result.stdout, result.stderr
    assert result.returncode == 0 and "Overwriting existing videos" not in err, err
    (run_dir,) = (tmp_path / "runs").iterdir()
    last = last_line_of_the_run(out, run_dir)
    assert "the checkpoint of step 64" in last and "the model dqn_atari.pt" in last, last
    assert (run_dir / "checkpoint.pt").is_file() and (run_dir / "dqn_atari.pt").is_file()
    videos = {folder.name: sorted(folder.glob("*.mp4")) for folder in (tmp_path / "videos").iterdir()}
    assert videos.get(run_dir.name), f"no training video: {videos}"
    eval_videos = videos.get(f"{run_dir.name}-eval")
    assert eval_videos and len(eval_videos) == 1, f"evaluation videos: {eval_videos}"
    assert all(v.stat().st_size > 1000 for vs in videos.values() for v in vs)


def test_ctrl_c_saves_the_model_and_exits_cleanly(tmp_path, subprocess_env):
    """Ctrl-C on a terminal signals the whole process group: the run stops after its step, writes its checkpoint
    and its model, says how to go on, and leaves no process behind."""
    stdout, run_dir = ctrl_c_a_run(SCRIPT, tmp_path, subprocess_env)
    models = list(run_dir.glob("*.pt"))
    assert sorted(m.name for m in models) == ["checkpoint.pt", "dqn_atari.pt"], stdout
    models = [run_dir / "dqn_atari.pt"]
    q_network, saved_args = dqn_atari.load_model(str(models[0]), torch.device("cpu"))
    assert saved_args["total_timesteps"] == 10_000_000
    assert q_network(torch.zeros((1, 4, 84, 84), dtype=torch.uint8)).shape == (1, 6)
