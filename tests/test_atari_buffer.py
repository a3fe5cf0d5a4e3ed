"""The frame-once ReplayBuffer of dqn_atari.py: it gives back exactly the 4-frame stacks the agent saw, takes
only complete transitions, and its memory is a frame per slot."""

import gymnasium as gym
import numpy as np
import torch

import dqn_atari
from games import EpisodesGame


def play(rb, steps, seed=0, also=None):
    """Play EpisodesGame as train() does (explicit reset at an episode's end) into rb (and `also`); returns every
    transition."""
    env = gym.wrappers.FrameStackObservation(EpisodesGame(0), 4)
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    seen = {}
    for _ in range(steps):
        action = int(rng.integers(3))
        next_obs, reward, terminated, truncated, _ = env.step(action)
        for buffer in (rb, also) if also else (rb,):
            buffer.add(obs, action, reward, next_obs, terminated, truncated)
        seen[obs.tobytes() + next_obs.tobytes()] = (action, reward, float(terminated))
        obs = next_obs
        if terminated or truncated:
            obs, _ = env.reset()
    return seen


def test_replay_buffer_returns_exactly_what_the_agent_saw():
    """Across many wrap-arounds of a 50-slot ring: each sampled (obs, next_obs) pair is one the agent really met,
    with its action, reward and termination (truncation is no termination), and the newest transitions are drawn."""
    rb = dqn_atari.ReplayBuffer(50, torch.device("cpu"), seed=0)
    seen = play(rb, 400)
    batch = rb.sample(3000)
    drawn = set()
    for i in range(3000):
        obs, next_obs = batch.observations[i].numpy(), batch.next_observations[i].numpy()
        key = obs.tobytes() + next_obs.tobytes()
        assert key in seen, f"draw {i}: a stack the agent never saw"
        expected = seen[key]
        assert (int(batch.actions[i, 0]), float(batch.rewards[i]), float(batch.dones[i])) == expected
        drawn.add(key)
    assert len(drawn) >= 30, "the draws cover the ring's transitions"
    assert batch.observations.dtype == torch.uint8 and batch.actions.shape == (3000, 1)


def test_it_draws_what_the_courses_deque_of_the_same_size_holds():
    """ReplayBuffer is SimpleReplayBuffer with each frame stored once: its ring holds the newest transitions, a subset
    of what the deque of as many transitions holds, and both give the same batches: dtypes, shapes, values."""
    rb, deque = dqn_atari.ReplayBuffer(60, torch.device("cpu"), 0), dqn_atari.SimpleReplayBuffer(60, torch.device("cpu"), 0)
    play(rb, 400, also=deque)
    held = {o.tobytes() + n.tobytes(): (a, r, float(d)) for o, a, r, n, d in deque.memory}
    frame_once, course = rb.sample(2000), deque.sample(2000)
    for batch in (frame_once, course):
        for i in range(2000):
            key = batch.observations[i].numpy().tobytes() + batch.next_observations[i].numpy().tobytes()
            assert held[key] == (int(batch.actions[i, 0]), float(batch.rewards[i]), float(batch.dones[i])), f"draw {i}"
    for field, a, b in zip(frame_once._fields, frame_once, course):
        assert a.dtype == b.dtype and a.shape == b.shape, field
    assert len(set(map(bytes, course.observations.numpy()))) > 40, "the deque's draws cover its transitions"


def test_sample_takes_only_complete_transitions():
    """The slot being written, the 3 after it and an episode's last frame start no transition: never drawn."""
    rb = dqn_atari.ReplayBuffer(10, torch.device("cpu"), seed=0)
    play(rb, 23)
    assert not rb.valid[[(rb.pos + k) % 10 for k in range(4)]].any()
    slots = set()
    for _ in range(50):
        batch = rb.sample(8)
        slots.update(int(s) for s in np.flatnonzero(rb.valid))
        assert batch.observations.shape == (8, 4, 84, 84)
    assert slots and all(rb.valid[s] for s in slots)


def test_replay_buffer_memory():
    """A frame per slot, allocated by numpy as it is written: 1M slots are about 7.1 GB (the Args docstring), and
    check_args counts all of it."""
    rb = dqn_atari.ReplayBuffer(1000, torch.device("cpu"), seed=0)
    total = sum(v.nbytes for v in vars(rb).values() if isinstance(v, np.ndarray))
    assert 84 * 84 * 1000 <= total <= (84 * 84 + 18) * 1000
