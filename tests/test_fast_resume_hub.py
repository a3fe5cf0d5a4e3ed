"""Checkpoints, --resume, a clean stop on Ctrl-C and the Hugging Face Hub of dqn_atari_fast.py.

One real run is SIGKILLed (with its game processes) after its first checkpoint and after it logged past
that checkpoint; the resume, the TensorBoard log, a kill during a checkpoint write and the bad --resume
inputs all start from copies of that run folder. The Hub is never reached: the upload, the token and the
downloads are replaced in the tests.
"""

import contextlib
import copy
import hashlib
import importlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import numpy as np
import pytest
import torch
import yaml  # a dependency of huggingface-hub
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import dqn_atari_fast
from helpers import last_line_of_the_run, live_processes_in_group, processes_left_in_group, serve_as_hub_repo

pytestmark = pytest.mark.usefixtures("single_thread")

ROOT = Path(__file__).resolve().parent.parent
ENV_ID = "SpaceInvadersNoFrameskip-v4"
# the killed run: a checkpoint every 1,000 steps; learning from step 100, td_loss logged every 400 steps
# (500, 900, 1300, ...), so it logs past its first checkpoint long before its second one
KILLED_RUN = ["--total-timesteps", "1000000", "--checkpoint-frequency", "1000", "--buffer-size", "3000",
              "--learning-starts", "100", "--batch-size", "8", "--target-network-frequency", "500", "--no-cuda"]  # fmt: skip
TINY_RUN = dict(total_timesteps=64, learning_starts=16, buffer_size=64, batch_size=4, cuda=False)
BUFFER_ARRAYS = ("actions", "rewards", "dones", "first", "valid")


# helpers
@pytest.fixture(scope="module")
def script_env(subprocess_env):
    return dict(subprocess_env, WANDB_MODE="disabled")


def start_script(script, args, cwd, env, log_dir):
    """The script in a process group of its own (start_new_session), so that a signal to the group
    reaches its game processes too; stdout and stderr go to files in log_dir (not in cwd)."""
    out, err = open(log_dir / "stdout.txt", "w"), open(log_dir / "stderr.txt", "w")
    proc = subprocess.Popen([sys.executable, str(ROOT / script), *args], cwd=cwd, env=env, stdout=out, stderr=err,
                            start_new_session=True)  # fmt: skip
    out.close()
    err.close()
    return proc


def read_logs(log_dir):
    return (log_dir / "stdout.txt").read_text(), (log_dir / "stderr.txt").read_text()


