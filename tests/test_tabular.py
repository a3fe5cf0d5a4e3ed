"""Tests for dqn_frozenlake_tabular.py: pure pieces by import, full runs in process, CLI errors by subprocess."""

import contextlib
import errno
import io
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import gymnasium as gym
import huggingface_hub
import numpy as np
import pytest
import tyro
import yaml  # a dependency of huggingface-hub

import dqn_frozenlake_tabular as tab
from helpers import serve_as_hub_repo

LEFT, DOWN, RIGHT, UP = range(4)  # FrozenLake's actions


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path, monkeypatch):
    """Every test writes runs/, videos/ and wandb/ into its own temp dir."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_script(*flags: str, env: dict = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, tab.__file__, *flags],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=env,
        timeout=timeout,
    )


def frozenlake_env():
    return tab.make_env(tab.resolve_args(tab.Args()))


@pytest.mark.parametrize(
    "terminated, td_target, new_value",
    [
        (False, 2.8, 1.65),  # 1 + 0.9 * 2.0; 0.5 + 0.5 * (2.8 - 0.5)
        (True, 1.0, 0.75),  # no bootstrap: 1; 0.5 + 0.5 * (1.0 - 0.5)
    ],
)
def test_q_learning_update_by_hand(terminated, td_target, new_value):
    q_table = np.zeros((3, 2))
    q_table[0, 1] = 0.5
    q_table[2] = [1.0, 2.0]  # max_a' Q(next_obs, a') = 2.0, used only if next_obs is not terminal
    before = q_table.copy()
    got = tab.q_learning_update(q_table, 0, 1, 1.0, 2, terminated, learning_rate=0.5, gamma=0.9)
    assert got == pytest.approx(td_target)
    assert q_table[0, 1] == pytest.approx(new_value)
    before[0, 1] = q_table[0, 1]
    np.testing.assert_array_equal(q_table, before)  # no other cell moved


@pytest.mark.parametrize("decay_rate", [0.0005, 0.005])  # course FrozenLake, Taxi
def test_exponential_schedule_endpoints(decay_rate):
    assert tab.exponential_schedule(1.0, 0.05, decay_rate, 0) == pytest.approx(1.0)
    assert tab.exponential_schedule(1.0, 0.05, decay_rate, 100_000) == pytest.approx(0.05)
    midway = tab.exponential_schedule(1.0, 0.05, decay_rate, int(1 / decay_rate))
    assert 0.05 < midway < 1.0


def test_greedy_action_breaks_ties_at_random():
    rng = np.random.default_rng(0)
    q_table = np.array([[1.0, 1.0, 0.0, 1.0], [0.0, 2.0, 1.0, 0.0]])
    assert {tab.greedy_action(q_table, 0, rng) for _ in range(300)} == {0, 1, 3}
    assert {tab.greedy_action(q_table, 1, rng) for _ in range(300)} == {1}


def optimal_table() -> np.ndarray:
    """S(0) down 4 down 8 right 9 down 13 right 14 right G(15), on the 4x4 map SFFF/FHFH/FFFH/HFFG."""
    q_table = np.zeros((16, 4))
    for state, action in {0: DOWN, 4: DOWN, 8: RIGHT, 9: DOWN, 13: RIGHT, 14: RIGHT}.items():
        q_table[state, action] = 1.0
    return q_table


def always_left_table() -> np.ndarray:
    q_table = np.zeros((16, 4))
    q_table[:, LEFT] = 1.0  # bumps into the wall until the time limit
    return q_table


@pytest.mark.parametrize("q_table, expected", [(optimal_table(), 1.0), (always_left_table(), 0.0)])
def test_evaluate_hand_built_tables(q_table, expected):
    assert tab.evaluate(q_table, frozenlake_env(), eval_episodes=20, seed=1) == [expected] * 20


# the course's Unit 2 Taxi evaluation seeds, copied from its hands-on as test data
COURSE_SEEDS_FILE = Path(__file__).parent / "data" / "course-unit2-taxi-eval-seeds.txt"


def test_course_taxi_seeds_are_the_course_list():
    lines = COURSE_SEEDS_FILE.read_text().splitlines()
    assert tab.COURSE_TAXI_EVAL_SEEDS == [int(line) for line in lines if line.strip() and not line.startswith("#")]


def test_eval_seeds_course_first_then_the_projects():
    course = tab.COURSE_TAXI_EVAL_SEEDS
    assert tab.eval_seeds("Taxi-v4", 5, seed=1) == course[:5]
    assert tab.eval_seeds("Taxi-v3", 102, seed=1) == course + [10_101, 10_102]  # episode i: seed + 10000 + i
    assert tab.eval_seeds("FrozenLake-v1", 3, seed=2) == [10_002, 10_003, 10_004]  # the course passes no seeds


def course_evaluate_agent(env, max_steps, n_eval_episodes, q_table, seed):
    """The course's evaluate_agent, written here from its description: episode i reset with seed[i], at most
    max_steps steps of np.argmax (the first maximum), the rewards summed; returns (mean, std)."""
    episode_rewards = []
    for episode in range(n_eval_episodes):
        state, _ = env.reset(seed=seed[episode])
        total_rewards_ep = 0.0
        for _ in range(max_steps):
            state, reward, terminated, truncated, _ = env.step(int(np.argmax(q_table[state])))
            total_rewards_ep += reward
            if terminated or truncated:
                break
        episode_rewards.append(total_rewards_ep)
    return np.mean(episode_rewards), np.std(episode_rewards)


@pytest.mark.parametrize("env_id", ["Taxi-v3", "Taxi-v4"])
def test_taxi_is_evaluated_as_the_course_does(monkeypatch, capsys, env_id):
    """Printed score, returns, model card, q-learning.pkl and --eval-only all give the course's numbers."""
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    # a short training leaves failed episodes, which the course cuts at 99 steps though this run trained with 200
    args = tab.Args(env_id=env_id, total_episodes=300, max_steps=200, upload_model=True)
    q_table, eval_returns = tab.train(args)
    taxi = gym.make("Taxi-v4")  # gymnasium's own, 200-step limit: the 99 comes from the course's loop
    mean, std = course_evaluate_agent(taxi, 99, 100, q_table, tab.COURSE_TAXI_EVAL_SEEDS)
    assert std > 0 and (np.mean(eval_returns), np.std(eval_returns)) == pytest.approx((mean, std))
    assert f"mean_reward={mean:.3f} +/- {std:.3f}" in capsys.readouterr().out

    folder = next(Path("runs").glob("*/hub"))
    card_meta = yaml.safe_load((folder / "README.md").read_text().split("---\n")[1])
    assert card_meta["model-index"][0]["results"][0]["metrics"][0]["value"] == f"{mean:.2f} +/- {std:.2f}"
    with open(folder / "q-learning.pkl", "rb") as f:
        model = tab.NumpyOnlyUnpickler(f).load()
    assert model["eval_seed"] == tab.COURSE_TAXI_EVAL_SEEDS
    # what the course's push_to_hub computes from the pickle
    course_score = course_evaluate_agent(taxi, model["max_steps"], model["n_eval_episodes"], model["qtable"], model["eval_seed"])
    assert course_score == pytest.approx((mean, std))
    assert tab.evaluate_saved(tab.Args(eval_only=str(folder.parent))) == eval_returns
    # ties: on an untrained table np.argmax always drives south (-1 a step, 99 steps); random tie-breaking
    # would also try illegal pick-ups and drop-offs (-10 each)
    untrained_env = tab.make_eval_env(tab.resolve_args(tab.Args(env_id=env_id)))
    assert tab.evaluate(np.zeros_like(q_table), untrained_env, 100, seed=1) == [-99.0] * 100


