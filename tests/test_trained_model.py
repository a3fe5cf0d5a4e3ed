"""The trained agents in models/: the README's demo command plays the Space Invaders agent and films it
on a fresh checkout; each agent plays better than random actions on the same games."""

import shlex
from pathlib import Path

import numpy as np
import torch

import dqn_atari

ROOT = Path(__file__).resolve().parent.parent


def readme_demo_command():
    """The README's command that shows the trained agent, split as the shell would split it."""
    lines = [line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("python dqn_atari.py --eval-only models/")]
    assert lines, "the README must show the demo command: python dqn_atari.py --eval-only models/<file>.pt ..."
    return shlex.split(lines[0])


def committed_model():
    argv = readme_demo_command()
    return ROOT / argv[argv.index("--eval-only") + 1]


def test_readme_demo_command_plays_the_committed_agent_and_films_it(tmp_path, monkeypatch, capsys, single_thread):
    argv = readme_demo_command()
    assert argv[:2] == ["python", "dqn_atari.py"] and "--capture-video" in argv
    assert committed_model().is_file(), f"{committed_model()} is named by the README but not in the repository"
    # from a folder holding only what a fresh clone has, so the video lands there
    (tmp_path / "models").symlink_to(ROOT / "models")
    monkeypatch.chdir(tmp_path)
    dqn_atari.main(argv[2:] + ["--no-cuda"])

    out = capsys.readouterr().out
    assert "evaluation over" in out
    videos = list((tmp_path / "videos").rglob("*.mp4"))
    assert len(videos) == 1 and videos[0].stat().st_size > 10_000, videos
    assert f"videos/{videos[0].parent.name}/" in out, "the command must say where the video is"
    assert not (tmp_path / "runs").exists(), "watching the agent must not start a training run"


def test_committed_agent_beats_random_actions_and_an_untrained_network(single_thread):
    q_network, saved_args = dqn_atari.load_model(committed_model(), torch.device("cpu"))
    env_id = saved_args["env_id"]
    assert env_id == "SpaceInvadersNoFrameskip-v4"
    games = dict(env_id=env_id, eval_episodes=2, device=torch.device("cpu"), seed=0)

    trained = dqn_atari.evaluate(q_network, **games)
    random_actions = dqn_atari.evaluate(q_network, epsilon=1.0, **games)
    torch.manual_seed(0)
    untrained = dqn_atari.evaluate(dqn_atari.QNetwork(q_network.network[-1].out_features), **games)
    assert np.mean(trained) > max(np.mean(random_actions), np.mean(untrained)), (trained, random_actions, untrained)


def test_committed_pong_agent_beats_random_play_by_a_wide_margin(single_thread):
    """The fast path's Pong agent (docs/results.md): one game each, the agent against random actions on
    the same seed; a point is a rally won, random play loses nearly all of them, and 15 more is a wide margin."""
    q_network, saved_args = dqn_atari.load_model(ROOT / "models" / "dqn_atari_PongNoFrameskip-v4.pt", torch.device("cpu"))
    assert saved_args["env_id"] == "PongNoFrameskip-v4" and saved_args["env_backend"] == "ale-vector"
    # the first game of its run's own evaluation (`--eval-only` plays it with the run's seed)
    games = dict(env_id="PongNoFrameskip-v4", eval_episodes=1, device=torch.device("cpu"), seed=saved_args["seed"])
    trained = dqn_atari.evaluate(q_network, **games)[0]
    random_actions = dqn_atari.evaluate(q_network, epsilon=1.0, **games)[0]
    assert trained >= random_actions + 15, (trained, random_actions)  # of the 42 points between -21 and +21


def test_committed_double_dqn_agent_beats_random_play_by_a_wide_margin(single_thread):
    """ddqn_atari.py's Space Invaders agent (docs/results.md): two games of its run's seed, the agent against
    random actions on the same games; random play scores about 150 a game, and 3 times that is a wide margin."""
    q_network, saved_args = dqn_atari.load_model(ROOT / "models" / "ddqn_atari_SpaceInvadersNoFrameskip-v4.pt", torch.device("cpu"))
    assert saved_args["env_id"] == "SpaceInvadersNoFrameskip-v4" and saved_args["script"] == "ddqn_atari.py"
    games = dict(env_id="SpaceInvadersNoFrameskip-v4", eval_episodes=2, device=torch.device("cpu"), seed=saved_args["seed"])
    trained = np.mean(dqn_atari.evaluate(q_network, **games))
    random_actions = np.mean(dqn_atari.evaluate(q_network, epsilon=1.0, **games))
    assert trained >= 3 * random_actions, (trained, random_actions)
