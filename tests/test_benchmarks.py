"""benchmarks/peers.py: its help, the probe, and the gymnasium-1.x layer that CleanRL 1.2.0 runs under.

The peers themselves run only where benchmarks/peers.py has made their venv already (`--setup-only`);
elsewhere those tests skip. Nothing here downloads anything.
"""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch.utils.tensorboard import SummaryWriter

from helpers import load_benchmark

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "benchmarks" / "peers.py"


def load_peers():
    return load_benchmark("peers")


def test_help_says_what_is_timed_and_how():
    text = subprocess.run([sys.executable, str(PEERS), "--help"], capture_output=True, text=True, check=True).stdout
    for words in ("CleanRL 1.2.0", "RL-Zoo", "hyperparams/dqn.yml", "train SPS", "peak RSS", "--wheels", "requirements-peers.txt"):
        assert words in text


def test_the_probe_counts_optimizer_steps(tmp_path, subprocess_env):
    peers = load_peers()
    program = [sys.executable, "-c", "import torch\n"
               "net = torch.nn.Linear(2, 1); optimizer = torch.optim.Adam(net.parameters())\n"
               "for _ in range(5): optimizer.zero_grad(); net(torch.ones(2)).sum().backward(); optimizer.step()\n"
               "print('threads', torch.get_num_threads())"]
    opts = SimpleNamespace(torch_threads=1, cpu=True, seconds=None)
    result = peers.run_once("toy-1", program, tmp_path, opts)
    assert "error" not in result
    assert result["steps"] == 5 and result["threads"] == 1 and result["train_sps"] > 0
    assert result["peak_rss_mib"] > 50  # torch alone is more than that
    assert "threads 1" in (tmp_path / "toy-1.log").read_text()


COMPAT_CHECK = """
import gymnasium as gym, numpy as np
peers.cleanrl_compat()
assert gym.wrappers.FrameStack is gym.wrappers.FrameStackObservation
assert gym.wrappers.GrayScaleObservation is gym.wrappers.GrayscaleObservation
assert "SpaceInvadersNoFrameskip-v4" in gym.registry
from distutils.util import strtobool
assert strtobool("True") == 1
def make():
    return gym.wrappers.RecordEpisodeStatistics(gym.make("CartPole-v1", max_episode_steps=3))
envs = gym.vector.SyncVectorEnv([make, make])
obs, _ = envs.reset(seed=1)
for step in range(3):
    next_obs, rewards, terminations, truncations, infos = envs.step(np.zeros(2, dtype=int))
    done = terminations | truncations
    if done.any():
        break
assert done.all() and step == 2, (step, done)
# as in gymnasium 0.29: the game is reset in the same step; its last observation and info in infos
assert list(infos["_final_observation"]) == [True, True]
for i in range(2):
    assert infos["final_info"][i]["episode"]["l"] == 3
    assert not np.array_equal(infos["final_observation"][i], next_obs[i])
print("ok")
"""


def test_cleanrl_compat_gives_gymnasium_029_names_and_infos(subprocess_env):
    # in a subprocess: the layer patches gymnasium for the whole process
    code = f"import importlib.util\nspec = importlib.util.spec_from_file_location('peers', {str(PEERS)!r})\n" \
           "peers = importlib.util.module_from_spec(spec); spec.loader.exec_module(peers)\n" + COMPAT_CHECK
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env, timeout=120)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]


def peers_ready():
    """The peers' venv, made by `peers.py --setup-only` for this requirements-peers.txt, and the two wheels."""
    peers = load_peers()
    cache = Path(os.environ.get("DQN_PEERS_CACHE", "~/.cache/dqn-peers")).expanduser()
    stamp = cache / "venv" / "requirements-peers.sha256"
    wanted = hashlib.sha256(peers.REQUIREMENTS.read_bytes()).hexdigest()
    ready = (stamp.exists() and stamp.read_text() == wanted and (cache / "cleanrl-1.2.0" / "dqn_atari.py").exists()
             and list((cache / "wheels").glob("rl_zoo3-2.9.2-*.whl")))
    return cache if ready else None


