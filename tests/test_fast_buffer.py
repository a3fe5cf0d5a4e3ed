"""The frame-once ReplayBuffer of dqn_atari_fast.py (one ring per game, on the device): it must give back exactly the 4-frame stacks the agent saw.

The transitions are stored by the script's own train() loop (so the test covers what train() passes to
rb.add under gymnasium's next-step autoreset), on a stub game that paints into each frame who made it.
"""

import gymnasium as gym
import numpy as np
import pytest
import torch

from games import END, EPISODE_HI, EPISODE_LO, GAME, NOT_AN_END, TERMINATED, TRUNCATED, T, EpisodesGame

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def algo(fast):
    return fast

def make_episodes_game(env_id, seed, idx, capture_video, run_name, training=True):
    def thunk():
        env = gym.wrappers.FrameStackObservation(EpisodesGame(idx), 4)
        env.action_space.seed(seed)
        return env

    return thunk


def frame_id(frame):
    f = np.asarray(frame)
    return int(f[0, GAME]), int(f[0, EPISODE_LO]) + 256 * int(f[0, EPISODE_HI]), int(f[0, T])


@pytest.fixture
def recorded_buffer(algo, tmp_path, monkeypatch):
    """Runs train() without learning and returns (the ReplayBuffer, every rb.add call's arguments)."""

    def run(num_envs, buffer_size, total_timesteps):
        calls, buffers = [], []

        class RecordingBuffer(algo.CheckpointedReplayBuffer):  # the replay memory train() makes
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                buffers.append(self)

            def add(self, obs, actions, rewards, next_obs, terminations, truncations, *args, **kwargs):
                calls.append([np.array(x) for x in (obs, actions, rewards, next_obs, terminations, truncations)])
                return super().add(obs, actions, rewards, next_obs, terminations, truncations, *args, **kwargs)

        monkeypatch.chdir(tmp_path)
        monkeypatch.setattr(algo, "CheckpointedReplayBuffer", RecordingBuffer)
        args = algo.Args(
            env_id="EpisodesGame", num_envs=num_envs, buffer_size=buffer_size, total_timesteps=total_timesteps,
            learning_starts=total_timesteps - 1, batch_size=4, cuda=False,  # no gradient step: only the buffer
        )  # fmt: skip
        algo.train(args, make_env=make_episodes_game)
        (rb,) = buffers
        return rb, calls

    return run


def true_transitions(calls):
    """What the games really did, from the frames alone: every step that started from a frame that is not
    the last of an episode (the step after an episode end only resets the game: it is no transition).
    Returns {(game, episode, t): (obs, action, reward, next_obs, terminated)} and, per game, the keys in order."""
    transitions, order = {}, {}
    for obs, actions, rewards, next_obs, terminations, truncations in calls:
        for i in range(len(obs)):
            if obs[i, -1, 0, END] != NOT_AN_END:
                assert rewards[i] == 0, "the autoreset step must pay nothing"
                continue
            key = frame_id(obs[i, -1])
            nxt = frame_id(next_obs[i, -1])
            # sanity of the reference itself: the next observation is the real next frame, even on truncation
            assert nxt == (key[0], key[1], key[2] + 1)
            assert next_obs[i, -1, 0, END] == (TERMINATED if terminations[i] else TRUNCATED if truncations[i] else NOT_AN_END)
            if key[2] < 3:  # the stack of an early frame repeats the episode's first frame
                for k in range(3 - key[2]):
                    np.testing.assert_array_equal(obs[i, k], obs[i, 3 - key[2]])
            transitions[key] = (obs[i], int(actions[i]), float(rewards[i]), next_obs[i], bool(terminations[i]), bool(truncations[i]))
            order.setdefault(key[0], []).append(key)
    return transitions, order


