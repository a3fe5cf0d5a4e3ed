"""Training with dqn_atari.py / ddqn_atari.py: the TD target, the epsilon schedule, learning on a tiny
image game, a short real Atari run (TensorBoard tags, saved model, --eval-only, determinism), and the
command line (bad input, --track, --capture-video, Ctrl-C) in subprocesses.

The expensive tests (Atari runs, subprocesses) run dqn_atari.py only: outside the TD-target block the two
scripts are byte-identical (tests/test_ddqn_diff.py), and the TD target is tested here for both.
"""

import copy
import logging
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn as nn
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import dqn_atari
from helpers import last_line_of_the_run, live_processes_in_group, processes_left_in_group

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


def scalars(run_dir):
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


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
class SideGame(gym.Env):
    """A bright square on the left or the right of a noisy 84x84 frame; the action that names the side
    (0: left, 1: right) pays 1, the other 0; one-step episodes."""

    observation_space = gym.spaces.Box(0, 255, (84, 84), np.uint8)
    action_space = gym.spaces.Discrete(2)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.side = int(self.np_random.integers(2))
        self.obs = self.np_random.integers(0, 40, (84, 84), dtype=np.uint8)
        y, x = self.np_random.integers(0, 84 - 16), self.np_random.integers(0, 42 - 16) + 42 * self.side
        self.obs[y : y + 16, x : x + 16] = 255
        return self.obs, {}

    def step(self, action):
        return self.obs, float(action == self.side), True, False, {}


def make_side_game(env_id, seed, idx, capture_video, run_name, training=True):
    def thunk():
        env = gym.wrappers.FrameStackObservation(gym.wrappers.RecordEpisodeStatistics(SideGame()), 4)
        env.action_space.seed(seed)
        return env

    return thunk


SIDE_GAME_RUN = dict(
    env_id="SideGame", total_timesteps=400, learning_starts=64, batch_size=16, buffer_size=1000,
    train_frequency=1, learning_rate=1e-3, exploration_fraction=0.5, end_e=0.05,
    target_network_frequency=100, save_model=True, eval_episodes=0, cuda=False,
)  # fmt: skip