@pytest.mark.parametrize(
    "flags, min_mean, max_std",
    [
        pytest.param([], 1.0, 0.0, id="frozenlake-4x4"),  # course Unit 2: the non-slippery lake is solved exactly
        pytest.param(["--map-name", "8x8"], 1.0, 0.0, id="frozenlake-8x8"),
        pytest.param(["--env-id", "CliffWalking-v1"], -13.0, 0.0, id="cliffwalking"),  # the 13-step path by the cliff
        pytest.param(["--env-id", "Taxi-v4", "--eval-episodes", "1000"], 7.7, None, id="taxi"),
        # the README's claim: nothing but --is-slippery (plus a bigger evaluation)
        pytest.param(["--is-slippery", "--eval-episodes", "1000"], 0.70, None, id="README-claim-slippery"),
    ],
)
def test_training_with_default_hyperparameters(flags, min_mean, max_std):
    args = tyro.cli(tab.Args, args=flags)
    q_table, eval_returns = tab.train(args)
    assert len(eval_returns) == args.eval_episodes
    assert np.mean(eval_returns) >= min_mean
    if max_std is not None:
        assert np.std(eval_returns) <= max_std
    assert len(list(Path("runs").glob("*/events.out.tfevents.*"))) == 1


def test_saved_table_reloads_to_same_evaluation():
    args = tab.Args(env_id="Taxi-v4", total_episodes=1000, eval_episodes=30, save_model=True)
    q_table, eval_returns = tab.train(args)
    assert len(set(eval_returns)) > 1  # returns differ between episodes, so a wrong env or seed would show
    (run_dir,) = Path("runs").iterdir()
    np.testing.assert_array_equal(np.load(run_dir / "q_table.npy"), q_table)
    for path in (run_dir, run_dir / "q_table.npy"):  # env_id comes from args.json, not the FrozenLake default
        assert tab.evaluate_saved(tab.Args(eval_only=str(path), eval_episodes=30)) == eval_returns