def end_group(proc):
    """SIGKILL whatever is left of the process group that proc leads, and reap proc."""
    if proc.poll() is None or live_processes_in_group(proc.pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def scalar_steps(path):
    """{tag: [steps]} of a run folder (all its event files, with purge_step honoured) or of one event file."""
    events = EventAccumulator(str(path), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [e.step for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def checkpoint_pointer(run_dir):
    try:
        return json.loads((run_dir / "checkpoint.json").read_text())
    except (OSError, ValueError):
        return None


def logged_past(run_dir, step):
    """Whether the run logged past `step`, and a game ended before it (so points from both sides of a
    checkpoint at `step` are there to be kept or dropped)."""
    try:
        logged = scalar_steps(run_dir)
    except Exception:  # an event file being written
        return False
    ended = [s for s in logged.get("charts/episodic_return", []) if s < step]
    return bool(ended) and any(s > step for steps in logged.values() for s in steps)


def snapshot(root):
    """Every file under root: size, modification time and content hash."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def assert_same(actual, expected, where="state"):
    """Exact equality of nested dicts/lists of tensors, arrays and plain values."""
    if isinstance(expected, torch.Tensor):
        assert isinstance(actual, torch.Tensor) and actual.dtype == expected.dtype, where
        assert torch.equal(actual.cpu(), expected.cpu()), f"{where} differs"
    elif isinstance(expected, dict):
        assert set(actual) == set(expected), f"{where}: keys {sorted(actual)} != {sorted(expected)}"
        for key in expected:
            assert_same(actual[key], expected[key], f"{where}[{key!r}]")
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), where
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_same(a, e, f"{where}[{i}]")
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


def load_checkpoint_files(folder):
    """The state, the frames (the chunk files, end to end) and the small arrays of a checkpoint folder."""
    state = torch.load(folder / "state.pt", map_location="cpu", weights_only=True)
    frames = np.concatenate([np.load(f) for f in sorted(folder.glob("frames-*.npy"))], axis=1)
    with np.load(folder / "replay.npz") as replay:
        arrays = {name: replay[name] for name in replay.files}
    return state, frames, arrays


def copy_run(killed_run, cwd):
    """A copy of the killed run's folder (as it was right after the kill) at cwd/runs/<run_name>."""
    run_dir = cwd / "runs" / killed_run["run_name"]
    shutil.copytree(killed_run["pristine"], run_dir)
    return run_dir


# a run killed after its first checkpoint, and its resume
@pytest.fixture(scope="module")
def killed_run(tmp_path_factory, script_env):
    """dqn_atari_fast.py SIGKILLed, with its game processes, once it has a checkpoint, a game that ended before it and
    logging past it. The group is stopped (SIGSTOP) before the last look, so the checkpoint cannot move on before the kill."""
    cwd, logs = tmp_path_factory.mktemp("killed"), tmp_path_factory.mktemp("killed_logs")
    proc = start_script("dqn_atari_fast.py", KILLED_RUN, cwd, script_env, logs)
    try:
        deadline = time.time() + 150
        while True:
            assert proc.poll() is None, read_logs(logs)[1]
            assert time.time() < deadline, f"no checkpoint followed by more logging in time:\n{read_logs(logs)}"
            run_dirs = list((cwd / "runs").glob("*"))
            pointer = checkpoint_pointer(run_dirs[0]) if run_dirs else None
            if pointer and logged_past(run_dirs[0], pointer["global_step"]):
                os.killpg(proc.pid, signal.SIGSTOP)
                pointer = checkpoint_pointer(run_dirs[0])
                if logged_past(run_dirs[0], pointer["global_step"]):
                    os.killpg(proc.pid, signal.SIGKILL)
                    break
                os.killpg(proc.pid, signal.SIGCONT)
            time.sleep(0.3)
        proc.wait(timeout=30)
        deadline = time.time() + 10
        while live_processes_in_group(proc.pid) and time.time() < deadline:
            time.sleep(0.2)
        assert not live_processes_in_group(proc.pid), "the game processes outlived the SIGKILL of the group"
    finally:
        end_group(proc)
    (run_dir,) = run_dirs
    pristine = tmp_path_factory.mktemp("pristine") / run_dir.name
    shutil.copytree(run_dir, pristine)
    pointer = checkpoint_pointer(run_dir)
    (event_file,) = run_dir.glob("events.out.tfevents.*")
    return {"cwd": cwd, "run_name": run_dir.name, "run_dir": run_dir, "pristine": pristine, "step": pointer["global_step"],
            "folder": pristine / pointer["folder"], "event_file": event_file.name}  # fmt: skip


@pytest.fixture(scope="module")
def resumed(killed_run):
    """The killed run resumed in process for 500 more steps (a checkpoint every 500: one at the end). The
    networks, the optimizer and the replay buffer are captured right after the checkpoint is loaded,
    and the step at which TensorBoard resumes (purge_step, the loop's global_step)."""
    step = killed_run["step"]
    networks, optimizers, captured, writers = [], [], {}, []

    class RecordingQNetwork(dqn_atari_fast.QNetwork):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            networks.append(self)

    class RecordingAdam(torch.optim.Adam):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            optimizers.append(self)

    original_load, original_writer = dqn_atari_fast.load_replay_buffer, dqn_atari_fast.SummaryWriter

    def load(rb, folder, *args, **kwargs):
        original_load(rb, folder, *args, **kwargs)
        if kwargs.get("check_only"):
            return
        # train() loads the networks and the optimizer, then the buffer: all of it is in place now
        q_network, target_network = networks
        captured.update(
            q_network=copy.deepcopy(q_network.state_dict()), target_network=copy.deepcopy(target_network.state_dict()),
            optimizer=copy.deepcopy(optimizers[0].state_dict()), frames=rb.frames.clone(), filled=rb.filled,
            pos=rb.pos.copy(), rng=rb.rng.get_state(), **{name: getattr(rb, name).cpu().numpy() for name in BUFFER_ARRAYS},
        )  # fmt: skip

    def summary_writer(*args, **kwargs):
        writers.append(kwargs)
        return original_writer(*args, **kwargs)

    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(killed_run["cwd"])
        mp.setattr(dqn_atari_fast, "QNetwork", RecordingQNetwork)
        mp.setattr(torch.optim, "Adam", RecordingAdam)
        mp.setattr(dqn_atari_fast, "load_replay_buffer", load)
        mp.setattr(dqn_atari_fast, "SummaryWriter", summary_writer)
        with contextlib.redirect_stdout(out):
            result = dqn_atari_fast.train(dqn_atari_fast.Args(
                resume=f"runs/{killed_run['run_name']}", total_timesteps=step + 500, checkpoint_frequency=500,
                save_model=True, eval_episodes=0, cuda=False,
            ))  # fmt: skip
    return {"result": result, "captured": captured, "writers": writers, "stdout": out.getvalue(), "networks": len(networks)}


def test_resume_after_sigkill_restores_the_checkpoint_exactly(killed_run, resumed):
    state, frames, arrays = load_checkpoint_files(killed_run["folder"])
    step = killed_run["step"]
    assert state["global_step"] == step and step % 1000 == 0, "the checkpoints are at multiples of --checkpoint-frequency"
    assert state["script"] == "dqn_atari_fast.py" and state["run_name"] == killed_run["run_name"]
    # the gradient steps due before step N's game step: (N - 1 - learning_starts) // train_frequency
    assert state["updates"] == (step - 1 - 100) // 4, "one gradient step every 4 environment steps from step 100"
    captured = resumed["captured"]
    assert captured, "the replay buffer was never loaded"
    assert resumed["networks"] == 2, "the resumed run builds the q_network and the target_network, nothing more"

    # the networks and Adam's moments and step counts, exactly
    assert_same(captured["q_network"], state["q_network"], "q_network")
    assert_same(captured["target_network"], state["target_network"], "target_network")
    assert not all(torch.equal(a, b) for a, b in zip(state["q_network"].values(), state["target_network"].values())), (
        "the checkpoint should hold two different networks (target copied at step 500, 300 updates since)"
    )
    assert_same(captured["optimizer"], state["optimizer"], "optimizer")
    assert state["optimizer"]["state"], "the optimizer had taken steps"

    # the replay buffer: every stored frame and transition, and its sampling generator
    filled = frames.shape[1]
    assert frames.shape[0] == 1 and frames.shape[2:] == (84, 84) and 0 < filled <= 3000
    assert captured["filled"] == filled
    assert torch.equal(captured["frames"][:, :filled], torch.from_numpy(frames))
    for name in BUFFER_ARRAYS:
        np.testing.assert_array_equal(captured[name][:, :filled], arrays[name], err_msg=name)
    assert captured["valid"].sum() > 900, "about one transition per step"
    assert torch.equal(captured["rng"], torch.from_numpy(arrays["rng"])), "the sampling generator goes on where it stopped"
    assert captured["pos"][0] in (arrays["pos"][0], arrays["pos"][0] + 1), "writes go on where they stopped"

    # it goes on from the checkpoint's step: the loop's global_step is TensorBoard's purge_step
    assert [w.get("purge_step") for w in resumed["writers"]] == [step]
    assert f"resuming {killed_run['run_name']} at step {step:,}" in resumed["stdout"]


def test_resumed_run_finishes_and_writes_its_final_checkpoint(killed_run, resumed):
    result, step = resumed["result"], killed_run["step"]
    run_dir = killed_run["run_dir"]
    assert result["run_name"] == killed_run["run_name"] and not result["interrupted"]
    q_network, saved_args = dqn_atari_fast.load_model(str(killed_run["cwd"] / result["model_path"]), torch.device("cpu"))
    assert saved_args["total_timesteps"] == step + 500 and saved_args["learning_starts"] == 100, "the run keeps its own arguments"
    assert checkpoint_pointer(run_dir) == {"folder": f"checkpoint-{step + 500}", "global_step": step + 500}
    assert sorted(p.name for p in run_dir.glob("checkpoint-*")) == [f"checkpoint-{step + 500}"], "the old one is removed"
    assert not (run_dir / "checkpoint.partial").exists()
    final, final_frames, final_arrays = load_checkpoint_files(run_dir / f"checkpoint-{step + 500}")
    assert final["global_step"] == step + 500
    assert final["updates"] == (step + 500 - 1 - 100) // 4, "the gradient steps continue from the checkpoint's count"
    assert_same(q_network.state_dict(), final["q_network"], "saved model vs final checkpoint")
    # the buffer went on from the checkpoint's: what was stored before it is still there, and more
    _, frames, arrays = load_checkpoint_files(killed_run["folder"])
    kept = int(arrays["pos"][0])
    assert final_frames.shape[1] > frames.shape[1]
    np.testing.assert_array_equal(final_frames[:, :kept], frames[:, :kept])
    for name in BUFFER_ARRAYS:
        np.testing.assert_array_equal(final_arrays[name][:, :kept], arrays[name][:, :kept], err_msg=name)


def test_resumed_tensorboard_log_has_no_duplicated_steps(killed_run, resumed):
    run_dir, step = killed_run["run_dir"], killed_run["step"]
    event_files = sorted(p.name for p in run_dir.glob("events.out.tfevents.*"))
    assert len(event_files) == 2 and killed_run["event_file"] in event_files
    killed = scalar_steps(run_dir / killed_run["event_file"])
    (resumed_file,) = [name for name in event_files if name != killed_run["event_file"]]
    again = scalar_steps(run_dir / resumed_file)
    merged = scalar_steps(run_dir)
    assert any(s > step for steps in killed.values() for s in steps), "the killed run must have logged past its checkpoint"
    assert merged.get("losses/td_loss") and merged.get("losses/q_values") and merged.get("charts/episodic_return")
    for tag in sorted(set(killed) | set(again)):
        steps = merged.get(tag, [])
        assert all(a < b for a, b in zip(steps, steps[1:])), f"{tag}: steps not strictly increasing (duplicates): {steps}"
        # the killed run's points before its checkpoint, then the resumed run's. The point at the
        # checkpoint's step itself goes too (purge_step = the step): the resumed run's first updates log
        # their loss at that step (charts/SPS and charts/epsilon, logged every 1,000 steps, only at 1,000)
        expected = [s for s in killed.get(tag, []) if s < step] + [s for s in again.get(tag, []) if s >= step]
        assert steps == expected, tag
    assert [s for s in merged["losses/td_loss"] if s < step], "the points before the checkpoint are kept"
    assert [s for s in killed["losses/td_loss"] if s > step], "the killed run logged a loss past its checkpoint"


# a kill during a checkpoint write
class Killed(Exception):
    pass


def test_kill_during_a_checkpoint_write_leaves_the_previous_checkpoint(killed_run, tmp_path, monkeypatch):
    """The next checkpoint's write dies after its state.pt and a frame chunk, before replay.npz (as a SIGKILL
    would leave it); the run raises it at its next checkpoint. --resume then continues from the previous
    one, and the next checkpoint cleans up."""
    monkeypatch.chdir(tmp_path)
    run_dir, step = copy_run(killed_run, tmp_path), killed_run["step"]
    resume = f"runs/{killed_run['run_name']}"
    before = snapshot(run_dir / f"checkpoint-{step}")

    def save_and_die(rb, folder, *args):
        np.save(folder / "frames-00000.npy", rb.frames[:, : rb.filled].cpu().numpy())
        raise Killed

    with monkeypatch.context() as mp:
        mp.setattr(dqn_atari_fast, "save_replay_buffer", save_and_die)
        with pytest.raises(Killed):
            dqn_atari_fast.train(dqn_atari_fast.Args(resume=resume, total_timesteps=step + 200, checkpoint_frequency=100, cuda=False))
    partial = run_dir / "checkpoint.partial"
    assert (partial / "state.pt").is_file() and (partial / "frames-00000.npy").is_file() and not (partial / "replay.npz").exists()
    assert torch.load(partial / "state.pt", weights_only=True)["global_step"] == step + 100, "the write was interrupted"

    state, folder, args = dqn_atari_fast.load_checkpoint(resume, dqn_atari_fast.Args())
    assert folder == Path(resume) / f"checkpoint-{step}" and state["global_step"] == step
    assert args.total_timesteps == 1_000_000 and args.checkpoint_frequency == 1000, "the run's own arguments"
    assert snapshot(run_dir / f"checkpoint-{step}") == before, "the previous checkpoint is untouched"

    result = dqn_atari_fast.train(dqn_atari_fast.Args(resume=resume, total_timesteps=step + 100, checkpoint_frequency=100, cuda=False))
    assert not result["interrupted"]
    assert checkpoint_pointer(run_dir) == {"folder": f"checkpoint-{step + 100}", "global_step": step + 100}
    assert sorted(p.name for p in run_dir.iterdir() if p.name.startswith("checkpoint")) == [f"checkpoint-{step + 100}", "checkpoint.json"]
    resumed_state, frames, arrays = load_checkpoint_files(run_dir / f"checkpoint-{step + 100}")
    assert resumed_state["global_step"] == step + 100 and frames.shape[1] == arrays["actions"].shape[1]


# checkpoints write what changed since the last one, in the background
def add_random_steps(rb, steps, rng):
    """`steps` steps of random 6x6 frames into both games of rb, some of them ending an episode."""
    for _ in range(steps):
        obs, next_obs = (torch.from_numpy(rng.integers(0, 256, (2, 4, 6, 6), dtype=np.uint8)) for _ in range(2))
        ended = rng.random(2) < 0.05
        rb.add(obs, rng.integers(4, size=2), rng.random(2), next_obs, ended, np.zeros(2, dtype=bool))


def test_checkpoints_write_the_changed_chunks_in_the_background(tmp_path, monkeypatch):
    """Chunks of 32 slots a game, 16 of them. Four checkpoints, each written while the next steps are added
    (np.save is slowed down): each holds the memory as it was when it started, the chunks that the steps
    since the previous one did not touch are that one's files (hard links), and the others are new. After
    480 steps every chunk has changed, and the next steps overwrite the chunks that the checkpoint has yet
    to write: add() must wait for them. dqn_atari_fast.py only (see the module docstring)."""
    monkeypatch.setattr(dqn_atari_fast.CheckpointedReplayBuffer, "CHUNK_FRAMES", 64)
    rb = dqn_atari_fast.CheckpointedReplayBuffer(1000, 2, (6, 6), torch.device("cpu"), seed=0)
    assert (rb.chunk, len(rb.changed)) == (32, 16)
    save = np.save
    monkeypatch.setattr(np, "save", lambda *args, **kwargs: time.sleep(0.02) or save(*args, **kwargs))
    rng, run_dir, inodes = np.random.default_rng(0), tmp_path / "run", {}
    run_dir.mkdir()
    add_random_steps(rb, 300, rng)
    linked_counts = []
    for step, steps_after in ((300, 150), (450, 480), (930, 150), (1080, 0)):
        expected = {name: getattr(rb, name).clone() for name in ("frames", *BUFFER_ARRAYS)}
        expected.update(pos=rb.pos.copy(), filled=rb.filled)
        touched = {int(c) for c in np.flatnonzero(rb.changed)}
        dqn_atari_fast.save_checkpoint(run_dir, {"global_step": step}, rb)
        add_random_steps(rb, steps_after, rng)  # while the checkpoint is written
        rb.wait_for_checkpoint()
        folder = run_dir / f"checkpoint-{step}"
        assert checkpoint_pointer(run_dir) == {"folder": folder.name, "global_step": step}
        assert sorted(p.name for p in run_dir.glob("checkpoint-*")) == [folder.name], "the previous one is removed"
        loaded = dqn_atari_fast.CheckpointedReplayBuffer(1000, 2, (6, 6), torch.device("cpu"), seed=1)
        dqn_atari_fast.load_replay_buffer(loaded, folder)
        assert loaded.filled == expected["filled"]
        for name in ("frames", *BUFFER_ARRAYS):
            assert torch.equal(getattr(loaded, name)[:, : loaded.filled], expected[name][:, : loaded.filled]), f"{name} at step {step}"
        chunks = sorted(folder.glob("frames-*.npy"))
        assert len(chunks) == -(-expected["filled"] // 32)
        now = {f.name: f.stat().st_ino for f in chunks}
        linked = {int(name[7:12]) for name, inode in now.items() if inodes.get(name) == inode}
        if inodes:  # the chunks of the steps since the previous checkpoint are written, the others linked
            assert linked == set(range(len(chunks))) - touched, (sorted(touched), sorted(linked))
            linked_counts.append(len(linked))
        inodes = now
    assert linked_counts[0] >= 8 and linked_counts[1] == 0 and linked_counts[2] >= 8, linked_counts

    # a checkpoint written before the frames were chunked (one frames.npy) loads the same
    _, frames, arrays = load_checkpoint_files(folder)
    for chunk in chunks:
        chunk.unlink()
    np.save(folder / "frames.npy", frames)
    np.savez(folder / "replay.npz", **{name: value for name, value in arrays.items() if name != "chunk"})
    legacy = dqn_atari_fast.CheckpointedReplayBuffer(1000, 2, (6, 6), torch.device("cpu"), seed=1)
    dqn_atari_fast.load_replay_buffer(legacy, folder)
    assert legacy.filled == loaded.filled and (legacy.pos == loaded.pos).all()
    for name in ("frames", *BUFFER_ARRAYS):
        assert torch.equal(getattr(legacy, name)[:, : legacy.filled], getattr(loaded, name)[:, : loaded.filled]), name


# bad --resume inputs, as a user runs them
def damage_state(run_dir):
    folder = run_dir / checkpoint_pointer(run_dir)["folder"]
    (folder / "state.pt").write_bytes(b"\x80\x02garbage, not a checkpoint" * 50)


def reshape_frames(run_dir):
    folder = run_dir / checkpoint_pointer(run_dir)["folder"]
    filled = np.load(folder / "frames-00000.npy", mmap_mode="r").shape[1]
    np.save(folder / "frames-00000.npy", np.zeros((1, filled, 42, 42), dtype=np.uint8))


BAD_RESUME = {  # case: (prepare the cwd -> the --resume folder, extra flags, what the error line must name)
    "missing folder": (lambda ctx: "runs/missing", [], ["no run folder", "runs/missing"]),
    "damaged state.pt": (lambda ctx: ctx.damaged("dqn", damage_state), [], ["damaged"]),
    "trained by ddqn_atari.py": (lambda ctx: ctx.damaged("ddqn", None), [], ["ddqn_atari.py"]),
    "another game": (lambda ctx: ctx.damaged("dqn", None), ["--env-id", "PongNoFrameskip-v4"], ["--env-id", ENV_ID]),
    "frames of the wrong shape": (lambda ctx: ctx.damaged("dqn", reshape_frames), [], ["replay buffer"]),
    # a flag typed with its default value is typed all the same: the killed run has --buffer-size 3000
    "another buffer, typed as the default": (lambda ctx: ctx.damaged("dqn", None), ["--buffer-size", "1000000"], ["--buffer-size", "3000"]),
    "more games": (lambda ctx: ctx.damaged("dqn", None), ["--num-envs", "2"], ["--num-envs 1", "one ring of transitions per game"]),
    "a total below the checkpoint": (lambda ctx: ctx.damaged("dqn", None), ["--total-timesteps", "500"], ["--total-timesteps 500", "checkpoint"]),
}


@pytest.fixture(scope="module")
def ddqn_run(tmp_path_factory):
    """A tiny ddqn_atari.py run with a checkpoint at its last step."""
    ddqn = importlib.import_module("ddqn_atari")
    cwd = tmp_path_factory.mktemp("ddqn")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        result = ddqn.train(ddqn.Args(checkpoint_frequency=64, **TINY_RUN))
    run_dir = cwd / "runs" / result["run_name"]
    assert (run_dir / "checkpoint.pt").is_file()
    return run_dir


@pytest.fixture(scope="module")
def bad_resume_runs(tmp_path_factory, killed_run, ddqn_run, script_env):
    """All cases at once (each mostly waits on imports): {case: (cwd, files before, returncode, stdout, stderr)}."""

    class Context:
        def __init__(self, cwd):
            self.cwd = cwd

        def damaged(self, which, damage):
            source = killed_run["pristine"] if which == "dqn" else ddqn_run
            run_dir = self.cwd / "runs" / source.name
            shutil.copytree(source, run_dir)
            if damage:
                damage(run_dir)
            return str(run_dir.relative_to(self.cwd))

    started = {}
    for case, (prepare, flags, _) in BAD_RESUME.items():
        cwd = tmp_path_factory.mktemp("bad_resume")
        resume = prepare(Context(cwd))
        logs = tmp_path_factory.mktemp("bad_resume_logs")
        before = snapshot(cwd)
        started[case] = (cwd, before, logs, start_script("dqn_atari_fast.py", ["--resume", resume, "--no-cuda", *flags], cwd, script_env, logs))
    results = {}
    for case, (cwd, before, logs, proc) in started.items():
        try:
            proc.wait(timeout=180)
        finally:
            end_group(proc)
        results[case] = (cwd, before, proc.returncode, *read_logs(logs))
    return results


@pytest.mark.parametrize("case", list(BAD_RESUME))
def test_bad_resume_is_one_error_line_and_changes_nothing(bad_resume_runs, case):
    cwd, before, returncode, out, err = bad_resume_runs[case]
    assert "Traceback" not in out + err, err
    assert returncode == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), f"stderr should be one 'error:' line:\n{err}"
    missing = [word for word in BAD_RESUME[case][2] if word not in lines[0]]
    assert not missing, f"the message should name {missing}: {lines[0]}"
    assert snapshot(cwd) == before, "the run folder (and everything else) must be left as it was"


# flags typed with --resume, and epsilon across a resume
@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    """A finished TINY_RUN with a checkpoint at its last step, saved with 1 evaluation game and lr 1e-3."""
    cwd = tmp_path_factory.mktemp("short")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        result = dqn_atari_fast.train(dqn_atari_fast.Args(checkpoint_frequency=64, eval_episodes=1, learning_rate=1e-3, **TINY_RUN))
    return cwd / "runs" / result["run_name"]


def test_resume_applies_every_typed_flag_even_at_its_default(short_run, tmp_path, monkeypatch, capsys):
    """--eval-episodes 10 and --total-timesteps 10000000 are the defaults, and typed: they take effect on a
    run saved with 1 game and 64 steps; --learning-rate 0.0001 (the default) on a run of lr 1e-3 is refused."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(short_run, tmp_path / "runs" / short_run.name)
    resume = ["--resume", f"runs/{short_run.name}", "--no-cuda"]
    with pytest.raises(SystemExit) as exit_info:
        dqn_atari_fast.main([*resume, "--learning-rate", "0.0001"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("error:") and len(err.strip().splitlines()) == 1, err
    assert "--learning-rate 0.001" in err and "drop --learning-rate 0.0001" in err, err

    argv = [*resume, "--total-timesteps", "10000000", "--eval-episodes", "10"]
    _, _, args = dqn_atari_fast.load_checkpoint(f"runs/{short_run.name}", dqn_atari_fast.Args(), dqn_atari_fast.typed_flags(argv))
    assert (args.total_timesteps, args.eval_episodes, args.learning_rate) == (10_000_000, 10, 1e-3)
    speed = [*resume, "--compile", "--env-backend", "ale-vector"]  # how fast the same run goes: taken
    _, _, args = dqn_atari_fast.load_checkpoint(f"runs/{short_run.name}", dqn_atari_fast.Args(compile=True, env_backend="ale-vector"), dqn_atari_fast.typed_flags(speed))
    assert args.compile and args.env_backend == "ale-vector" and args.learning_rate == 1e-3
    games = []  # the whole path through main(), with 16 more steps instead of 10M, and no games played
    monkeypatch.setattr(dqn_atari_fast, "evaluate", lambda q_network, env_id, eval_episodes, *a, **k: games.append(eval_episodes) or [0.0] * eval_episodes)
    dqn_atari_fast.main([*resume, "--total-timesteps", "80", "--eval-episodes", "10", "--save-model"])
    assert games == [10], "the typed --eval-episodes 10, not the saved 1"
    state, _, _ = load_checkpoint_files(tmp_path / "runs" / short_run.name / "checkpoint-80")
    assert state["args"]["eval_episodes"] == 10 and state["args"]["learning_rate"] == 1e-3


def test_an_extended_run_keeps_its_epsilon(tmp_path, monkeypatch):
    """A run of 1,000 steps (epsilon decays over its first 100) stopped at its checkpoint at step 50, then
    extended to 4,000 steps: epsilon goes on from 0.505 and reaches end-e at step 100, as the run started
    (recomputed from the new total, it would jump back up to 0.88). A checkpoint written before the decay
    length was saved goes on with the fraction of the total it was saved with: the same here."""
    epsilons, schedule = {}, dqn_atari_fast.linear_schedule

    def recording_schedule(start_e, end_e, duration, t):
        epsilons[t] = schedule(start_e, end_e, duration, t)
        return epsilons[t]

    original = dqn_atari_fast.save_checkpoint

    def save_checkpoint_then_stop(run_dir, state, rb):
        original(run_dir, state, rb)
        signal.raise_signal(signal.SIGTERM)  # the loop stops after the step of its first checkpoint

    monkeypatch.setattr(dqn_atari_fast, "linear_schedule", recording_schedule)
    monkeypatch.setattr(dqn_atari_fast, "save_checkpoint", save_checkpoint_then_stop)
    monkeypatch.chdir(tmp_path)
    run = dict(TINY_RUN, total_timesteps=1000, exploration_fraction=0.1, checkpoint_frequency=50)
    result = dqn_atari_fast.train(dqn_atari_fast.Args(**run))
    assert max(epsilons) == 49, "the run stopped at its checkpoint, mid-decay"
    shutil.copytree(tmp_path / "runs", tmp_path / "old" / "runs")
    for cwd, folder in ((tmp_path, "runs"), (tmp_path / "old", "runs")):
        monkeypatch.chdir(cwd)
        if cwd != tmp_path:  # as written before the decay length was saved
            path = Path(folder) / result["run_name"] / "checkpoint-50" / "state.pt"
            state = torch.load(path, weights_only=True)
            del state["exploration_steps"]
            torch.save(state, path)
        for t in range(50, 1000):
            epsilons.pop(t, None)
        dqn_atari_fast.train(dqn_atari_fast.Args(resume=f"{folder}/{result['run_name']}", total_timesteps=4000, checkpoint_frequency=120, cuda=False))
        assert sorted(epsilons) == list(range(120)), "both runs, stopped at the checkpoint of step 120"
        for t, epsilon in epsilons.items():
            assert epsilon == pytest.approx(schedule(1.0, 0.01, 100, t)), f"step {t}"


# Ctrl-C
def test_ctrl_c_writes_a_checkpoint_and_the_model_and_prints_the_resume_command(tmp_path, script_env):
    """SIGINT to the script's process only (as `kill -INT` does): it stops after the current step, writes
    a checkpoint and the model, closes its games and tells how to continue."""
    cwd, logs = tmp_path / "cwd", tmp_path / "logs"
    cwd.mkdir()
    logs.mkdir()
    args = ["--total-timesteps", "1000000", "--checkpoint-frequency", "100000", "--buffer-size", "2000",
            "--learning-starts", "100000", "--no-cuda"]  # fmt: skip
    proc = start_script("dqn_atari_fast.py", args, cwd, script_env, logs)
    try:
        deadline = time.time() + 120
        while not any(scalar_steps(p).get("charts/SPS") for p in cwd.glob("runs/*")):  # step 1,000
            assert proc.poll() is None, read_logs(logs)[1]
            assert time.time() < deadline, "the run never reached step 1,000"
            time.sleep(0.3)
        os.kill(proc.pid, signal.SIGINT)
        returncode = proc.wait(timeout=120)
        orphans = processes_left_in_group(proc.pid)
    finally:
        end_group(proc)
    out, err = read_logs(logs)
    assert "Traceback" not in err, err
    assert returncode == 0, err
    assert not orphans, f"game processes left behind: {orphans}"
    (run_dir,) = (cwd / "runs").iterdir()
    stopped = re.findall(r"stopped at step ([\d,]+): writing a checkpoint", out)
    assert len(stopped) == 1, out
    step = int(stopped[0].replace(",", ""))
    assert step >= 1000
    assert f"continue it with: python dqn_atari_fast.py --resume runs/{run_dir.name}\n" in out, out
    assert "learning had not started yet (it starts after step 100,000)" in out, "a stop before learning says so"
    assert checkpoint_pointer(run_dir) == {"folder": f"checkpoint-{step}", "global_step": step}
    state, frames, arrays = load_checkpoint_files(run_dir / f"checkpoint-{step}")
    assert state["global_step"] == step and frames.shape[1] == arrays["actions"].shape[1] > 0.9 * step
    q_network, saved_args = dqn_atari_fast.load_model(str(run_dir / "dqn_atari_fast.pt"), torch.device("cpu"))
    assert saved_args["total_timesteps"] == 1_000_000
    assert_same(q_network.state_dict(), state["q_network"], "saved model vs checkpoint")
    with contextlib.chdir(cwd):  # the printed folder is one that --resume takes
        resumable, _, resumed_args = dqn_atari_fast.load_checkpoint(f"runs/{run_dir.name}", dqn_atari_fast.Args())
    assert resumable["global_step"] == step and resumed_args.buffer_size == 2000


def test_stop_during_a_checkpoint_write_keeps_that_checkpoint(tmp_path, monkeypatch, capsys):
    """Ctrl-C while a periodic checkpoint is written (it can take minutes): the loop stops at that step,
    whose checkpoint is complete; writing it again would first delete it, and a second Ctrl-C or a kill
    during that rewrite would leave no checkpoint at all."""
    monkeypatch.chdir(tmp_path)
    steps = []
    original = dqn_atari_fast.save_checkpoint

    def save_checkpoint_then_ctrl_c(run_dir, state, rb):
        original(run_dir, state, rb)
        steps.append(state["global_step"])
        if len(steps) == 1:
            signal.raise_signal(signal.SIGINT)  # the handler only asks the loop to stop

    monkeypatch.setattr(dqn_atari_fast, "save_checkpoint", save_checkpoint_then_ctrl_c)
    handler = signal.getsignal(signal.SIGINT)
    result = dqn_atari_fast.train(dqn_atari_fast.Args(total_timesteps=100_000, checkpoint_frequency=200, learning_starts=50_000,
                                            buffer_size=1000, batch_size=8, cuda=False))  # fmt: skip
    assert signal.getsignal(signal.SIGINT) is handler, "the signal handlers are restored"
    out = capsys.readouterr().out
    assert steps == [200], "the checkpoint of the step it stopped at is not written twice"
    assert result["interrupted"]
    run_dir = Path(f"runs/{result['run_name']}")
    assert checkpoint_pointer(run_dir) == {"folder": "checkpoint-200", "global_step": 200}
    assert dqn_atari_fast.load_checkpoint(str(run_dir), dqn_atari_fast.Args())[0]["global_step"] == 200
    assert "stopped at step 200" in out and f"continue it with: python dqn_atari_fast.py --resume {run_dir}" in out, out
    assert Path(result["model_path"]).is_file()


def test_a_run_stopped_before_learning_starts_says_its_network_is_untrained(tmp_path, monkeypatch, capsys):
    """A stop (here a SIGTERM after 5 steps of TINY_RUN, which learns from step 16) saves the network as any
    stop does, and says that it has not learned yet."""
    monkeypatch.chdir(tmp_path)
    add = dqn_atari_fast.ReplayBuffer.add
    steps = []

    def add_then_stop(self, *args, **kwargs):
        add(self, *args, **kwargs)
        steps.append(1)
        if len(steps) == 5:
            signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(dqn_atari_fast.ReplayBuffer, "add", add_then_stop)
    result = dqn_atari_fast.train(dqn_atari_fast.Args(checkpoint_frequency=0, **TINY_RUN))
    out = capsys.readouterr().out
    assert result["interrupted"] and Path(result["model_path"]).is_file()
    assert "learning had not started yet (it starts after step 16): the saved network is untrained" in out
    assert f"evaluate it with: python dqn_atari_fast.py --eval-only {result['model_path']}" in out
    last = last_line_of_the_run(out, Path(f"runs/{result['run_name']}"))
    assert last.endswith(": TensorBoard events, the model dqn_atari_fast.pt"), "--checkpoint-frequency 0: no checkpoint"


# the Hugging Face Hub
HUB_RUNS = {"dqn_atari_fast": ("hf_fake_token", True)}  # script: (the token get_token returns, --capture-video)


@pytest.fixture(scope="module")
def hub_run(tmp_path_factory):
    """hub_run(script): a tiny run with --upload-model --hf-entity tester and one evaluation game, with a
    fake upload_folder_to_hub and huggingface_hub.get_token; run once per script."""
    runs = {}

    def run(name):
        if name not in runs:
            module = importlib.import_module(name)
            token, capture_video = HUB_RUNS[name]
            cwd, uploads, out = tmp_path_factory.mktemp(f"hub_{name}"), [], io.StringIO()
            with pytest.MonkeyPatch.context() as mp:
                mp.chdir(cwd)
                mp.setattr(module, "upload_folder_to_hub", lambda repo_id, folder: uploads.append((repo_id, Path(folder))) or f"https://huggingface.co/{repo_id}")
                mp.setattr(huggingface_hub, "get_token", lambda: token)
                with contextlib.redirect_stdout(out):
                    result = module.train(module.Args(upload_model=True, hf_entity="tester", eval_episodes=1, capture_video=capture_video, **TINY_RUN))
            runs[name] = {"cwd": cwd, "result": result, "uploads": uploads, "stdout": out.getvalue(),
                          "run_dir": cwd / "runs" / result["run_name"]}  # fmt: skip
        return runs[name]

    return run


def front_matter(readme):
    assert readme.startswith("---\n"), readme[:100]
    return yaml.safe_load(readme[4:].split("\n---\n", 1)[0])


@pytest.mark.parametrize("name", list(HUB_RUNS))
def test_upload_model_builds_the_hub_folder(hub_run, name):
    run = hub_run(name)
    folder, result = run["run_dir"] / "hub", run["result"]
    repo_id = f"tester/{ENV_ID}-{name}-seed1"
    assert (folder / f"{name}.pt").read_bytes() == Path(run["cwd"] / result["model_path"]).read_bytes(), "the weights"
    assert (folder / f"{name}.py").read_bytes() == (ROOT / f"{name}.py").read_bytes(), "the script"
    args = json.loads((folder / "args.json").read_text())
    assert args["env_id"] == ENV_ID and args["exp_name"] == name and args["total_timesteps"] == 64

    meta = front_matter((folder / "README.md").read_text())
    assert {"reinforcement-learning", "deep-reinforcement-learning", ENV_ID} <= set(meta["tags"])
    results = meta["model-index"][0]["results"][0]
    assert results["dataset"]["name"] == ENV_ID
    metric = results["metrics"][0]
    assert metric["type"] == "mean_reward"
    value = re.fullmatch(r"(-?\d+\.\d+) \+/- (\d+\.\d+)", str(metric["value"]))
    assert value, metric["value"]
    returns = result["eval_returns"]
    assert len(returns) == 1 and returns[0] >= 0
    assert float(value[1]) == pytest.approx(np.mean(returns), abs=0.005) and float(value[2]) == pytest.approx(np.std(returns), abs=0.005)
    assert repo_id in (folder / "README.md").read_text(), "the card tells how to evaluate the uploaded model"

    token, capture_video = HUB_RUNS[name]
    if token:
        assert run["uploads"] == [(repo_id, folder.relative_to(run["cwd"]))], "the folder, relative to the working directory"
        assert f"uploaded to https://huggingface.co/{repo_id}" in run["stdout"]
    else:  # not logged in: no upload; the folder stays, with the command that uploads it, and the model
        assert run["uploads"] == []
        lines = [line for line in run["stdout"].splitlines() if "not logged in" in line]
        assert len(lines) == 1 and f"hf upload {repo_id} {folder.relative_to(run['cwd'])} ." in lines[0], run["stdout"]
        q_network, saved_args = dqn_atari_fast.load_model(str(run["cwd"] / result["model_path"]), torch.device("cpu"))
        assert saved_args["exp_name"] == name and q_network(torch.zeros((1, 4, 84, 84), dtype=torch.uint8)).shape == (1, 6)
    if capture_video:
        assert (folder / "replay.mp4").stat().st_size > 1000, "the evaluation video"
    else:
        assert not (folder / "replay.mp4").exists()


def test_failed_upload_keeps_the_folder_and_prints_the_command(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = dqn_atari_fast.Args(upload_model=True, hf_entity="tester", env_id="PongNoFrameskip-v4", seed=3)
    model_path = tmp_path / "runs" / "run" / "dqn_atari_fast.pt"
    dqn_atari_fast.save_model(model_path, dqn_atari_fast.QNetwork(6), args)

    def offline(repo_id, folder):
        raise ConnectionError("no network")

    monkeypatch.setattr(dqn_atari_fast, "upload_folder_to_hub", offline)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_fake_token")
    dqn_atari_fast.push_to_hub(args, "run", model_path, [-21.0, -19.0], "videos/none")
    out = capsys.readouterr().out
    assert "failed (ConnectionError)" in out and f"hf upload tester/PongNoFrameskip-v4-dqn_atari_fast-seed3 {model_path.parent / 'hub'} ." in out
    meta = front_matter((model_path.parent / "hub" / "README.md").read_text())
    assert meta["model-index"][0]["results"][0]["metrics"][0]["value"] == "-20.00 +/- 1.00"
    assert model_path.is_file() and (model_path.parent / "hub" / "dqn_atari_fast.pt").is_file()


def test_slash_env_id_makes_one_folder_level_and_a_valid_repo_id(tmp_path, monkeypatch, capsys):
    """gymnasium's recommended ids hold a slash (ALE/Pong-v5): the run is one folder under runs/, the Hub repo
    id is valid, and the env id itself stays in args.json and in the card's dataset field."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    result = dqn_atari_fast.train(dqn_atari_fast.Args(env_id="ALE/Pong-v5", upload_model=True, hf_entity="tester", eval_episodes=1, **TINY_RUN))
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [result["run_name"]]
    assert result["run_name"].startswith("ALE-Pong-v5__dqn_atari_fast__1__")
    (repo_id,) = re.findall(r"hf upload (\S+) ", capsys.readouterr().out)
    assert repo_id == "tester/ALE-Pong-v5-dqn_atari_fast-seed1"
    hub = tmp_path / "runs" / result["run_name"] / "hub"
    assert json.loads((hub / "args.json").read_text())["env_id"] == "ALE/Pong-v5"
    assert front_matter((hub / "README.md").read_text())["model-index"][0]["results"][0]["dataset"]["name"] == "ALE/Pong-v5"


# --eval-only with a Hub repo id
def test_eval_only_downloads_the_model_from_a_hub_repo(hub_run, tmp_path, monkeypatch, capsys):
    """The uploaded folder served as the Hub repo: the same games as the evaluation at the end of training."""
    run = hub_run("dqn_atari_fast")
    repo_id = f"tester/{ENV_ID}-dqn_atari_fast-seed1"
    calls = serve_as_hub_repo(monkeypatch, run["run_dir"] / "hub")
    monkeypatch.chdir(tmp_path)
    returns = dqn_atari_fast.eval_only(dqn_atari_fast.Args(eval_only=repo_id, eval_episodes=1, cuda=False))
    assert calls == [("list", repo_id), ("download", repo_id, "dqn_atari_fast.pt")]
    assert returns == run["result"]["eval_returns"], "the model of the run, on the same evaluation game"
    assert "evaluation over 1 game:" in capsys.readouterr().out
    assert not (tmp_path / "runs").exists()


def test_eval_only_with_a_failing_download_is_a_usage_error(tmp_path, monkeypatch, capsys):
    repo_id = "tester/NoSuchRepo"

    def hf_hub_download(repo_id, filename, **kwargs):
        raise OSError("connection refused")

    files = [SimpleNamespace(rfilename=name) for name in ("README.md", "dqn_atari_fast.pt")]
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", lambda self, repo_id, **kwargs: SimpleNamespace(siblings=files))
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(dqn_atari_fast.UsageError, match=repo_id):
        dqn_atari_fast.resolve_model_path(repo_id)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        dqn_atari_fast.main(["--eval-only", repo_id, "--no-cuda"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and repo_id in err and len(err.strip().splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []


def test_two_runs_started_in_the_same_second_get_a_folder_each(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(dqn_atari_fast.time, "time", lambda: 1_700_000_000.0)
    names = [dqn_atari_fast.make_run_folder(dqn_atari_fast.Args()) for _ in range(2)]
    assert names[1] == names[0] + "-2" and all((tmp_path / "runs" / name).is_dir() for name in names)


def test_a_run_folder_that_cannot_be_made_is_one_error_line(tmp_path, monkeypatch, capsys):
    """As from a folder that cannot be written: one error line, exit code 2, before any game process starts."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").write_text("a file where the folder goes")
    with pytest.raises(SystemExit) as exit_info:
        dqn_atari_fast.main(["--total-timesteps", "1000", "--learning-starts", "100", "--buffer-size", "1000", "--num-envs", "2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and err[0].startswith("error: cannot write the run folder runs/"), err


def test_resume_keeps_the_first_legs_videos(tmp_path, monkeypatch):
    """As in the pair: the resumed leg films into videos/<run>/resumed-at-<step>/, and the first leg's videos
    keep their bytes (gymnasium's camera would otherwise start again at rl-video-episode-0.mp4 over them)."""
    monkeypatch.chdir(tmp_path)
    first = dqn_atari_fast.train(dqn_atari_fast.Args(capture_video=True, checkpoint_frequency=64, **TINY_RUN))
    before = {path: path.read_bytes() for path in Path("videos").rglob("*.mp4")}
    assert before, "the first leg filmed nothing"
    dqn_atari_fast.train(dqn_atari_fast.Args(resume=f"runs/{first['run_name']}", total_timesteps=128, capture_video=True))
    after = {path: path.read_bytes() for path in Path("videos").rglob("*.mp4")}
    assert all(after.get(path) == video for path, video in before.items()), "a video of the first leg changed"
    assert list(Path("videos", first["run_name"], "resumed-at-64").glob("*.mp4")), sorted(map(str, after))


def test_a_full_disk_during_a_checkpoint_is_one_error_line_and_keeps_the_last_one(short_run, tmp_path, monkeypatch, capsys):
    """The background write fails (no space left): one error line, exit code 2, and the checkpoint that was
    on disk before is whole and still the one --resume reads."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(short_run, tmp_path / "runs" / short_run.name)
    run_dir = tmp_path / "runs" / short_run.name
    before = {p.relative_to(run_dir): p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and "checkpoint" in str(p)}

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(dqn_atari_fast.torch, "save", full_disk)
    with pytest.raises(SystemExit) as exit_info:
        dqn_atari_fast.main(["--resume", f"runs/{short_run.name}", "--total-timesteps", "200", "--checkpoint-frequency", "64", "--no-cuda"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and "No space left on device" in err[0] and "checkpoint" in err[0], err
    after = {p.relative_to(run_dir): p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and "checkpoint" in str(p)}
    assert after == before