def train_on_side_game(algo, folder, **flags):
    """Train on SideGame in `folder`; returns the losses logged and the trained network's accuracy
    (the share of 200 fresh frames whose side the greedy policy names)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        result = algo.train(algo.Args(**SIDE_GAME_RUN, **flags), make_env=make_side_game)
    q_network, _ = algo.load_model(str(folder / result["model_path"]), torch.device("cpu"))
    game = SideGame()
    game.reset(seed=12345)  # fresh frames: the training games were seeded with args.seed
    obs, sides = [], []
    for _ in range(200):
        frame, _ = game.reset()
        obs.append(np.stack([frame] * 4))  # a first observation: the frame, repeated
        sides.append(game.side)
    with torch.no_grad():
        actions = q_network(torch.as_tensor(np.array(obs))).argmax(dim=1).numpy()
    assert 0.2 < np.mean(sides) < 0.8
    losses = [v for _, v in scalars(folder / "runs" / result["run_name"])["losses/td_loss"]]
    return losses, np.mean(actions == np.array(sides))


def test_learns_to_pick_the_side_of_the_square(algo, tmp_path):
    """~200 one-step episodes of experience (half the steps are autoreset steps); 100% after 300 steps
    in trials, so 400 steps and a 90% bar leave a wide margin. Cheap enough to run for both scripts."""
    _, accuracy = train_on_side_game(algo, tmp_path)
    assert accuracy >= 0.9, f"the greedy policy picks the right side on only {accuracy:.0%} of fresh frames"


def test_compiled_gradient_step_is_the_eager_one_and_learns(tmp_path):
    """--compile (torch.compile of the gradient step; on a GPU, CUDA graphs) changes how the step runs, not
    what it computes. What must be equal is compared where it must be: one step on the same batch from the
    same network gives the same loss, gradients and Adam update, up to float32 rounding (fused kernels sum in
    another order). Whole runs are not compared: Adam turns rounding-sized gradient differences into lr-sized
    steps, so two runs drift apart (their losses were 2.6% apart after 336 steps on a 2-core AMD EPYC);
    the compiled run must learn the game instead. dqn_atari.py only (see the module docstring); compiling
    takes ~30 s on the CPU, once: the one-step comparison reuses the run's compiled step (same shapes).
    Torch's warning that the optimizer's profiler labels are left out of the compiled step is not shown."""
    warned = []  # the run compiles first, so that its tracing is what could warn
    handler = logging.Handler()
    handler.emit = lambda record: warned.append(record.getMessage())
    logger = logging.getLogger("torch._dynamo.variables.ctx_manager")
    logger.addHandler(handler)
    torch._logging._internal.warning_once.cache_clear()  # torch warns once a process: this run could warn again
    try:
        _, accuracy = train_on_side_game(dqn_atari, tmp_path, compile=True)
    finally:
        logger.removeHandler(handler)
    assert not [message for message in warned if "Profiler record function" in message], warned
    assert accuracy >= 0.9, f"the compiled path picks the right side on only {accuracy:.0%} of fresh frames"

    rng = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (16, 5, 84, 84), dtype=torch.uint8, generator=rng)
    batch = dqn_atari.ReplayBatch(  # SIDE_GAME_RUN's shapes and learning rate: the run's compiled step is reused
        observations=frames[:, :4], next_observations=frames[:, 1:], actions=torch.randint(2, (16, 1), generator=rng),
        rewards=torch.randn(16, generator=rng), dones=(torch.rand(16, generator=rng) < 0.3).float(),
    )  # fmt: skip
    torch.manual_seed(0)
    start = dqn_atari.QNetwork(2).to(memory_format=torch.channels_last)

    def one_step(step):  # from the same network, on the same batch
        q_network, target_network = copy.deepcopy(start), copy.deepcopy(start)
        optimizer = torch.optim.Adam(q_network.parameters(), lr=SIDE_GAME_RUN["learning_rate"], fused=True)
        loss, q_mean = step(q_network, target_network, optimizer, batch, 0.99)
        return q_network, optimizer, loss, q_mean

    eager, _, eager_loss, eager_q = one_step(dqn_atari.gradient_step)
    compiled, _, loss, q_mean = one_step(torch.compile(dqn_atari.gradient_step))
    # float32 sums of up to ~10^4 terms, added in another order: relative errors up to ~1e-4 of the largest
    torch.testing.assert_close(loss, eager_loss, rtol=1e-4, atol=0)
    torch.testing.assert_close(q_mean, eager_q, rtol=1e-4, atol=1e-6)
    for (name, p), e in zip(compiled.named_parameters(), eager.parameters()):
        torch.testing.assert_close(p.grad, e.grad, rtol=1e-4, atol=1e-4 * e.grad.abs().max().item(), msg=name)
    # Adam's first step is lr * g / (|g| + eps): a rounding-sized difference in a near-zero gradient can flip
    # its sign, so the update is checked from the compiled step's own gradients, by the eager optimizer
    expected = copy.deepcopy(start)
    for p, c in zip(expected.parameters(), compiled.parameters()):
        p.grad = c.grad.clone()
    torch.optim.Adam(expected.parameters(), lr=SIDE_GAME_RUN["learning_rate"], fused=True).step()
    for (name, p), e in zip(compiled.named_parameters(), expected.parameters()):
        torch.testing.assert_close(p, e, msg=name)  # float32 tolerances; the step moved each weight by ~lr (1e-3)


def test_progress_bar_shows_the_figures_of_the_step_it_shows(monkeypatch, capsys):
    """On a terminal, each redraw of the bar at step N shows step N's SPS and return, not the last update's."""
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    progress = dqn_atari.Progress(3000)
    progress.bar.mininterval = 0  # tqdm redraws at most every 0.1 s: here at every update
    for step in (1000, 2000, 3000):
        progress.update(step, sps=step // 10, recent_return=step / 100, epsilon=0.5)
    progress.close()
    drawn = [text for text in capsys.readouterr().err.split("\r") if re.search(r"\b[123]000/3000", text)]
    assert len(drawn) >= 3, drawn
    for text in drawn:
        step = int(re.search(r"\b([123]000)/3000", text)[1])
        assert f"SPS={step // 10} return={step / 100:.1f}" in text, text


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
    """--eval-only runs/<run>: the model in the folder; with several, the newest, and it says which."""
    folder, result, _ = space_invaders_runs[0]
    run_dir = tmp_path / "runs" / result["run_name"]
    run_dir.mkdir(parents=True)
    shutil.copy(folder / result["model_path"], run_dir / "older.pt")
    time.sleep(0.01)
    shutil.copy(folder / result["model_path"], run_dir / "dqn_atari.pt")
    os.utime(run_dir / "older.pt", (1, 1))
    monkeypatch.chdir(tmp_path)
    assert dqn_atari.resolve_model_path(f"runs/{result['run_name']}") == f"runs/{result['run_name']}/dqn_atari.pt"
    assert "older.pt, dqn_atari.pt): evaluating the newest, dqn_atari.pt" in capsys.readouterr().out
    (run_dir / "older.pt").unlink()
    returns = dqn_atari.eval_only(dqn_atari.Args(eval_only=f"runs/{result['run_name']}", eval_episodes=1, cuda=False))
    assert returns == result["eval_returns"]
    assert "models" not in capsys.readouterr().out, "one model: nothing to say"
    (run_dir / "dqn_atari.pt").unlink()
    with pytest.raises(dqn_atari.UsageError, match="no model in the folder"):
        dqn_atari.resolve_model_path(f"runs/{result['run_name']}")


def scores_printed(out):
    return [float(score) for score in re.findall(r"^evaluation over \d+ games?: (-?[\d.]+)", out, re.M)]


def test_eval_only_refuses_another_game_and_names_the_flags_it_ignores(space_invaders_runs, tmp_path, monkeypatch, capsys):
    """A Space Invaders network cannot play Pong: --env-id of another game is one error line. Flags that
    only shape training are ignored, and it says so; --env-id of the model's own game is no contradiction."""
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
    assert "SpaceInvadersNoFrameskip-v4" in lines[0] and "--env-id PongNoFrameskip-v4" in lines[0], lines[0]
    assert not scores_printed(out), "nothing may be played"

    dqn_atari.main(["--eval-only", model, "--env-id", "SpaceInvadersNoFrameskip-v4", "--eval-episodes", "1", "--no-cuda",
                    "--learning-rate", "0.1", "--num-envs=4"])  # fmt: skip
    out = capsys.readouterr().out
    said = [line for line in out.splitlines() if "ignores" in line]
    assert len(said) == 1 and "--learning-rate, --num-envs" in said[0] and "--env-id" not in said[0], out
    assert scores_printed(out) == result["eval_returns"]
    assert not (tmp_path / "runs").exists()


