"""watch.py: the agent's view. The panels are read back from the drawn canvas through watch.Layout and
checked against what the network itself received and returned; the return line against a game of known
rewards; the Hub against a local file; and the errors of the command line."""

import json
import re
import pickle
import sys
from pathlib import Path
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch

import dqn_atari
import watch
from helpers import load_benchmark, serve_as_hub_repo

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """An untrained Space Invaders network saved as dqn_atari.py saves one, alone in a folder (a Hub repo's files)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "dqn_atari.pt"
    dqn_atari.save_model(path, dqn_atari.QNetwork(6), dqn_atari.Args(cuda=False), 6)
    return path


def run_main(argv, capsys):
    """watch.main as the command line runs it: (exit code, stdout, stderr)."""
    try:
        watch.main(argv)
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def painted_step(painter, t):
    """What step t's canvas shows: the 4 frames of the network-input panel (84x84 each, read back from the
    2x2 pixels they are drawn with) and the rows whose marker is filled."""
    canvas, layout = painter.frame(t), painter.layout
    frames = np.stack([canvas[y : y + h : 2, x : x + w : 2, 0] for x, y, w, h in layout.frames])
    n = painter.game.q_values.shape[1]
    marked = [a for a in range(n) if (canvas[layout.q_row(a, n)[1] + 4, layout.q_row(a, n)[0] + 4] == watch.CHOSEN).all()]
    return frames, marked


def test_the_panels_show_the_network_input_and_mark_the_argmax_of_its_output(tiny_model):
    args = watch.Args(model=str(tiny_model), cuda=False)
    q_network, _, env, device = watch.load(args)
    received = []  # what the network was called on, caught as it was called
    q_network.register_forward_pre_hook(lambda module, inputs: received.append(inputs[0].clone()))
    game = watch.play_game(q_network, env, np.random.default_rng(1), device, epsilon=0.5, max_steps=24, seed=1)
    env.close()
    returns, complete = watch.discounted_returns(game.rewards, game.terminal, 0.99)
    painter = watch.Painter(game, returns, complete, 0.99, "test")
    assert game.greedy.any() and not game.greedy.all(), "a game with both greedy steps and epsilon draws"
    assert len(received) == len(game.actions)
    for t in range(len(game.actions)):
        frames, marked = painted_step(painter, t)
        assert np.array_equal(frames, received[t][0].numpy()), f"step {t}: the frames shown are not the network's input"
        assert marked == [game.actions[t]], f"step {t}: one marked action, the one taken"
        if game.greedy[t]:
            with torch.no_grad():
                q = q_network(torch.as_tensor(frames)[None])[0]
            assert marked == [int(q.argmax())], f"step {t}: a greedy step marks the largest Q of the frames shown"
            assert np.allclose(game.q_values[t], q.numpy()), f"step {t}: the bars' values are the network's"


class KnownGame(gym.Env):
    """A stand-in for an ALE game, with given rewards and lives left after each step; it ends after the last.
    It offers what watch.py reads of a game: lives and the RGB screen from `ale`, the action names."""

    def __init__(self, rewards, lives):
        self.rewards, self.lives_after = rewards, lives
        self.action_space = gym.spaces.Discrete(6)
        self.observation_space = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
        self.ale = SimpleNamespace(lives=lambda: self.lives, getScreenRGB=lambda: np.zeros((210, 160, 3), np.uint8))

    def get_action_meanings(self):
        return ["NOOP", "FIRE", "RIGHT", "LEFT", "RIGHTFIRE", "LEFTFIRE"]

    def reset(self, seed=None, options=None):
        self.t, self.lives = 0, 3
        return self.observation(), {}

    def observation(self):
        return np.full((4, 84, 84), self.t, np.uint8)

    def step(self, action):
        reward, self.lives = self.rewards[self.t], self.lives_after[self.t]
        self.t += 1
        return self.observation(), reward, self.t == len(self.rewards), False, {}


REWARDS = [0.0, 5.0, 0.0, 0.0, 200.0, -10.0, 0.0, 30.0, 0.0, 0.0, 15.0, 0.0, 10.0]  # a life is lost at steps 3 and 8
LIVES = [3, 3, 3, 2, 2, 2, 2, 2, 1, 1, 1, 1, 0]


def return_that_followed(t, gamma, steps):
    """By definition: the discounted sum of the clipped rewards from step t to the end of its life."""
    g = 0.0
    for k in range(t, steps):
        g += gamma**(k - t) * np.sign(REWARDS[k])
        if k == len(REWARDS) - 1 or LIVES[k] < (LIVES[k - 1] if k else 3):
            break
    return g


@pytest.mark.parametrize("max_steps", [0, 11])  # the whole game; cut after the second lost life
def test_the_return_line_is_the_discounted_clipped_return_until_the_next_lost_life(max_steps):
    gamma = 0.9
    torch.manual_seed(0)
    q_network = dqn_atari.QNetwork(6)
    game = watch.play_game(q_network, KnownGame(REWARDS, LIVES), np.random.default_rng(0), torch.device("cpu"), 0.05, max_steps)
    steps = len(game.actions)
    assert steps == (max_steps or len(REWARDS)) and game.game_over == (not max_steps)
    returns, complete = watch.discounted_returns(game.rewards, game.terminal, gamma)
    painter = watch.Painter(game, returns, complete, gamma, "test")
    for t in range(steps):
        expected = return_that_followed(t, gamma, steps)
        assert returns[t] == pytest.approx(expected), f"step {t}"
        assert painter.return_points[t, 1] == round(painter.to_y(expected)), f"step {t}: the line is drawn at the return"
        painter.frame(t)  # and drawn, complete and cut returns alike
        # a return is complete where its life ended in the game played: the steps after the cut are not
        assert complete[t] == (not max_steps or t <= 8), f"step {t}"
    assert painter.score[-1] == sum(REWARDS[:steps]), "the title's score is the real one, unclipped"


def test_games_reports_the_mean_gap_of_the_steps_with_a_complete_return(monkeypatch):
    """--games N: the mean of Q(s, a) - return over every step of N games whose life ended, the last game's
    steps after its cut left out; the games go on from one environment as the scripts' evaluation does."""
    torch.manual_seed(0)
    q_network, gamma = dqn_atari.QNetwork(6), 0.9
    args = watch.Args(model="unused", games=2, max_steps=11, epsilon=0.0)
    lines = []
    gap = watch.measure(q_network, KnownGame(REWARDS, LIVES), torch.device("cpu"), args, gamma, report=lines.append)
    with torch.no_grad():  # epsilon 0: each step's action is the argmax of the network on that step's frames
        q = q_network(torch.as_tensor(np.stack([np.full((4, 84, 84), t, np.uint8) for t in range(9)])))
    expected = [float(q[t].max()) - return_that_followed(t, gamma, 11) for t in range(9)]
    assert gap == pytest.approx(np.mean(expected + expected), abs=1e-5)
    assert len(lines) == 3 and lines[-1].startswith("over 2 games (18 steps)"), lines
    # benchmarks/plot_overestimation.py reads this last line: its numbers are the ones measured
    found = load_benchmark("plot_overestimation").SUMMARY.search(lines[-1])
    q_mean = np.mean([float(q[t].max()) for t in range(9)])
    assert int(found[1]) == 18 and float(found[2]) == pytest.approx(q_mean, abs=1e-3), lines[-1]
    assert float(found[3]) == pytest.approx(q_mean - gap, abs=1e-3), lines[-1]