def test_ctrl_c_stops_training_but_still_evaluates_and_saves(monkeypatch, capsys):
    schedule = tab.exponential_schedule

    def interrupt_at_50(start_e, end_e, decay_rate, episode):
        if episode == 50:
            raise KeyboardInterrupt
        return schedule(start_e, end_e, decay_rate, episode)

    monkeypatch.setattr(tab, "exponential_schedule", interrupt_at_50)
    q_table, eval_returns = tab.train(tab.Args(save_model=True, eval_episodes=5))
    assert "interrupted after 50 episodes" in capsys.readouterr().out
    assert len(eval_returns) == 5
    np.testing.assert_array_equal(np.load(next(Path("runs").glob("*/q_table.npy"))), q_table)


@pytest.mark.parametrize("env_id", ["FrozenLake-v1", "Taxi-v4"])
def test_capture_video_writes_mp4(recwarn, env_id):
    tab.train(tab.Args(env_id=env_id, total_episodes=300, eval_episodes=2, capture_video=True))
    videos = list(Path("videos").glob(f"{env_id}__*/*.mp4"))
    assert videos and all(video.stat().st_size > 0 for video in videos)
    assert not [w for w in recwarn if "Overwriting existing videos" in str(w.message)]  # the folder is the run's own


def test_capture_video_without_moviepy_stops_before_training(monkeypatch):
    monkeypatch.setitem(sys.modules, "moviepy", None)  # makes `import moviepy` raise ImportError
    with pytest.raises(tab.UsageError, match="moviepy"):
        tab.train(tab.Args(capture_video=True))
    assert not Path("runs").exists()


def test_track_logs_offline_without_login(in_tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "WANDB_API_KEY"}
    env.update(WANDB_MODE="offline", WANDB_DIR=str(in_tmp_path))
    result = run_script("--track", "--total-episodes", "50", "--eval-episodes", "2", env=env)
    assert result.returncode == 0, result.stderr
    assert list((in_tmp_path / "wandb").glob("offline-run-*"))
    assert "upload later with: wandb sync" in result.stdout


@pytest.mark.parametrize(
    "logged_in, init_fails, modes",
    [(False, False, ["offline"]), (True, False, [None]), (True, True, [None, "offline"])],
)
def test_wandb_never_prompts_and_falls_back_offline(monkeypatch, logged_in, init_fails, modes):
    """The script's choice of mode, with a stand-in wandb module (the real one is run by the test above)."""
    calls = []

    def init(mode=None, **kwargs):
        calls.append(mode)
        if init_fails and mode is None:
            raise RuntimeError("no network")
        return SimpleNamespace(offline=mode == "offline", sync_dir="wandb/offline-run-x")

    def login(prompt=True, **kwargs):
        assert prompt is False
        return logged_in

    monkeypatch.setitem(sys.modules, "wandb", SimpleNamespace(login=login, init=init, Settings=dict))
    run = tab.init_wandb(tab.resolve_args(tab.Args(track=True)), "run")
    assert calls == modes and run.offline == (modes[-1] == "offline")