@pytest.mark.skipif(not peers_ready(), reason="no peers' venv: python benchmarks/peers.py --setup-only makes it")
@pytest.mark.parametrize("peer", ["cleanrl", "sb3"])
def test_a_peer_learns_for_a_few_hundred_steps(peer, tmp_path, subprocess_env):
    done = subprocess.run(
        [sys.executable, str(PEERS), "--peers", peer, "--ours", "", "--total-timesteps", "300", "--learning-starts", "100",
         "--buffer-size", "1000", "--repeats", "1", "--torch-threads", "1", "--cpu", "--out", str(tmp_path)],
        capture_output=True, text=True, env=subprocess_env, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + (tmp_path / f"{peer}-1.log").read_text()[-3000:]
    (run,) = json.loads((tmp_path / "results.json").read_text())["runs"]
    assert 45 <= run["steps"] <= 50 and run["train_sps"] > 0  # one gradient step every 4 steps after step 100
    assert f"| {load_peers().NAMES[peer]} |" in (tmp_path / "table.md").read_text()


def test_speed_says_in_one_line_when_a_run_is_too_short_to_time(subprocess_env):
    """A run that logs fewer than two losses after learning starts (here none: the pair logs at multiples of
    100 steps) has nothing to time: one error line, not a ZeroDivisionError."""
    command = [sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--total-timesteps", "590", "--learning-starts", "500",
               "--buffer-size", "600"]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, env=subprocess_env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith("error: the run logged 0 loss(es)"), result.stderr


def test_plot_overestimation_measures_each_kept_network_once_on_the_same_games(tmp_path, monkeypatch, capsys):
    plot = load_benchmark("plot_overestimation")
    run = tmp_path / "SpaceInvadersNoFrameskip-v4__ddqn_atari__1__1"
    (run / "networks").mkdir(parents=True)
    for step in (100_000, 200_000):  # as benchmarks/keep_networks.py names them
        torch.save({"model": {}, "script": "ddqn_atari.py"}, run / "networks" / f"step-{step:07d}.pt")
    commands = []

    def watch(command, **kwargs):  # watch.py's last line, with a mean Q(s, a) that tells the networks apart
        commands.append(command)
        step = int(command[2].split("step-")[1][:7])
        return SimpleNamespace(returncode=0, stderr="", stdout=f"game 1: ...\nover 3 games (512 steps): mean Q(s, a) "
                               f"{step / 1e5:.3f}, mean return 0.250, mean Q(s, a) - return +0.750 (return: ...)\n")

    monkeypatch.setattr(plot.subprocess, "run", watch)
    with SummaryWriter(str(run)) as writer:  # the run's training returns, for the second plot
        for step, episodic_return in ((1_000, 150.0), (2_000, 190.0), (3_000, 240.0)):
            writer.add_scalar("charts/episodic_return", episodic_return, step)
    for _ in range(2):  # the second call draws from what the first measured
        monkeypatch.setattr(sys, "argv", ["plot_overestimation.py", str(run), "--out", str(tmp_path / "o.png"),
                                          "--returns-out", str(tmp_path / "r.png")])
        plot.main()
    assert [Path(c[2]).name for c in commands] == ["step-0100000.pt", "step-0200000.pt"]
    assert all(c[1].endswith("watch.py") and c[3:] == ["--games", "3", "--seed", "1", "--max-steps", "0"] for c in commands)
    measured = json.loads((run / "networks" / "overestimation.json").read_text())["games=3 seed=1 max_steps=0"]
    assert measured == {"100000": {"q": 1.0, "return": 0.25, "steps": 512}, "200000": {"q": 2.0, "return": 0.25, "steps": 512}}
    assert (tmp_path / "o.png").stat().st_size > 10_000 and "Double DQN" in capsys.readouterr().out  # named by its script
    assert (tmp_path / "r.png").stat().st_size > 10_000


def test_plot_overestimation_without_kept_networks_says_how_to_keep_them(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["plot_overestimation.py", str(tmp_path)])
    with pytest.raises(SystemExit, match=f"keep_networks.py {tmp_path}"):
        load_benchmark("plot_overestimation").main()