def test_games_cut_before_any_lost_life_is_one_error_not_a_nan():
    args = watch.Args(model="unused", games=2, max_steps=3, epsilon=0.0)  # the first life is lost at step 3
    lines = []
    with pytest.raises(dqn_atari.UsageError, match="--max-steps 3 cut every game before a life was lost"):
        watch.measure(dqn_atari.QNetwork(6), KnownGame(REWARDS, LIVES), torch.device("cpu"), args, 0.9, lines.append)
    assert lines == [f"game {i}: score 5, 3 steps, cut before a life was lost" for i in (1, 2)]


def test_a_hub_repo_and_a_local_file_give_the_same_video(tiny_model, tmp_path, monkeypatch, capsys):
    videos = []
    for name, model in (("local", str(tiny_model)), ("hub", "tester/SpaceInvadersNoFrameskip-v4-dqn_atari-seed1")):
        calls = serve_as_hub_repo(monkeypatch, tiny_model.parent)
        (tmp_path / name).mkdir()
        monkeypatch.chdir(tmp_path / name)
        code, out, err = run_main([model, "--max-steps", "16", "--seed", "3", "--no-cuda"], capsys)
        assert code == 0, err
        (video,) = Path("videos").rglob("*.mp4")
        assert out.strip().splitlines()[-1] == f"the agent's view: {video}", "the last line says where the video is"
        assert calls == ([] if name == "local" else [("list", model), ("download", model, "dqn_atari.pt")])
        videos.append(video.resolve().read_bytes())
    assert len(videos[0]) > 10_000 and videos[0] == videos[1]


