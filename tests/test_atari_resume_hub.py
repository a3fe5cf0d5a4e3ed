"""dqn_atari.py / ddqn_atari.py around the loop: its checkpoint (one file) and --resume, bad --resume input,
run folders, saved models that load in every Atari script and in a copy with another network, and the Hub."""

import re
import shutil
from pathlib import Path

import huggingface_hub
import numpy as np
import pytest
import torch
import yaml  # a dependency of huggingface-hub

import ddqn_atari
import dqn_atari
import dqn_atari_fast
import push_to_hub
import watch
from games import scalars

pytestmark = pytest.mark.usefixtures("single_thread")

ROOT = Path(__file__).resolve().parent.parent
TINY_RUN = dict(total_timesteps=64, learning_starts=16, buffer_size=64, batch_size=4, cuda=False)
FIRST_LEG = dict(total_timesteps=600, learning_starts=100, buffer_size=500, batch_size=8, target_network_frequency=100,
                 checkpoint_frequency=300, learning_rate=1e-3, cuda=False)  # fmt: skip


@pytest.fixture(scope="module")
def first_leg(tmp_path_factory):
    """A run that wrote its checkpoint at step 600 (its last), its folder kept pristine."""
    cwd = tmp_path_factory.mktemp("first_leg")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        result = dqn_atari.train(dqn_atari.Args(**FIRST_LEG))
    return cwd / "runs" / result["run_name"]


def copy_run(run_dir, cwd):
    shutil.copytree(run_dir, cwd / "runs" / run_dir.name)
    return f"runs/{run_dir.name}"


def test_resume_restores_the_checkpoint_exactly_and_goes_on(first_leg, tmp_path, monkeypatch, capsys):
    """The networks, the optimizer, the replay memory and the random draws come back as saved; the episode in
    progress is cut (its last frame keeps its slot); TensorBoard goes on from the checkpoint's step."""
    monkeypatch.chdir(tmp_path)
    resume = copy_run(first_leg, tmp_path)
    saved = torch.load(tmp_path / resume / "checkpoint.pt", weights_only=True)
    restored = {}

    def restore(run, learner):
        step = dqn_atari_restore(run, learner)
        q_network, target_network, optimizer, rng, rb = learner
        restored.update(q=clone(q_network), target=clone(target_network), rb={k: v.copy() for k, v in vars(rb).items()
                        if isinstance(v, np.ndarray)}, pos=rb.pos, rng=rng.bit_generator.state)  # fmt: skip
        return step

    def clone(network):  # the weights now: the run trains on after this
        return {key: value.clone() for key, value in network.state_dict().items()}

    dqn_atari_restore = dqn_atari.restore_checkpoint
    monkeypatch.setattr(dqn_atari, "restore_checkpoint", restore)
    result = dqn_atari.train(dqn_atari.Args(resume=resume, total_timesteps=900))
    assert "resuming" in capsys.readouterr().out
    for key, value in saved["q_network"].items():
        assert torch.equal(restored["q"][key], value) and torch.equal(restored["target"][key], saved["target_network"][key])
    for name, value in saved["replay"].items():
        if isinstance(value, torch.Tensor):
            assert np.array_equal(restored["rb"][name][: len(value)], value.numpy()), name
    assert restored["rng"] == saved["rng"]
    assert restored["pos"] == (saved["replay"]["pos"] + (saved["replay"]["age"] > 0)) % 500, "the episode is cut"
    logged = scalars(tmp_path / resume)
    steps = [step for step, _ in logged["losses/td_loss"]]  # every 100 steps: none twice, on to the end
    assert steps == sorted(set(steps)) and steps[-1] == 900, steps
    assert torch.load(tmp_path / resume / "checkpoint.pt", weights_only=True)["global_step"] == 900
    assert sorted(p.name for p in (tmp_path / resume).glob("*.pt")) == ["checkpoint.pt", "dqn_atari.pt"]
    assert result["run_name"] == first_leg.name