@pytest.mark.parametrize(
    "env_id, hint",
    [
        ("FrozenLake-v2", "`v1`"),  # gymnasium's own hint: the versions that exist
        ("Pendulum-v1", "Discrete"),
        ("CartPole-v1", "Discrete"),
        ("SpaceInvadersNoFrameskip-v4", "use dqn_atari.py"),  # as dqn_atari.py points here for FrozenLake
        ("ALE/Pong-v5", "use dqn_atari.py"),
    ],
)
def test_bad_env_id_is_one_line_and_exit_2(env_id, hint):
    with pytest.raises(tab.UsageError, match=hint):
        tab.resolve_args(tab.Args(env_id=env_id))
    result = run_script("--env-id", env_id, timeout=30)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: ") and hint in line


def test_help_shows_the_4x4_map_default(capsys):
    with pytest.raises(SystemExit):
        tyro.cli(tab.Args, args=["--help"])
    help_text = re.sub(r"[\s│|]+", " ", capsys.readouterr().out)  # unwrap tyro's box
    assert "(default: 4x4)" in help_text.split("--map-name ")[1].split(" --")[0]
    # the default is FrozenLake-v1's map: other envs run without --map-name, and still refuse one
    assert tab.resolve_args(tab.Args(env_id="Taxi-v4")).map_name is None
    with pytest.raises(tab.UsageError, match="--map-name"):
        tab.resolve_args(tab.Args(env_id="Taxi-v4", map_name="8x8"))


def test_eval_only_with_an_unreachable_hub_repo_is_one_line():
    """No network here, or no such repo: one line and exit 2, not the Hub client's retry messages."""
    result = run_script("--eval-only", "someone/no-such-table", timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: ") and "someone/no-such-table" in line


def test_taxi_v3_runs_as_taxi_v4_with_one_notice():
    assert tab.resolve_args(tab.Args(env_id="Taxi-v3")).env_id == "Taxi-v4"
    result = run_script("--env-id", "Taxi-v3", "--total-episodes", "20", "--eval-episodes", "1")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert len([line for line in result.stdout.splitlines() if "Taxi-v3" in line]) == 1
    assert list(Path("runs").glob("Taxi-v4__*"))


# the Hugging Face Hub, as Unit 2 ends; the network is never reached: the upload, the token and the
# downloads are replaced here
@pytest.mark.parametrize("logged_in", [True, False], ids=["logged-in", "no-login"])
def test_upload_model_builds_the_course_hub_folder(monkeypatch, capsys, logged_in):
    uploads = []
    monkeypatch.setattr(tab, "upload_folder_to_hub", lambda repo_id, folder: uploads.append((repo_id, folder)) or f"https://hf.co/{repo_id}")
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_fake" if logged_in else None)
    q_table, eval_returns = tab.train(tab.Args(upload_model=True, hf_entity="me", capture_video=True, eval_episodes=3))
    (run_dir,) = Path("runs").iterdir()
    folder = run_dir / "hub"
    repo_id = "me/FrozenLake-v1-4x4-no_slippery-dqn_frozenlake_tabular-seed1"
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md", "args.json", "dqn_frozenlake_tabular.py", "q-learning.pkl", "q_table.npy", "replay.mp4"
    ]  # fmt: skip
    np.testing.assert_array_equal(np.load(folder / "q_table.npy"), q_table)
    assert (folder / "dqn_frozenlake_tabular.py").read_text() == Path(tab.__file__).read_text()

    card = (folder / "README.md").read_text()
    meta = yaml.safe_load(card.split("---\n")[1])
    assert {"FrozenLake-v1-4x4-no_slippery", "q-learning", "reinforcement-learning"} <= set(meta["tags"])
    result = meta["model-index"][0]["results"][0]
    assert result["dataset"]["name"] == "FrozenLake-v1-4x4-no_slippery"
    assert result["metrics"][0]["value"] == f"{np.mean(eval_returns):.2f} +/- {np.std(eval_returns):.2f}"
    assert f"--eval-only {repo_id}" in card

    # the course notebook's format: a dict with its keys, the Q-table under "qtable"
    with open(folder / "q-learning.pkl", "rb") as f:
        course_model = tab.NumpyOnlyUnpickler(f).load()
    assert set(course_model) == {"env_id", "max_steps", "n_training_episodes", "n_eval_episodes", "eval_seed",
                                 "learning_rate", "gamma", "max_epsilon", "min_epsilon", "decay_rate", "qtable"}
    assert course_model["env_id"] == "FrozenLake-v1" and len(course_model["eval_seed"]) == 3
    np.testing.assert_array_equal(course_model["qtable"], q_table)

    out = capsys.readouterr().out
    if logged_in:
        assert uploads == [(repo_id, folder)] and f"uploaded to https://hf.co/{repo_id}" in out
    else:  # the folder stays, with the command that uploads it
        assert uploads == [] and f"hf upload {repo_id} {folder} ." in out