def test_typed_flags_are_read_from_the_command_line(algo):
    """What was typed, in each spelling tyro takes; a typed value equal to the default counts too."""
    argv = ["--eval-only", "runs/x", "--seed", "1", "--env-id=PongNoFrameskip-v4", "--no-cuda", "--exp_name", "--odd"]
    assert algo.typed_flags(argv) == {"eval_only", "seed", "env_id", "cuda", "exp_name"}
    assert algo.typed_flags([]) == set()


def test_the_printed_eval_only_command_replays_the_score_of_a_seed_3_run(tmp_path, monkeypatch, capsys):
    """The run prints how to evaluate its model, and that command plays its evaluation's games (the seed
    saved with the model, 3, not the default 1): the same score. A typed --seed still picks the games."""
    monkeypatch.chdir(tmp_path)
    dqn_atari.main(["--save-model", "--seed", "3", "--eval-episodes", "1", "--no-cuda", *TINY_RUN])
    out = capsys.readouterr().out
    commands = re.findall(r"^evaluate it with: python dqn_atari.py (.*)$", out, re.M)
    assert len(commands) == 1 and len(scores_printed(out)) == 1, out
    dqn_atari.main([*shlex.split(commands[0]), "--no-cuda"])
    replayed = capsys.readouterr().out
    assert scores_printed(replayed) == scores_printed(out), replayed
    assert "seed 3 (the seed of its run)" in replayed

    dqn_atari.main([*shlex.split(commands[0]), "--no-cuda", "--seed", "1"])
    typed = capsys.readouterr().out
    q_network, _ = dqn_atari.load_model(shlex.split(commands[0])[1], torch.device("cpu"))
    seed_1 = dqn_atari.evaluate(q_network, "SpaceInvadersNoFrameskip-v4", 1, "unused", torch.device("cpu"), seed=1)
    assert scores_printed(typed) == seed_1 and "seed 1 (--seed)" in typed, typed


def test_same_seed_same_run(space_invaders_runs):
    (_, result_a, logged_a), (_, result_b, logged_b) = space_invaders_runs
    for tag in ("losses/td_loss", "losses/q_values", "charts/episodic_return", "charts/episodic_length"):
        assert logged_a[tag] == logged_b[tag], tag
    assert result_a["eval_returns"] == result_b["eval_returns"]