def sample_all(rb, draws):
    """Many random draws: every transition the buffer holds shows up (each of <= 200 slots is missed by
    3,000 draws with probability < 1e-6; the draws are seeded, so the test is deterministic anyway)."""
    batches = [rb.sample(500) for _ in range(draws // 500)]
    return {field: torch.cat([getattr(b, field) for b in batches]).cpu().numpy() for field in batches[0]._fields}


@pytest.mark.parametrize("num_envs, buffer_size, total_timesteps", [(1, 50, 180), (3, 120, 360)])
def test_replay_buffer_returns_exactly_what_the_agent_saw(recorded_buffer, num_envs, buffer_size, total_timesteps):
    rb, calls = recorded_buffer(num_envs, buffer_size, total_timesteps)
    transitions, order = true_transitions(calls)
    assert sum(t[4] for t in transitions.values()) >= 5 and sum(t[5] for t in transitions.values()) >= 3
    capacity = buffer_size // num_envs
    assert all(len(keys) > 2 * capacity for keys in order.values()), "the ring must wrap around"

    batch = sample_all(rb, 3000)
    seen = set()
    for j in range(len(batch["actions"])):
        key = frame_id(batch["observations"][j, -1])
        assert key in transitions, f"sampled {key}: not a transition the agent made (an autoreset step?)"
        obs, action, reward, next_obs, terminated, _ = transitions[key]
        np.testing.assert_array_equal(batch["observations"][j], obs, err_msg=f"observation of {key}")
        np.testing.assert_array_equal(batch["next_observations"][j], next_obs, err_msg=f"next observation of {key}")
        assert batch["actions"][j, 0] == action
        assert batch["rewards"][j] == reward
        assert batch["dones"][j] == float(terminated), "done must be 1 on termination only (truncation bootstraps)"
        seen.add(key)
    assert batch["observations"].dtype == np.uint8 and batch["observations"].shape[1:] == (4, 84, 84)

    # the ring holds the newest transitions: each takes one slot, plus one for the last frame of an episode
    # (ReplayBuffer's docstring); every one whose frames cannot have been overwritten must be there
    for game, keys in order.items():
        slots = np.cumsum([0] + [1 + (transitions[k][4] or transitions[k][5]) for k in keys[:-1]])
        frontier = slots[-1] + 1  # the next observation's frame of the newest transition
        must_hold = [k for k, s in zip(keys, slots) if s - 3 > frontier - capacity]
        assert len(must_hold) >= capacity // 2
        missing = [k for k in must_hold if k not in seen]
        assert not missing, f"game {game}: transitions missing from the buffer: {missing}"
        assert keys[-1] in seen


def test_replay_buffer_memory(algo):
    """1M transitions of 84x84 frames fit in 7.5 GB, and a real buffer uses what bytes_per_slot says."""
    per_slot = algo.ReplayBuffer.bytes_per_slot((84, 84))
    assert per_slot * 1_000_000 <= 7.5e9
    num_envs, buffer_size = 3, 30
    rb = algo.ReplayBuffer(buffer_size, num_envs, (84, 84), torch.device("cpu"), 0)
    per_slot_bytes = 0
    for name, value in vars(rb).items():
        if isinstance(value, torch.Tensor):
            nbytes = value.element_size() * value.nelement()
        elif isinstance(value, np.ndarray):
            nbytes = value.nbytes
        else:
            continue
        if tuple(value.shape[:2]) == (num_envs, rb.capacity):
            per_slot_bytes += nbytes
        else:
            assert value.size == num_envs if isinstance(value, np.ndarray) else value.nelement() <= num_envs, name
    assert rb.capacity * num_envs == buffer_size
    assert per_slot_bytes == per_slot * buffer_size


def test_sample_takes_only_complete_transitions_without_redrawing(algo):
    """sample() draws a fixed number of candidates per sample (no loop that waits for the device) and keeps
    the first complete one. With one complete transition among two slots, 1 sample in 256 finds none among
    its 8 candidates and takes the game's newest transition: every sample must be that transition."""
    rb = algo.ReplayBuffer(10, 1, (84, 84), torch.device("cpu"), 0)
    frames = torch.stack([torch.full((84, 84), value, dtype=torch.uint8) for value in (7, 9)])
    obs, next_obs = frames[[0, 0, 0, 0]][None], frames[[0, 0, 0, 1]][None]  # an episode's first step, its last
    one = np.ones(1, dtype=bool)
    rb.add(obs, np.array([2]), np.array([1.5]), next_obs, terminations=one, truncations=~one)  # a new buffer: obs starts an episode
    assert rb.filled == 2 and rb.valid.tolist() == [[True] + [False] * 9]
    batch = rb.sample(2000)
    assert torch.equal(batch.observations, obs.expand(2000, -1, -1, -1))
    assert torch.equal(batch.next_observations, next_obs.expand(2000, -1, -1, -1))
    assert (batch.actions == 2).all() and (batch.rewards == 1.5).all() and (batch.dones == 1).all()