def test_gif_holds_the_first_gif_steps(tiny_model, tmp_path, monkeypatch, capsys):
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    code, out, err = run_main([str(tiny_model), "--max-steps", "12", "--gif", "--gif-steps", "5", "--no-cuda"], capsys)
    assert code == 0, err
    (gif,) = Path("videos").rglob("*.gif")
    with Image.open(gif) as image:
        assert image.n_frames == 5 and image.size == (watch.WIDTH, watch.HEIGHT)
    assert str(gif) in out


def tabular_models(folder):
    """Files as dqn_frozenlake_tabular.py saves them: a run folder (q_table.npy, args.json) and, in its Hub
    folder, the course's q-learning.pkl."""
    run = folder / "runs" / "run"
    run.mkdir(parents=True)
    np.save(run / "q_table.npy", np.zeros((16, 4)))
    (run / "args.json").write_text(json.dumps({"env_id": "FrozenLake-v1"}))
    (folder / "q-learning.pkl").write_bytes(pickle.dumps({"qtable": np.zeros((16, 4)), "env_id": "FrozenLake-v1"}))
    return ["runs/run", "runs/run/q_table.npy", "q-learning.pkl"]


def test_errors_are_one_line_and_exit_code_2(tiny_model, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cases = [([path], "dqn_frozenlake_tabular.py") for path in tabular_models(tmp_path)]
    cases += [(["runs/missing.pt"], "no model saved by an Atari script here at 'runs/missing.pt'"), ([str(tiny_model), "--epsilon", "2"], "--epsilon 2")]
    for argv, message in cases:
        code, out, err = run_main(argv + ["--no-cuda"], capsys)
        assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1 and message in err, (argv, err)
    assert not Path("videos").exists()


def test_without_a_video_encoder_it_stops_before_playing(tiny_model, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for name in [m for m in sys.modules if m.split(".")[0] == "moviepy"] + ["moviepy"]:
        monkeypatch.setitem(sys.modules, name, None)  # None in sys.modules: `import moviepy...` raises ImportError
    monkeypatch.setattr(watch, "play_game", lambda *args, **kwargs: pytest.fail("the game was played"))
    code, out, err = run_main([str(tiny_model), "--no-cuda"], capsys)
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1 and "moviepy" in err, err
    assert not Path("videos").exists()


def test_it_says_what_it_plays_while_it_plays(tiny_model, tmp_path, monkeypatch, capsys):
    """A game takes minutes before its video: a line every 250 steps while it plays."""
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main([str(tiny_model), "--games", "1", "--max-steps", "260", "--epsilon", "1", "--no-cuda"], capsys)
    assert code == 0, err
    steps = int(re.search(r"game 1: score \d+, (\d+) steps", out).group(1))
    assert steps > 250, f"this seed's game is longer than 250 steps: {steps}"
    assert out.index("playing: step 250, score") < out.index("game 1: score"), out