@pytest.mark.parametrize("files", ["ours", "course-pickle-only"])
def test_eval_only_from_a_hub_repo(monkeypatch, tmp_path, files):
    """A repo of this script (q_table.npy + args.json) or of the course notebook (q-learning.pkl only):
    the env comes from the repo, and the games are those of the evaluation after training."""
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    q_table, eval_returns = tab.train(tab.Args(env_id="Taxi-v4", total_episodes=1000, eval_episodes=20, upload_model=True))
    folder = next(Path("runs").glob("*/hub"))
    if files == "course-pickle-only":
        for name in ("q_table.npy", "args.json"):
            (folder / name).unlink()
    calls = serve_as_hub_repo(monkeypatch, folder)
    assert tab.evaluate_saved(tab.Args(eval_only="someone/taxi", eval_episodes=20)) == eval_returns
    expected = ["q_table.npy", "args.json"] if files == "ours" else ["q-learning.pkl"]
    assert sorted(call[2] for call in calls if call[0] == "download") == sorted(expected)


def test_a_pickle_that_runs_code_is_refused(monkeypatch, tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    folder = tmp_path / "repo"
    folder.mkdir()
    (folder / "q-learning.pkl").write_bytes(pickle.dumps({"env_id": "FrozenLake-v1", "qtable": Payload()}))
    serve_as_hub_repo(monkeypatch, folder)
    with pytest.raises(tab.UsageError, match="someone/evil"):
        tab.evaluate_saved(tab.Args(eval_only="someone/evil"))
    assert not (tmp_path / "pwned").exists()


# Issue 19: bad input is one `error:` line and exit 2 with nothing written; --eval-only scores as the run did
def cli(capsys, *argv: str):
    """tab.main(argv) in process, as the command line runs it: (exit code, stdout lines, stderr lines, result)."""
    try:
        result, code = tab.main(list(argv)), 0
    except SystemExit as e:
        result, code = None, e.code
    out, err = capsys.readouterr()
    return code, out.splitlines(), err.splitlines(), result


def assert_refused(capsys, argv, *names_in_line, not_in_line=()):
    code, _, err, _ = cli(capsys, *argv)
    assert code == 2
    (line,) = err
    assert line.startswith("error: ") and all(name in line for name in names_in_line), line
    assert not any(name in line for name in not_in_line), line
    assert not Path("runs").exists() and not Path("videos").exists()


OTHER_FLAGS = ["--learning-rate", "--gamma", "--total-episodes", "--eval-episodes", "--max-steps", "--decay-rate"]


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["--max-steps", "0"], "--max-steps"),  # was gymnasium's traceback
        (["--decay-rate", "-1"], "--decay-rate"),  # was accepted: exp(+episode) overflows, epsilon = inf
        (["--decay-rate", "nan"], "--decay-rate"),
        (["--learning-rate", "1.5"], "--learning-rate"),  # was one line listing all four limits
        (["--learning-rate", "0"], "--learning-rate"),
        (["--gamma", "1.2"], "--gamma"),
        (["--gamma", "-0.1"], "--gamma"),
        (["--total-episodes", "-1"], "--total-episodes"),
        (["--eval-episodes", "0"], "--eval-episodes"),
        (["--seed", "-1"], "--seed"),  # was gymnasium's traceback
        (["--start-e", "1.5"], "--start-e"),
        (["--end-e", "-0.1"], "--end-e"),
    ],
)
def test_a_number_out_of_range_is_one_line_naming_its_flag(capsys, argv, flag):
    assert_refused(capsys, argv, flag, not_in_line=[f for f in OTHER_FLAGS if f != flag])