def test_ale_vector_backend_trains_and_logs_whole_games(tmp_path, monkeypatch, capsys):
    """--env-backend ale-vector, 2 games of 1,000 steps: the run learns from its buffer and logs each ended
    game (all its lives: thousands of frames) as the gymnasium backend does. That the scores are the
    real ones is tested against the wrappers in test_atari_wrappers.py. Its games are not filmed: with
    --capture-video (and no evaluation here) it says so at the start, and records nothing."""
    monkeypatch.chdir(tmp_path)
    args = dqn_atari.Args(**{**SPACE_INVADERS_RUN, "env_backend": "ale-vector", "num_envs": 2, "eval_episodes": 0, "capture_video": True})
    result = dqn_atari.train(args)
    said = [line for line in capsys.readouterr().out.splitlines() if line.startswith("--capture-video")]
    assert len(said) == 1 and "films no training game" in said[0] and "no evaluation" in said[0], said
    assert not (tmp_path / "videos").exists()
    logged = scalars(tmp_path / "runs" / result["run_name"])
    assert len(logged["losses/td_loss"]) >= 3
    assert logged["charts/episodic_return"] and all(r > 0 for _, r in logged["charts/episodic_return"])
    assert all(length > 1000 for _, length in logged["charts/episodic_length"]), "a game, not a life"
    assert not result["interrupted"] and (tmp_path / result["model_path"]).is_file()


# the command line, as a user runs it
def run_script(args, cwd, env, timeout=120):
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def memory_total():
    with open("/proc/meminfo") as f:
        return int(next(line for line in f if line.startswith("MemTotal")).split()[1]) * 1024


BAD_INPUT = {
    # gymnasium's own hint: the versions that exist of the id's name
    "unknown env id": (["--env-id", "SpaceInvadersNoFrameskip-v5"], lambda msg: "`v4`" in msg),
    "non-Atari env id": (["--env-id", "CartPole-v1"], lambda msg: "CartPole-v1" in msg),
    "learning never starts": (["--learning-starts", "1000", "--total-timesteps", "1000"], lambda msg: "--learning-starts" in msg),
    "batch larger than buffer": (["--batch-size", "64", "--buffer-size", "32"], lambda msg: "--batch-size" in msg),
    "zero learning rate": (["--learning-rate", "0"], lambda msg: "--learning-rate" in msg),
    "negative learning rate": (["--learning-rate=-0.0001"], lambda msg: "--learning-rate" in msg),
    "buffer larger than memory": (
        ["--buffer-size", str(10**9)],
        lambda msg: any(0 < int(n) * dqn_atari.ReplayBuffer.bytes_per_slot((84, 84)) <= memory_total() for n in re.findall(r"--buffer-size (\d+)", msg)),
    ),
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
        (["--seed", "3", "4"], "unexpected argument 4: see python dqn_atari.py --help"),
    ],
    ids=["misspelled option", "misspelled flag", "stray argument"],
)
def test_an_unknown_option_is_one_error_line(argv, message, capsys):
    """Parsed before anything is done (so nothing is written): in-process, without a subprocess's imports."""
    with pytest.raises(SystemExit) as exit_info:
        dqn_atari.main(argv)
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2 and err == f"error: {message}\n" and out == "", err


def test_help_lists_the_flags(capsys):
    with pytest.raises(SystemExit) as exit_info:
        dqn_atari.main(["--help"])
    assert exit_info.value.code == 0 and "--eval-only" in capsys.readouterr().out


TINY_RUN = ["--total-timesteps", "64", "--learning-starts", "16", "--buffer-size", "64", "--batch-size", "4"]


def test_track_with_wandb_offline(tmp_path, subprocess_env):
    """Also the quietest run: no model, no checkpoint; it still ends naming its folder."""
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
    assert last_line_of_the_run(result.stdout, run_dir).endswith(": TensorBoard events, no model (--save-model saves one)")
    assert [p.name for p in run_dir.iterdir() if not p.name.startswith("events.out.tfevents.")] == [], "only the events"


