"""dqn_atari_fast.py, the fast variant: its compiled gradient step, its progress bar, ale-py's vector env,
its game processes under Ctrl-C, and the numbers of the code it was split from (today's losses are those of
dqn_atari.py before the split, whose checkpoints it resumes). The DQN it shares with dqn_atari.py is tested
in test_atari_train.py; its checkpoints in test_fast_resume_hub.py.
"""

import copy
import importlib.util
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import dqn_atari_fast
from games import SIDE_GAME_RUN, scalars, side_game, train_on_side_game
from helpers import ctrl_c_a_run, processes_left_in_group

pytestmark = pytest.mark.usefixtures("single_thread")

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "dqn_atari_fast.py"


def make_side_game(env_id, seed, idx, capture_video, run_name, training=True):
    return lambda: side_game(seed)


def test_compiled_gradient_step_is_the_eager_one_and_learns(tmp_path):
    """--compile (torch.compile of the gradient step; on a GPU, CUDA graphs) changes how the step runs, not
    what it computes. What must be equal is compared where it must be: one step on the same batch from the
    same network gives the same loss, gradients and Adam update, up to float32 rounding (fused kernels sum in
    another order). Whole runs are not compared: Adam turns rounding-sized gradient differences into lr-sized
    steps, so two runs drift apart (their losses were 2.6% apart after 336 steps on a 2-core AMD EPYC);
    the compiled run must learn the game instead. dqn_atari_fast.py only (see the module docstring); compiling
    takes ~30 s on the CPU, once: the one-step comparison reuses the run's compiled step (same shapes).
    Torch's warning that the optimizer's profiler labels are left out of the compiled step is not shown."""
    warned = []  # the run compiles first, so that its tracing is what could warn
    handler = logging.Handler()
    handler.emit = lambda record: warned.append(record.getMessage())
    logger = logging.getLogger("torch._dynamo.variables.ctx_manager")
    logger.addHandler(handler)
    torch._logging._internal.warning_once.cache_clear()  # torch warns once a process: this run could warn again
    try:
        _, accuracy = train_on_side_game(dqn_atari_fast, tmp_path, make_side_game, compile=True)
    finally:
        logger.removeHandler(handler)
    assert not [message for message in warned if "Profiler record function" in message], warned
    assert accuracy >= 0.9, f"the compiled path picks the right side on only {accuracy:.0%} of fresh frames"

    rng = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (16, 5, 84, 84), dtype=torch.uint8, generator=rng)
    batch = dqn_atari_fast.ReplayBatch(  # SIDE_GAME_RUN's shapes and learning rate: the run's compiled step is reused
        observations=frames[:, :4], next_observations=frames[:, 1:], actions=torch.randint(2, (16, 1), generator=rng),
        rewards=torch.randn(16, generator=rng), dones=(torch.rand(16, generator=rng) < 0.3).float(),
    )  # fmt: skip
    torch.manual_seed(0)
    start = dqn_atari_fast.QNetwork(2).to(memory_format=torch.channels_last)

    def one_step(step):  # from the same network, on the same batch
        q_network, target_network = copy.deepcopy(start), copy.deepcopy(start)
        optimizer = torch.optim.Adam(q_network.parameters(), lr=SIDE_GAME_RUN["learning_rate"], fused=True)
        loss, q_mean = step(q_network, target_network, optimizer, batch, 0.99)
        return q_network, optimizer, loss, q_mean

    eager, _, eager_loss, eager_q = one_step(dqn_atari_fast.gradient_step)
    compiled, _, loss, q_mean = one_step(torch.compile(dqn_atari_fast.gradient_step))
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
    progress = dqn_atari_fast.Progress(3000)
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


def test_typed_flags_are_read_from_the_command_line(fast):
    """What was typed, in each spelling tyro takes; a typed value equal to the default counts too."""
    argv = ["--eval-only", "runs/x", "--seed", "1", "--env-id=PongNoFrameskip-v4", "--no-cuda", "--exp_name", "--odd"]
    assert fast.typed_flags(argv) == {"eval_only", "seed", "env_id", "cuda", "exp_name"}
    assert fast.typed_flags([]) == set()


def test_ale_vector_backend_trains_and_logs_whole_games(tmp_path, monkeypatch, capsys):
    """--env-backend ale-vector, 2 games of 1,000 steps: the run learns from its buffer and logs each ended
    game (all its lives: thousands of frames) as the gymnasium backend does. That the scores are the
    real ones is tested against the wrappers in test_atari_wrappers.py. Its games are not filmed: with
    --capture-video (and no evaluation here) it says so at the start, and records nothing."""
    monkeypatch.chdir(tmp_path)
    args = dqn_atari_fast.Args(**{**SPACE_INVADERS_RUN, "env_backend": "ale-vector", "num_envs": 2, "eval_episodes": 0, "capture_video": True})
    result = dqn_atari_fast.train(args)
    said = [line for line in capsys.readouterr().out.splitlines() if line.startswith("--capture-video")]
    assert len(said) == 1 and "films no training game" in said[0] and "no evaluation" in said[0], said
    assert not (tmp_path / "videos").exists()
    logged = scalars(tmp_path / "runs" / result["run_name"])
    assert len(logged["losses/td_loss"]) >= 3
    assert logged["charts/episodic_return"] and all(r > 0 for _, r in logged["charts/episodic_return"])
    assert all(length > 1000 for _, length in logged["charts/episodic_length"]), "a game, not a life"
    assert not result["interrupted"] and (tmp_path / result["model_path"]).is_file()