def test_resume_keeps_the_first_legs_videos(tmp_path, monkeypatch):
    """The resumed leg films into a folder of its own beside the first leg's videos, which stay as they were."""
    monkeypatch.chdir(tmp_path)
    first = dqn_atari.train(dqn_atari.Args(capture_video=True, checkpoint_frequency=64, **TINY_RUN))
    before = {path: path.read_bytes() for path in Path("videos").rglob("*.mp4")}
    assert before, "the first leg filmed nothing"
    dqn_atari.train(dqn_atari.Args(resume=f"runs/{first['run_name']}", total_timesteps=128))
    after = {path: path.read_bytes() for path in Path("videos").rglob("*.mp4")}
    assert all(after.get(path) == video for path, video in before.items()), "a video of the first leg changed"
    assert list(Path("videos", first["run_name"], "resumed-at-64").glob("*.mp4")), sorted(map(str, after))


def test_a_checkpoint_that_cannot_be_written_leaves_the_last_one_whole(first_leg, tmp_path, monkeypatch, capsys):
    """A full disk while writing: one error line naming the checkpoint; the previous checkpoint is untouched."""
    monkeypatch.chdir(tmp_path)
    resume = copy_run(first_leg, tmp_path)
    before = (tmp_path / resume / "checkpoint.pt").read_bytes()

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(dqn_atari.os, "replace", full_disk)
    with pytest.raises(SystemExit) as exit_info:
        dqn_atari.main(["--resume", resume, "--total-timesteps", "700", "--checkpoint-frequency", "50"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and "No space left on device" in err[0] and "checkpoint" in err[0], err
    assert (tmp_path / resume / "checkpoint.pt").read_bytes() == before
    assert not (tmp_path / resume / "checkpoint.tmp").exists()


BAD_RESUME = {  # case: (flags, what the one error line names)
    "missing folder": (["--resume", "runs/missing"], ["runs/missing"]),
    "what it learns with": (["--learning-rate", "0.0005"], ["--learning-rate 0.001", "drop --learning-rate 0.0005"]),
    "the same, typed at its default": (["--learning-rate=0.0001"], ["--learning-rate 0.001", "drop --learning-rate 0.0001"]),
    "another game": (["--env-id", "PongNoFrameskip-v4"], ["--env-id SpaceInvadersNoFrameskip-v4"]),
    "a total below the checkpoint": (["--total-timesteps", "500"], ["600", "--total-timesteps"]),
}


@pytest.mark.parametrize("case", list(BAD_RESUME))
def test_bad_resume_is_one_error_line_and_changes_nothing(first_leg, tmp_path, monkeypatch, capsys, case):
    monkeypatch.chdir(tmp_path)
    resume = copy_run(first_leg, tmp_path)
    before = {p.name: p.read_bytes() for p in (tmp_path / resume).iterdir()}
    flags, words = BAD_RESUME[case]
    with pytest.raises(SystemExit) as exit_info:
        dqn_atari.main(["--resume", resume, *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and err[0].startswith("error:"), err
    assert all(word in err[0] for word in words), err[0]
    assert {p.name: p.read_bytes() for p in (tmp_path / resume).iterdir()} == before


def test_a_checkpoint_of_another_script_or_flags_is_named(first_leg, tmp_path, monkeypatch, capsys):
    """ddqn_atari.py refuses dqn_atari.py's checkpoint; a checkpoint that lacks a flag of Args says which, and
    goes on with its value; one with a flag that Args lost is refused, naming it."""
    monkeypatch.chdir(tmp_path)
    resume = copy_run(first_leg, tmp_path)
    with pytest.raises(ddqn_atari.UsageError, match="trained by dqn_atari.py: resume it with that script"):
        ddqn_atari.load_checkpoint(ddqn_atari.Args(resume=resume))
    state = torch.load(tmp_path / resume / "checkpoint.pt", weights_only=True)
    del state["args"]["train_frequency"]
    state["args"]["dueling"] = True
    torch.save(state, tmp_path / resume / "checkpoint.pt")
    with pytest.raises(dqn_atari.UsageError, match="--dueling, which dqn_atari.py does not have"):
        dqn_atari.load_checkpoint(dqn_atari.Args(resume=resume))
    del state["args"]["dueling"]
    torch.save(state, tmp_path / resume / "checkpoint.pt")
    assert dqn_atari.load_checkpoint(dqn_atari.Args(resume=resume))["args"]["train_frequency"] == 4
    assert "predates --train-frequency: the run goes on with --train-frequency 4" in capsys.readouterr().out


def test_two_runs_started_in_the_same_second_get_a_folder_each(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(dqn_atari.time, "time", lambda: 1_700_000_000.0)
    names = [dqn_atari.make_run_folder(dqn_atari.Args()) for _ in range(2)]
    assert names[1] == names[0] + "-2" and all((tmp_path / "runs" / name).is_dir() for name in names)


def test_a_run_folder_that_cannot_be_made_is_one_error_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").write_text("a file where the folder goes")
    with pytest.raises(dqn_atari.UsageError, match="cannot write the run folder runs/"):
        dqn_atari.make_run_folder(dqn_atari.Args())


# saved models: one format for the three Atari scripts, and a copy with another network
def test_a_model_of_any_atari_script_evaluates_the_same_with_each(tmp_path):
    """Saved by dqn_atari.py, ddqn_atari.py and dqn_atari_fast.py (the same network, other files), and the
    committed agent, saved before models recorded their number of actions: the same score in each script."""
    torch.manual_seed(0)
    network = dqn_atari.QNetwork(6)
    paths = [ROOT / "models" / "dqn_atari_SpaceInvadersNoFrameskip-v4.pt"]
    for module in (dqn_atari, ddqn_atari):
        paths.append(tmp_path / f"{module.__name__}.pt")
        module.save_model(paths[-1], network, module.Args(), 6)
    paths.append(tmp_path / "fast" / "dqn_atari_fast.pt")
    dqn_atari_fast.save_model(paths[-1], network, dqn_atari_fast.Args())
    for path in paths:
        scores = set()
        for module in (dqn_atari, ddqn_atari):
            q_network, saved = module.load_model(str(path), torch.device("cpu"))
            scores.add(tuple(module.evaluate(q_network, saved["env_id"], 1, torch.device("cpu"), seed=1)))
        q_network, saved = dqn_atari_fast.load_model(str(path), torch.device("cpu"))
        scores.add(tuple(dqn_atari_fast.evaluate(q_network, saved["env_id"], 1, "unused", torch.device("cpu"), seed=1)))
        assert len(scores) == 1, (path.name, scores)


def test_eval_only_names_the_script_that_trained_the_model(tmp_path, capsys):
    """ddqn_atari.py evaluating a DQN model says whose model it is: the network is the same, the training was not."""
    path = tmp_path / "dqn_atari.pt"
    dqn_atari.save_model(path, dqn_atari.QNetwork(6), dqn_atari.Args(), 6)
    ddqn_atari.eval_only(ddqn_atari.Args(eval_only=str(path), eval_episodes=1, cuda=False))
    assert f"evaluating {path}, trained by dqn_atari.py, on SpaceInvadersNoFrameskip-v4" in capsys.readouterr().out


DUELING = '''class QNetwork(nn.Module):
    def __init__(self, n_actions):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(4, 16, 8, stride=4), nn.ReLU(), nn.Flatten())
        self.value, self.advantage = nn.Linear(6400, 1), nn.Linear(6400, n_actions)

    def forward(self, x):
        h = self.features(x.float() / 255.0)
        a = self.advantage(h)
        return self.value(h) + a - a.mean(dim=1, keepdim=True)


'''


def test_a_copy_with_a_dueling_head_evaluates_and_watches_its_model(tmp_path, monkeypatch, capsys):
    """A learner's copy whose QNetwork alone changed: its model loads into its --eval-only and into watch.py
    --script, with no other edit; dqn_atari.py says in one line that the network does not fit, and where it loads."""
    source = (ROOT / "dqn_atari.py").read_text()
    start, end = source.index("class QNetwork(nn.Module):"), source.index("# EXPERIENCE REPLAY")
    (tmp_path / "my_dqn.py").write_text(source[:start] + DUELING + source[end:])
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    import my_dqn

    path = tmp_path / "my_dqn.pt"
    my_dqn.save_model(path, my_dqn.QNetwork(6), my_dqn.Args(), 6)
    assert len(my_dqn.eval_only(my_dqn.Args(eval_only=str(path), eval_episodes=1, cuda=False))) == 1
    with pytest.raises(dqn_atari.UsageError, match="saved by my_dqn.py, does not fit the QNetwork of dqn_atari.py"):
        dqn_atari.load_model(str(path), torch.device("cpu"))
    gap = watch.main([str(path), "--script", "my_dqn.py", "--games", "1"])
    assert gap is None and "game 1:" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        watch.main([str(path), "--games", "1"])
    assert exit_info.value.code == 2 and "--script" in capsys.readouterr().err


# the Hugging Face Hub
def front_matter(readme):
    assert readme.startswith("---\n"), readme[:100]
    return yaml.safe_load(readme[4:].split("\n---\n", 1)[0])


@pytest.mark.parametrize("module", [dqn_atari, ddqn_atari], ids=["dqn_atari", "ddqn_atari"])
def test_push_to_hub_builds_the_hub_folder(module, tmp_path, monkeypatch, capsys):
    """push_to_hub.py on a run folder, not logged in: the folder stays, with the command that uploads it. It holds
    the model, the script that trained it and the evaluation's video; the card carries the score the leaderboard
    reads and a command that trains it again with every flag that differs from its default."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    result = module.train(module.Args(gamma=0.98, **TINY_RUN))
    push_to_hub.main([f"runs/{result['run_name']}", "--hf-entity", "tester", "--eval-episodes", "1"])
    out = capsys.readouterr().out
    name, folder = module.__name__, Path("runs", result["run_name"], "hub")
    assert (folder / f"{name}.pt").read_bytes() == Path(result["model_path"]).read_bytes()
    assert (folder / f"{name}.py").read_bytes() == (ROOT / f"{name}.py").read_bytes()
    assert (folder / "replay.mp4").stat().st_size > 1000
    card = (folder / "README.md").read_text()
    metric = front_matter(card)["model-index"][0]["results"][0]["metrics"][0]
    (score,) = re.findall(r"^evaluation over 1 game: (-?[\d.]+) \+/- 0.0", out, re.M)
    assert metric["value"] == f"{float(score):.2f} +/- 0.00"
    (command,) = re.findall(rf"^python {name}.py (--(?!eval-only).*)$", card, re.M)
    for flag in ("--gamma 0.98", "--total-timesteps 64", "--learning-starts 16", "--buffer-size 64", "--batch-size 4"):
        assert flag in command, (flag, command)
    assert "--exp-name" not in command, command
    repo_id = f"tester/SpaceInvadersNoFrameskip-v4-{name}-seed1"
    assert f"hf upload {repo_id} {folder} ." in out


def test_push_to_hub_refuses_what_is_not_a_local_model(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        push_to_hub.main(["someone/SpaceInvaders-dqn"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and err == ["error: no model at 'someone/SpaceInvaders-dqn': pass the .pt file "
                                                 "or the run folder of a run of yours"], err


def test_watch_downloads_a_model_from_a_hub_repo_and_eval_only_says_how(tmp_path, monkeypatch, capsys):
    """watch.py takes a Hub repo id: its .pt file is downloaded and played. The pair's --eval-only takes local
    files only, and names the command that downloads a repo, in one line."""
    from helpers import serve_as_hub_repo

    repo = tmp_path / "repo"
    repo.mkdir()
    dqn_atari.save_model(repo / "dqn_atari.pt", dqn_atari.QNetwork(6), dqn_atari.Args(seed=2), 6)
    calls = serve_as_hub_repo(monkeypatch, repo)
    monkeypatch.chdir(tmp_path)
    assert watch.main(["tester/SpaceInvaders-dqn", "--games", "1", "--no-cuda"]) is None
    assert calls == [("list", "tester/SpaceInvaders-dqn"), ("download", "tester/SpaceInvaders-dqn", "dqn_atari.pt")]
    assert "game 1:" in capsys.readouterr().out
    with pytest.raises(dqn_atari.UsageError, match="hf download tester/SpaceInvaders-dqn --local-dir"):
        dqn_atari.eval_only(dqn_atari.Args(eval_only="tester/SpaceInvaders-dqn", eval_episodes=1, cuda=False))