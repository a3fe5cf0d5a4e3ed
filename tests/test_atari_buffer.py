"""The frame-once ReplayBuffer of dqn_atari.py: it gives back exactly the 4-frame stacks the agent saw, takes
only complete transitions, and its memory is a frame per slot."""

import gymnasium as gym
import numpy as np
import torch

import dqn_atari
from games import EpisodesGame


def play(rb, steps, seed=0):
    """Play EpisodesGame as train() does (explicit reset at an episode's end) into rb; returns every transition."""
    env = gym.wrappers.FrameStackObservation(EpisodesGame(0), 4)
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    seen = {}
    for _ in range(steps):
        action = int(rng.integers(3))
        next_obs, reward, terminated, truncated, _ = env.step(action)
        rb.add(obs, action, reward, next_obs, terminated, truncated)
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