def test_epsilon_that_would_rise_is_refused(capsys):
    """dqn_atari.py refuses the same pair: epsilon decays from --start-e down to --end-e."""
    assert_refused(capsys, ["--start-e", "0.01", "--end-e", "0.5"], "--end-e 0.5", "--start-e 0.01")


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--n-episodez", "3"], ["unknown option --n-episodez", "--total-episodes"]),  # was tyro's 5-line box
        (["--seed", "abc"], ["--seed", "abc"]),
        (["--gamma"], ["--gamma"]),
    ],
)
def test_a_bad_command_line_is_one_line(capsys, argv, expected):
    assert_refused(capsys, argv, *expected)


def test_a_misspelled_option_from_the_shell_is_one_line():
    result = run_script("--n-episodez", "3", timeout=60)
    assert result.returncode == 2 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line == "error: unknown option --n-episodez: did you mean --eval-episodes or --total-episodes?"


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    """A short run on the slippery lake with seed 2 and 40 evaluation episodes (neither is the default), saved:
    (its folder, the lines it printed, its evaluation returns). Slippery, so that the seed changes the score."""
    folder = tmp_path_factory.mktemp("saved_run")
    cwd, out = os.getcwd(), io.StringIO()
    os.chdir(folder)
    try:
        with contextlib.redirect_stdout(out):
            _, eval_returns = tab.main(["--is-slippery", "--seed", "2", "--total-episodes", "500", "--eval-episodes", "40", "--save-model"])
    finally:
        os.chdir(cwd)
    (run_dir,) = (folder / "runs").iterdir()
    return run_dir, out.getvalue().splitlines(), eval_returns


def test_eval_only_as_printed_gives_the_runs_score(capsys, monkeypatch, saved_run):
    run_dir, printed, eval_returns = saved_run
    monkeypatch.chdir(run_dir.parent.parent)  # the hint names runs/<run_name>, from where the run was started
    (hint,) = [line for line in printed if line.startswith("evaluate it with: python dqn_frozenlake_tabular.py ")]
    code, out, _, returns = cli(capsys, *hint.split("dqn_frozenlake_tabular.py ")[1].split())
    assert code == 0 and returns == eval_returns
    (score,) = [line for line in printed if line.startswith("eval over ")]
    assert score in out
    # a typed --seed wins over the run's, also when it is the default's value (1)
    code, _, _, returns_seed_1 = cli(capsys, "--eval-only", str(run_dir), "--seed", "1")
    env = tab.make_eval_env(tab.resolve_args(tab.Args(is_slippery=True, eval_episodes=40)))
    q_table = np.load(run_dir / "q_table.npy")
    assert returns_seed_1 == tab.evaluate(q_table, env, 40, seed=1) != eval_returns


@pytest.mark.parametrize(
    "flags, flag",
    [
        (["--env-id", "Taxi-v4"], "--env-id Taxi-v4"),  # was "Q-table shape (16, 4) does not fit ...": no flag named
        (["--env-id", "CliffWalking-v1"], "--env-id CliffWalking-v1"),
        (["--map-name", "8x8"], "--map-name 8x8"),
        (["--no-is-slippery"], "--no-is-slippery"),  # was ignored: the default's value, so the saved one was used
    ],
)
def test_eval_only_refuses_a_flag_of_another_game(capsys, saved_run, flags, flag):
    assert_refused(capsys, ["--eval-only", str(saved_run[0]), "--capture-video", *flags], flag, "FrozenLake-v1 (4x4, slippery)")


def test_eval_only_says_which_flags_it_ignores(capsys, saved_run):
    run_dir, _, eval_returns = saved_run
    code, out, _, returns = cli(capsys, "--eval-only", str(run_dir), "--learning-rate", "3", "--save-model", "--is-slippery")
    assert code == 0 and returns == eval_returns  # --is-slippery: the saved game's own value
    assert "note: --eval-only trains and saves nothing: --learning-rate, --save-model ignored" in out
    assert not Path("runs").exists()


def test_eval_only_videos_go_to_the_runs_eval_folder(capsys, saved_run):
    run_dir = saved_run[0]
    for folder in (f"{run_dir.name}-eval", f"{run_dir.name}-eval-2"):  # a second evaluation overwrites nothing
        code, out, _, _ = cli(capsys, "--eval-only", str(run_dir / "q_table.npy"), "--capture-video", "--eval-episodes", "1")
        assert code == 0 and out[-1] == f"the videos are in videos/{folder}/"
        assert list(Path("videos", folder).glob("*.mp4"))
    assert sorted(p.name for p in Path("videos").iterdir()) == [f"{run_dir.name}-eval", f"{run_dir.name}-eval-2"]


