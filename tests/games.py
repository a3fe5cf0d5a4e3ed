"""Tiny games the Atari scripts train on in the tests, and the TensorBoard reader (pytest puts tests/ on sys.path)."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def scalars(run_dir):
    """{tag: [(step, value)]} of a run folder's TensorBoard events."""
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


class SideGame(gym.Env):
    """A bright square on the left or the right of a noisy 84x84 frame; the action that names the side
    (0: left, 1: right) pays 1, the other 0; one-step episodes."""

    observation_space = gym.spaces.Box(0, 255, (84, 84), np.uint8)
    action_space = gym.spaces.Discrete(2)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.side = int(self.np_random.integers(2))
        self.obs = self.np_random.integers(0, 40, (84, 84), dtype=np.uint8)
        y, x = self.np_random.integers(0, 84 - 16), self.np_random.integers(0, 42 - 16) + 42 * self.side
        self.obs[y : y + 16, x : x + 16] = 255
        return self.obs, {}

    def step(self, action):
        return self.obs, float(action == self.side), True, False, {}


def side_game(seed):
    env = gym.wrappers.FrameStackObservation(gym.wrappers.RecordEpisodeStatistics(SideGame()), 4)
    env.action_space.seed(seed)
    return env


# env_id: a real Atari id, which the scripts check; make_env plays SideGame in its place
SIDE_GAME_RUN = dict(
    env_id="PongNoFrameskip-v4", total_timesteps=400, learning_starts=64, batch_size=16, buffer_size=1000,
    train_frequency=1, learning_rate=1e-3, exploration_fraction=0.5, end_e=0.05,
    target_network_frequency=100, save_model=True, eval_episodes=0, cuda=False,
)  # fmt: skip


def train_on_side_game(algo, folder, make_env, **flags):
    """Train on SideGame in `folder`; returns the losses logged and the trained network's accuracy
    (the share of 200 fresh frames whose side the greedy policy names)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        result = algo.train(algo.Args(**SIDE_GAME_RUN, **flags), make_env=make_env)
    q_network, _ = algo.load_model(str(folder / result["model_path"]), torch.device("cpu"))
    game = SideGame()
    game.reset(seed=12345)  # fresh frames: the training games were seeded with args.seed
    obs, sides = [], []
    for _ in range(200):
        frame, _ = game.reset()
        obs.append(np.stack([frame] * 4))  # a first observation: the frame, repeated
        sides.append(game.side)
    with torch.no_grad():
        actions = q_network(torch.as_tensor(np.array(obs))).argmax(dim=1).numpy()
    assert 0.2 < np.mean(sides) < 0.8
    losses = [v for _, v in scalars(folder / "runs" / result["run_name"])["losses/td_loss"]]
    return losses, np.mean(actions == np.array(sides))


GAME, EPISODE_LO, EPISODE_HI, T, ACTION, END = range(6)  # the pixels of row 0 that identify a frame
NOT_AN_END, TERMINATED, TRUNCATED = 0, 1, 2


class EpisodesGame(gym.Env):
    """Episodes of 1 to 11 steps that end terminated (a lost life, a game over) or truncated. Each frame
    shows (game, episode, step in the episode, the action that led to it, how the step ended) in its
    first row and a fill value made from them, so every frame of a run is unique."""

    observation_space = gym.spaces.Box(0, 255, (84, 84), np.uint8)
    action_space = gym.spaces.Discrete(3)

    def __init__(self, game):
        self.game = game
        self.episode = -1

    def frame(self, action, end):
        f = np.full((84, 84), (self.game * 50 + self.episode * 7 + self.t * 3 + 1) % 256, np.uint8)
        f[0, :6] = [self.game, self.episode % 256, self.episode // 256, self.t, action, end]
        return f

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.episode += 1
        self.t = 0
        self.length = int(self.np_random.integers(1, 12))
        self.truncate = bool(self.np_random.random() < 0.3)
        return self.frame(255, NOT_AN_END), {}

    def step(self, action):
        self.t += 1
        end = self.t == self.length
        terminated, truncated = end and not self.truncate, end and self.truncate
        reward = float(self.t * 10 + action)
        return self.frame(action, TERMINATED if terminated else TRUNCATED if truncated else NOT_AN_END), reward, terminated, truncated, {}