def test_capture_video_records_training_and_evaluation(tmp_path, subprocess_env):
    """As a user runs it (in pytest, a game process's warnings would be caught, not printed): no
    "Overwriting existing videos" warning for a new folder. The last line names the run folder, its
    checkpoint, model and videos."""
    result = run_script(["--capture-video", "--save-model", "--eval-episodes", "1", "--no-cuda", *TINY_RUN], tmp_path, subprocess_env)
    out, err = result.stdout, result.stderr
    assert result.returncode == 0 and "Overwriting existing videos" not in err, err
    (run_dir,) = (tmp_path / "runs").iterdir()
    last = last_line_of_the_run(out, run_dir)
    assert "the checkpoint of step 64" in last and "the model dqn_atari.pt" in last, last
    assert last.endswith(f"; videos in videos/{run_dir.name}/ and videos/{run_dir.name}-eval/"), last
    assert (run_dir / "checkpoint.json").is_file() and (run_dir / "dqn_atari.pt").is_file()
    videos = {folder.name: sorted(folder.glob("*.mp4")) for folder in (tmp_path / "videos").iterdir()}
    assert videos.get(run_dir.name), f"no training video: {videos}"
    # one game evaluated, one video: no clip of a game started after the last one (the Hub and wandb
    # would show it as the agent's replay)
    eval_videos = videos.get(f"{run_dir.name}-eval")
    assert eval_videos and len(eval_videos) == 1, f"evaluation videos: {eval_videos}"
    assert all(v.stat().st_size > 1000 for vs in videos.values() for v in vs)


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_game_processes_ignore_stop_signals(stop_signal):
    """Ctrl-C (and a scheduler's SIGTERM, `kill -- -PGID`, `pkill -f`) reaches the game processes too;
    they must keep serving the main process, which saves the model and closes them in order (the
    whole-run test below cannot always see this: it depends on when the signal lands)."""
    envs = gym.vector.AsyncVectorEnv(
        [dqn_atari.make_env("PongNoFrameskip-v4", 0, 0, False, "test")], autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP
    )
    try:
        envs.reset(seed=0)
        for process in envs.processes:
            os.kill(process.pid, stop_signal)
        time.sleep(0.5)
        for _ in range(3):
            obs, *_ = envs.step(np.zeros(1, dtype=np.int64))
        assert obs.shape == (1, 4, 84, 84)
        assert all(process.is_alive() for process in envs.processes)
    finally:
        envs.close(terminate=True)


def test_ctrl_c_saves_the_model_and_exits_cleanly(tmp_path, subprocess_env):
    """Ctrl-C on a terminal signals the whole process group: the script and its game processes."""
    out_file, err_file = open(tmp_path / "stdout.txt", "w"), open(tmp_path / "stderr.txt", "w")
    args = ["--total-timesteps", "10000000", "--buffer-size", "1000", "--learning-starts", "100", "--batch-size", "8"]
    proc = subprocess.Popen([sys.executable, str(SCRIPT), *args], cwd=tmp_path, env=subprocess_env, stdout=out_file,
                            stderr=err_file, start_new_session=True)  # fmt: skip
    try:
        deadline = time.time() + 120
        while not list(tmp_path.glob("runs/*/events.out.tfevents.*")):
            assert proc.poll() is None, (tmp_path / "stderr.txt").read_text()
            assert time.time() < deadline, "the run never started"
            time.sleep(0.2)
        time.sleep(4)  # the games start and the network learns for a few hundred steps
        assert proc.poll() is None, (tmp_path / "stderr.txt").read_text()
        os.killpg(proc.pid, signal.SIGINT)
        returncode = proc.wait(timeout=120)
        orphans = processes_left_in_group(proc.pid)
    finally:
        if proc.poll() is None or live_processes_in_group(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        out_file.close()
        err_file.close()
    stdout, stderr = (tmp_path / "stdout.txt").read_text(), (tmp_path / "stderr.txt").read_text()
    assert "Traceback" not in stderr, stderr
    assert returncode == 0, stderr
    steps = re.findall(r"at step ([\d,]+)", stdout)
    assert steps and int(steps[0].replace(",", "")) > 0, f"no training step before Ctrl-C:\n{stdout}"
    assert "learning had not started" not in stdout, "it learned from step 100: its network is trained"
    assert not orphans, f"processes left behind: {orphans}"
    (run_dir,) = (tmp_path / "runs").iterdir()
    models = list(run_dir.glob("*.pt"))
    assert [m.name for m in models] == ["dqn_atari.pt"], stdout
    q_network, saved_args = dqn_atari.load_model(str(models[0]), torch.device("cpu"))
    assert saved_args["total_timesteps"] == 10_000_000
    assert q_network(torch.zeros((1, 4, 84, 84), dtype=torch.uint8)).shape == (1, 6)