# Issue 19, the end of a run; issue 21, the Q-table on the map (runs/<run_name>/q_table.png and TensorBoard)
@pytest.mark.parametrize(
    "flags, contents",
    [
        (["--total-episodes", "50"], "TensorBoard logs, q_table.png"),
        (["--env-id", "CliffWalking-v1", "--total-episodes", "20", "--save-model"], "TensorBoard logs, q_table.png, q_table.npy, args.json"),
        (["--env-id", "Taxi-v4", "--total-episodes", "20"], "TensorBoard logs"),  # no map to draw on
    ],
)
def test_a_run_ends_naming_its_folder_and_the_picture_is_there(capsys, flags, contents):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from matplotlib.image import imread

    code, out, _, _ = cli(capsys, *flags, "--eval-episodes", "2")
    (run_dir,) = Path("runs").iterdir()
    assert code == 0 and out[-1] == f"run folder {run_dir}/: {contents}"
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0})
    events.Reload()
    drawn = "q_table.png" in contents
    assert (run_dir / "q_table.png").is_file() == drawn and ("charts/q_table" in events.Tags()["images"]) == drawn
    if drawn:
        height, width, _ = imread(run_dir / "q_table.png").shape
        assert min(height, width) > 200
        (image,) = events.Images("charts/q_table")
        assert (image.height, image.width) == (height, width)


FROZENLAKE_MOVES = {0: (-1, 0), 1: (0, 1), 2: (1, 0), 3: (0, -1)}  # LEFT, DOWN, RIGHT, UP as (column, row) steps
CLIFFWALKING_MOVES = {0: (0, -1), 1: (1, 0), 2: (0, 1), 3: (-1, 0)}  # UP, RIGHT, DOWN, LEFT