# the command line, as a user runs it


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_game_processes_ignore_stop_signals(stop_signal):
    """Ctrl-C (and a scheduler's SIGTERM, `kill -- -PGID`, `pkill -f`) reaches the game processes too;
    they must keep serving the main process, which saves the model and closes them in order (the
    whole-run test below cannot always see this: it depends on when the signal lands)."""
    envs = gym.vector.AsyncVectorEnv(
        [dqn_atari_fast.make_env("PongNoFrameskip-v4", 0, 0, False, "test")], autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP
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
    stdout, run_dir = ctrl_c_a_run(SCRIPT, tmp_path, subprocess_env)
    models = list(run_dir.glob("*.pt"))
    assert [m.name for m in models] == ["dqn_atari_fast.pt"], stdout
    q_network, saved_args = dqn_atari_fast.load_model(str(models[0]), torch.device("cpu"))
    assert saved_args["total_timesteps"] == 10_000_000
    assert q_network(torch.zeros((1, 4, 84, 84), dtype=torch.uint8)).shape == (1, 6)


# the numbers of the code before the split: dqn_atari.py at its last commit before dqn_atari_fast.py existed
BEFORE_THE_SPLIT = "e211207"
# the Pong recipe of docs/results.md (ale-vector, 4 games), short
PONG_RECIPE = dict(env_id="PongNoFrameskip-v4", env_backend="ale-vector", num_envs=4, seed=1, exploration_fraction=0.1,
                   total_timesteps=1600, learning_starts=400, buffer_size=4000, eval_episodes=0, cuda=False)  # fmt: skip


@pytest.fixture(scope="module")
def before_the_split(tmp_path_factory):
    """dqn_atari.py as it was before the split, imported from the repository's history."""
    folder = tmp_path_factory.mktemp("before_the_split")
    shown = subprocess.run(["git", "-C", str(ROOT), "show", f"{BEFORE_THE_SPLIT}:dqn_atari.py"], capture_output=True, text=True)
    if shown.returncode != 0:
        pytest.skip(f"this checkout has no history to read the code before the split from ({shown.stderr.strip()})")
    (folder / "dqn_atari.py").write_text(shown.stdout)
    spec = importlib.util.spec_from_file_location("dqn_atari_before_the_split", folder / "dqn_atari.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_pong_recipe_gives_the_losses_of_the_code_before_the_split(before_the_split, tmp_path, monkeypatch):
    """Same seed, same flags, in this process: the same TD losses and Q-values, to the bit, and the same network."""
    results = {}
    for name, module in (("before", before_the_split), ("fast", dqn_atari_fast)):
        (tmp_path / name).mkdir()
        monkeypatch.chdir(tmp_path / name)
        result = module.train(module.Args(**PONG_RECIPE, checkpoint_frequency=0, save_model=True))
        logged = scalars(tmp_path / name / "runs" / result["run_name"])
        network = torch.load(tmp_path / name / result["model_path"], weights_only=True)["model"]
        results[name] = (logged["losses/td_loss"], logged["losses/q_values"], network)
    (before_loss, before_q, before_net), (loss, q, net) = results["before"], results["fast"]
    assert len(loss) >= 2 and loss == before_loss and q == before_q
    assert all(torch.equal(net[key], before_net[key]) for key in before_net)


def test_a_checkpoint_from_before_the_split_resumes_here_and_not_in_the_pair(before_the_split, tmp_path, monkeypatch, capsys):
    """dqn_atari.py's checkpoints before the split (a folder and checkpoint.json): dqn_atari_fast.py goes on
    from them; the teaching pair, whose checkpoint is one file, says where to resume them, in one line."""
    import dqn_atari

    monkeypatch.chdir(tmp_path)
    first = before_the_split.train(before_the_split.Args(**{**PONG_RECIPE, "total_timesteps": 800}, checkpoint_frequency=800))
    run_dir = f"runs/{first['run_name']}"
    with pytest.raises(SystemExit) as exit_info:
        dqn_atari.main(["--resume", run_dir, "--total-timesteps", "1600"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and f"python dqn_atari_fast.py --resume {run_dir}" in err[0], err
    resumed = dqn_atari_fast.train(dqn_atari_fast.Args(resume=run_dir, total_timesteps=1600))
    assert resumed["run_name"] == first["run_name"] and "resuming" in capsys.readouterr().out
    pointer = json.loads((tmp_path / run_dir / "checkpoint.json").read_text())
    assert pointer["global_step"] == 1600


@pytest.mark.parametrize("script", ["dqn_atari.py", "dqn_atari_fast.py"])
def test_an_error_in_an_edit_ends_the_run_and_its_games(script, tmp_path, subprocess_env):
    """A learner's QNetwork that raises, after the games have started (two game processes in the fast variant):
    the traceback, a non-zero exit within seconds, and no game process left waiting for commands."""
    source = (ROOT / script).read_text()
    start = "class QNetwork(nn.Module):\n    def __init__(self, n_actions):\n        super().__init__()\n"
    assert start in source
    (tmp_path / script).write_text(source.replace(start, start + "        raise ValueError('a broken edit')\n", 1))
    games = ["--num-envs", "2"] if script == "dqn_atari_fast.py" else []
    command = [sys.executable, script, "--total-timesteps", "1000", "--learning-starts", "100", "--buffer-size", "1000"]
    proc = subprocess.Popen(command + games, cwd=tmp_path, env=subprocess_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode not in (0, None) and "ValueError: a broken edit" in err, err[-2000:]
    assert not processes_left_in_group(proc.pid), "game processes left behind"