@pytest.mark.parametrize("env_id, moves", [("FrozenLake-v1", FROZENLAKE_MOVES), ("CliffWalking-v1", CLIFFWALKING_MOVES)])
def test_the_picture_is_the_tables_values_and_greedy_actions(env_id, moves):
    """Colour = max_a Q(s, a) for every state where an episode can go on; arrows = every action tied for the
    maximum (none where all actions tie); holes, cliff and goal are not coloured by a value."""
    env = tab.make_env(tab.resolve_args(tab.Args(env_id=env_id)))
    q_table = np.random.default_rng(0).normal(size=(env.observation_space.n, 4))
    q_table[1, [0, 2]] = q_table[1].max() + 1  # a tie: two arrows
    q_table[2] = 0.5  # all tie: no arrow
    if env_id == "FrozenLake-v1":
        ends = np.isin(env.unwrapped.desc.astype(str), ["H", "G"])
    else:
        ends = np.zeros((4, 12), dtype=bool)
        ends[3, 1:] = True  # the cliff and the goal
    rows, cols = ends.shape
    ax = tab.draw_q_table(q_table, env).axes[0]
    values = ax.images[0].get_array()
    np.testing.assert_array_equal(values.mask, ends)
    np.testing.assert_array_equal(values[~ends], q_table.max(axis=1).reshape(rows, cols)[~ends])
    expected = {
        (state % cols, state // cols, *moves[action])
        for state, row in enumerate(q_table)
        if not ends.flat[state] and row.min() < row.max()
        for action in np.flatnonzero(row == row.max())
    }
    (quiver,) = ax.collections
    drawn = {(x, y, np.sign(u), np.sign(v)) for x, y, u, v in zip(quiver.X, quiver.Y, quiver.U, quiver.V)}
    assert drawn == expected and len(quiver.X) == len(expected)
    assert {(1, 0, *moves[0]), (1, 0, *moves[2])} <= drawn and not any(x == 2 and y == 0 for x, y, *_ in drawn)
    assert ax.yaxis_inverted()  # row 0 at the top, as the map is printed: a DOWN arrow (+1 row) points down


def test_importing_the_script_does_not_import_matplotlib():
    code = "import sys, dqn_frozenlake_tabular; print('matplotlib' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=Path(tab.__file__).parent)
    assert result.stdout.strip() == "False", result.stderr


# Issue 28: runs that never hang, never share a folder, never lose what they wrote
@pytest.mark.parametrize(
    "blocked, argv",
    [
        ("runs", []),  # was a 30-line traceback (NotADirectoryError), as in a folder that cannot be written
        ("videos", ["--capture-video"]),
        ("videos", ["--eval-only", "SAVED_RUN", "--capture-video"]),
    ],
    ids=["runs", "videos", "eval-only-videos"],
)
def test_a_folder_that_cannot_be_created_is_one_line(capsys, request, blocked, argv):
    """A file where the script creates its folder fails as root too (a read-only folder would not, for root)."""
    Path(blocked).write_text("a file in the way\n")
    argv = [str(request.getfixturevalue("saved_run")[0]) if a == "SAVED_RUN" else a for a in argv]
    code, _, err, _ = cli(capsys, *argv, "--eval-episodes", "1")
    assert code == 2
    (line,) = err
    assert re.fullmatch(rf"error: cannot create {blocked}/\S*/ \(.+\): {blocked} is a file: move it away", line), line
    assert Path(blocked).read_text() == "a file in the way\n"  # nothing lost
    assert not Path("runs").is_dir(), "no run folder left behind"


def test_a_read_only_folder_is_one_line(capsys, monkeypatch):
    def read_only(path, *args, **kwargs):  # what mkdir meets on a read-only disk, for root too
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    monkeypatch.setattr(os, "mkdir", read_only)  # under Path.mkdir and os.makedirs
    code, _, err, _ = cli(capsys, "--eval-episodes", "1")
    assert code == 2
    (line,) = err
    assert re.fullmatch(r"error: cannot create runs/\S+/ \(Read-only file system\): start the script from a folder where you can write", line), line


def test_runs_started_in_the_same_second_get_a_folder_each(capsys, monkeypatch):
    """Same env, --exp-name and --seed, same second: the run name was the same, and the second run's table
    replaced the first's in their one folder."""
    monkeypatch.setattr(tab, "time", SimpleNamespace(time=lambda: 1_700_000_000.0))
    runs = [cli(capsys, "--total-episodes", episodes, "--save-model", "--eval-episodes", "1") for episodes in ("0", "300")]
    folders = sorted(Path("runs").iterdir())
    assert len(folders) == 2, folders
    for (code, out, _, (q_table, _)), folder in zip(runs, folders):  # sorted: the first run has the plain name
        assert code == 0 and out[-1].startswith(f"run folder {folder}/: ")
        assert f"evaluate it with: python dqn_frozenlake_tabular.py --eval-only {folder}" in out
        np.testing.assert_array_equal(np.load(folder / "q_table.npy"), q_table)
    assert runs[0][3][0].sum() == 0 < runs[1][3][0].sum()  # untrained and trained: two different tables kept


def test_sigterm_stops_training_as_ctrl_c_does(in_tmp_path, subprocess_env):
    """A job scheduler's or tune.py's stop: the run was killed silently, leaving no table and no args.json."""
    log = in_tmp_path / "output.log"
    with open(log, "w") as out:
        run = subprocess.Popen([sys.executable, tab.__file__, "--total-episodes", "100000000", "--save-model", "--eval-episodes", "3"],
                               stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=subprocess_env)  # fmt: skip
    try:
        deadline = time.time() + 60
        while not log.read_text().startswith("training ") and run.poll() is None and time.time() < deadline:
            time.sleep(0.1)  # until the script says it trains: the line before its loop
        assert run.poll() is None, log.read_text()
        run.send_signal(signal.SIGTERM)
        assert run.wait(timeout=60) == 0, log.read_text()
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    printed = log.read_text()
    assert re.search(r"^interrupted after \d+ episodes: evaluating \(and with --save-model saving\)", printed, re.M), printed
    assert "eval over 3 episodes" in printed and "Traceback" not in printed
    (run_dir,) = Path("runs").iterdir()
    assert json.loads((run_dir / "args.json").read_text())["total_episodes"] == 100_000_000
    assert np.load(run_dir / "q_table.npy").shape == (16, 4)
    assert printed.splitlines()[-1] == f"run folder {run_dir}/: TensorBoard logs, q_table.png, q_table.npy, args.json"
