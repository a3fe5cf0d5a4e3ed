"""The Atari wrappers of dqn_atari_fast.py (those of the code before the split): each one against a stub game
whose frames, lives and rewards are known, then the whole evaluation stack against gymnasium's
AtariPreprocessing. The teaching pair uses AtariPreprocessing itself, and its evaluation is checked on Breakout."""

import gymnasium as gym
import numpy as np
import pytest

import dqn_atari

SHAPE = (8, 8)


@pytest.fixture
def algo(fast):
    return fast


class StubALE:
    def __init__(self, game):
        self.game = game

    def lives(self):
        return self.game.lives


class StubAtari(gym.Env):
    """A fake Atari game. Raw frame t of game number `games` lights one pixel of its own (value 100 + t),
    so a returned observation shows exactly which raw frames it was built from.
    `rewards[t]` is paid on raw frame t, a life is lost on each frame of `life_loss_at`,
    and the game ends (terminated) on raw frame `game_over_at`."""

    def __init__(self, rewards=None, life_loss_at=(), game_over_at=None, lives=3):
        self.observation_space = gym.spaces.Box(0, 255, SHAPE, np.uint8)
        self.action_space = gym.spaces.Discrete(4)
        self.ale = StubALE(self)
        self.rewards = rewards or {}
        self.life_loss_at = set(life_loss_at)
        self.game_over_at = game_over_at
        self.start_lives = lives
        self.games = 0  # real resets so far
        self.actions = []  # every action the game received, in order
        self.t = 0

    def get_action_meanings(self):
        return ["NOOP", "FIRE", "RIGHT", "LEFT"]

    def frame(self, t, game=None):
        game = self.games if game is None else game
        f = np.zeros(SHAPE, np.uint8)
        f.flat[(game * 17 + t) % f.size] = 100 + t
        return f

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.games += 1
        self.t = 0
        self.lives = self.start_lives
        return self.frame(0), {}

    def step(self, action):
        self.actions.append(int(action))
        self.t += 1
        if self.t in self.life_loss_at:
            self.lives -= 1
        terminated = self.t == self.game_over_at
        if terminated:
            self.lives = 0
        return self.frame(self.t), float(self.rewards.get(self.t, 0.0)), terminated, False, {}


def lit(obs):
    """The (pixel, value) pairs an observation shows."""
    return {(int(i), int(obs.flat[i])) for i in np.flatnonzero(obs)}


def frames_shown(game, ts, game_number=None):
    return set().union(*(lit(game.frame(t, game_number)) for t in ts))


# NoopResetEnv
def test_noop_reset_plays_1_to_30_seeded_noops(algo):
    counts = {}
    for seed in range(300):
        game = StubAtari()
        env = algo.NoopResetEnv(game, noop_max=30)
        obs, _ = env.reset(seed=seed)
        counts[seed] = len(game.actions)
        assert set(game.actions) == {0}, "no-op resets must only press NOOP"
        assert game.games == 1
        np.testing.assert_array_equal(obs, game.frame(counts[seed]))  # the observation after the last no-op
    assert min(counts.values()) == 1 and max(counts.values()) == 30
    assert len(set(counts.values())) > 20
    for seed in (0, 7, 123):  # seeded: the same seed gives the same number of no-ops
        game = StubAtari()
        algo.NoopResetEnv(game, noop_max=30).reset(seed=seed)
        assert len(game.actions) == counts[seed]


def test_noop_reset_restarts_a_game_that_ends_during_the_noops(algo):
    seed = next(s for s in range(100) if _noops(algo, s) >= 3)
    game = StubAtari(game_over_at=2)
    env = algo.NoopResetEnv(game, noop_max=30)
    env.reset(seed=seed)
    assert game.games >= 2, "a game that ended during the no-ops must be reset"
    assert game.t < 2


def _noops(algo, seed):
    game = StubAtari()
    algo.NoopResetEnv(game, noop_max=30).reset(seed=seed)
    return len(game.actions)


# MaxAndSkipEnv
def test_max_and_skip_repeats_action_maxes_last_two_frames_sums_rewards(algo):
    game = StubAtari(rewards={1: 1.0, 2: 2.0, 4: 4.0, 5: 8.0, 7: 16.0, 9: 32.0})
    env = algo.MaxAndSkipEnv(game, skip=4)
    env.reset(seed=0)
    obs, reward, terminated, truncated, _ = env.step(3)
    assert game.actions == [3, 3, 3, 3]
    assert reward == 1 + 2 + 4
    assert not terminated and not truncated
    # raw frames 3 and 4, pixel by pixel max: both sprites are visible, nothing from frames 1 and 2
    assert lit(obs) == frames_shown(game, [3, 4])
    obs, reward, _, _, _ = env.step(2)
    assert game.actions == [3, 3, 3, 3, 2, 2, 2, 2]
    assert reward == 8 + 16
    assert lit(obs) == frames_shown(game, [7, 8])
    assert obs.dtype == np.uint8 and obs.shape == SHAPE


def test_max_and_skip_stops_at_the_end_of_the_game(algo):
    game = StubAtari(rewards={5: 1.0, 6: 2.0, 7: 4.0}, game_over_at=6)
    env = algo.MaxAndSkipEnv(game, skip=4)
    env.reset(seed=0)
    env.step(0)
    obs, reward, terminated, _, _ = env.step(1)
    assert terminated
    assert game.actions == [0, 0, 0, 0, 1, 1], "no raw frame may be played after the game ended"
    assert reward == 1 + 2, "the reward of frames after the end must not be counted"
    assert lit(obs) == frames_shown(game, [5, 6])


def test_max_and_skip_after_reset_shows_nothing_of_the_previous_game(algo):
    game = StubAtari(game_over_at=8)
    env = algo.MaxAndSkipEnv(game, skip=4)
    env.reset(seed=0)
    env.step(0)
    assert env.step(0)[2], "game 1 ends on raw frame 8"
    old_game = frames_shown(game, range(9), game_number=1)
    game.game_over_at = 1
    env.reset()
    obs, _, terminated, _, _ = env.step(0)  # game 2 ends on the first raw frame of the step
    assert terminated
    assert lit(obs) >= frames_shown(game, [1])
    assert not lit(obs) & old_game, "the observation shows a frame of the previous game"


# EpisodicLifeEnv
def test_episodic_life_loss_is_terminal_but_reset_continues_the_game(algo):
    game = StubAtari(life_loss_at=(2, 4), game_over_at=6, lives=3)
    env = algo.EpisodicLifeEnv(game)
    env.reset(seed=0)
    assert game.games == 1
    _, _, terminated, _, _ = env.step(0)
    assert not terminated
    _, _, terminated, truncated, _ = env.step(0)  # raw frame 2: a life is lost
    assert terminated and not truncated
    obs, _ = env.reset()
    assert game.games == 1, "a lost life must not reset the game"
    assert game.t == 3 and game.lives == 2, "the reset after a lost life continues the same game"
    np.testing.assert_array_equal(obs, game.frame(3))
    _, _, terminated, _, _ = env.step(0)  # raw frame 4: the second life is lost
    assert terminated
    env.reset()
    assert game.games == 1 and game.t == 5
    _, _, terminated, _, _ = env.step(0)  # raw frame 6: game over
    assert terminated
    obs, _ = env.reset()
    assert game.games == 2 and game.t == 0, "game over must really reset the game"
    np.testing.assert_array_equal(obs, game.frame(0))
    _, _, terminated, _, _ = env.step(0)  # the new game starts with all its lives: no false life loss
    assert not terminated


def test_episodic_life_zero_lives_without_game_over_is_not_a_loss(algo):
    game = StubAtari(lives=1)
    env = algo.EpisodicLifeEnv(game)
    env.reset(seed=0)
    game.lives = 0  # Qbert-like: the counter reads 0 for a few frames before the game is over
    _, _, terminated, _, _ = env.step(0)
    assert not terminated


# FireResetEnv
def test_fire_reset_presses_fire_then_right_after_reset(algo):
    game = StubAtari()
    env = algo.FireResetEnv(game)
    obs, _ = env.reset(seed=0)
    assert game.games == 1
    assert game.actions == [1, 2]
    np.testing.assert_array_equal(obs, game.frame(2))
    env.step(3)
    obs, _ = env.reset()
    assert game.actions == [1, 2, 3, 1, 2]


# FireAfterLifeLossEnv
def test_fire_after_life_loss_presses_fire_then_right_and_goes_on(algo):
    """Evaluation: after the step that loses a life, FIRE then RIGHT in the same step, rewards summed; the
    episode goes on. No press after other steps, nor after the step that ends the game."""
    game = StubAtari(rewards={3: 1.0, 4: 2.0}, life_loss_at=(2,), game_over_at=6, lives=3)
    env = algo.FireAfterLifeLossEnv(game)
    env.reset(seed=0)
    env.step(3)
    assert game.actions == [3]
    obs, reward, terminated, _, _ = env.step(3)  # raw frame 2: a life is lost
    assert game.actions == [3, 3, 1, 2] and reward == 3.0 and not terminated
    np.testing.assert_array_equal(obs, game.frame(4))
    env.step(0)
    _, _, terminated, _, _ = env.step(0)  # raw frame 6: game over
    assert terminated and game.actions == [3, 3, 1, 2, 0, 0]


@pytest.mark.parametrize("script", ["dqn_atari_fast", "dqn_atari"])
def test_evaluation_presses_fire_after_each_lost_life(algo, script):
    """Breakout waits for FIRE after a lost life. An agent that only presses NOOP loses its 5 lives in ~115
    steps when FIRE follows each lost life, as it does in training; else its game waits at the second life
    (until the 27,000-step limit, or a random action that is FIRE)."""
    if script == "dqn_atari":
        env = dqn_atari.make_env("BreakoutNoFrameskip-v4", 0, None, training=False)
    else:
        env = algo.make_env("BreakoutNoFrameskip-v4", 0, 0, False, "test", training=False)()
    env.reset(seed=0)
    lives = [env.unwrapped.ale.lives()]
    for _ in range(1000):
        _, _, terminated, truncated, _ = env.step(0)
        lives.append(env.unwrapped.ale.lives())
        if terminated or truncated:
            break
    env.close()
    assert terminated, f"the game did not end in 1,000 steps: lives {lives[0]} -> {lives[-1]}"
    assert sorted(set(lives), reverse=True) == [5, 4, 3, 2, 1, 0], "one life at a time, all of them in one episode"


# ClipRewardEnv
def test_clip_reward_keeps_only_the_sign(algo):
    rewards = {1: 5.0, 2: -3.0, 3: 0.0, 4: 0.25, 5: -0.5, 6: 200.0}
    env = algo.ClipRewardEnv(StubAtari(rewards=rewards))
    env.reset(seed=0)
    clipped = [env.step(0)[1] for _ in range(6)]
    assert clipped == [1.0, -1.0, 0.0, 1.0, -1.0, 1.0]
    assert all(isinstance(r, float) for r in clipped)


# the whole stack on a real game
class FireThenRight(gym.Wrapper):
    """Reference for FireResetEnv and FireAfterLifeLossEnv on the gymnasium stack: FIRE, then RIGHT, after
    each reset and after each step that loses a life (while the game goes on)."""

    def reset(self, **kwargs):
        self.env.reset(**kwargs)
        self.env.step(1)
        obs, _, _, _, info = self.env.step(2)
        self.lives = self.unwrapped.ale.lives()
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if self.unwrapped.ale.lives() < self.lives and not (terminated or truncated):
            _, fire_reward, terminated, truncated, _ = self.env.step(1)
            if not (terminated or truncated):
                obs, right_reward, terminated, truncated, info = self.env.step(2)
                fire_reward += right_reward
            reward += fire_reward
        self.lives = self.unwrapped.ale.lives()
        return obs, reward, terminated, truncated, info


@pytest.mark.parametrize("seed", [3])
def test_evaluation_stack_matches_gymnasium_atari_preprocessing(algo, seed):
    """make_env(training=False) against AtariPreprocessing(noop_max=30, frame_skip=4, 84x84, grayscale,
    no life-loss terminal) + FrameStackObservation(4): both draw the number of no-ops from the game's
    np_random after reset(seed), so they start in the same state."""
    env_id = "SpaceInvadersNoFrameskip-v4"
    ours = algo.make_env(env_id, seed, 0, False, "test", training=False)()
    reference = gym.wrappers.AtariPreprocessing(
        gym.make(env_id), noop_max=30, frame_skip=4, screen_size=84, grayscale_obs=True, terminal_on_life_loss=False
    )
    reference = gym.wrappers.FrameStackObservation(FireThenRight(reference), 4)
    obs, _ = ours.reset(seed=seed)
    ref_obs, _ = reference.reset(seed=seed)
    assert obs.shape == ref_obs.shape == (4, 84, 84) and obs.dtype == np.uint8
    rng = np.random.default_rng(seed)
    lives = [ours.unwrapped.ale.lives()]
    diffs = []
    for step in range(400):
        diff = np.abs(obs.astype(np.int16) - ref_obs.astype(np.int16))
        diffs.append((diff.mean(), diff.max()))
        action = int(rng.integers(ours.action_space.n))
        obs, reward, terminated, truncated, _ = ours.step(action)
        ref_obs, ref_reward, ref_terminated, ref_truncated, _ = reference.step(action)
        assert (reward, terminated, truncated) == (ref_reward, ref_terminated, ref_truncated), f"step {step}"
        lives.append(ours.unwrapped.ale.lives())
        if terminated or truncated:
            obs, _ = ours.reset()
            ref_obs, _ = reference.reset()
    mean_diff = max(d[0] for d in diffs)
    max_diff = max(d[1] for d in diffs)
    assert mean_diff < 0.5 and max_diff <= 2, f"observations differ: mean abs diff {mean_diff}, max {max_diff}"
    assert min(lives) < lives[0], "no life was lost: the test did not check that evaluation ignores lost lives"
    ours.close()
    reference.close()


# the fast path's games: ale-py's C++ vector env (--env-backend ale-vector)
def play_both_backends(algo, steps, seed=1):
    """The same random actions through ALEVectorEnv and through the wrappers, both without no-ops and
    FIRE on reset (the parts whose sequences differ on purpose, see ALEVectorEnv). The wrappers' games
    are stepped as the vector env's next-step autoreset does: the step after an end only resets."""
    ours = gym.make("SpaceInvadersNoFrameskip-v4", obs_type="grayscale", frameskip=1)
    ours = algo.EpisodicLifeEnv(algo.MaxAndSkipEnv(gym.wrappers.RecordEpisodeStatistics(ours), 4))
    ours = gym.wrappers.FrameStackObservation(gym.wrappers.ResizeObservation(algo.ClipRewardEnv(ours), (84, 84)), 4)
    fast = algo.ALEVectorEnv("SpaceInvadersNoFrameskip-v4", 1, noop_max=0, use_fire_reset=False)
    actions = np.random.default_rng(seed).integers(ours.action_space.n, size=steps)
    runs = {"wrappers": [ours.reset(seed=seed)[0]], "ale-vector": [fast.reset(seed=seed)[0][0]]}
    logs = {name: {"rewards": [], "ends": [], "games": [], "game_overs": []} for name in runs}
    restart = False
    for action in actions:
        if restart:
            (obs, _), reward, terminated, truncated, info = ours.reset(), 0.0, False, False, {}
        else:
            obs, reward, terminated, truncated, info = ours.step(int(action))
        restart = terminated or truncated
        fast.step_async(np.array([action]))
        fast_obs, fast_rewards, fast_terminated, fast_truncated, fast_info = fast.step_wait()
        for name, o, r, end, game in (
            ("wrappers", obs, reward, (terminated, truncated), info.get("episode")),
            ("ale-vector", fast_obs[0], fast_rewards[0], (fast_terminated[0], fast_truncated[0]),
             {k: v[0] for k, v in fast_info["episode"].items()} if fast_info.get("_episode", [False])[0] else None),
        ):  # fmt: skip
            runs[name].append(o)
            logs[name]["rewards"].append(float(r))
            logs[name]["ends"].append(tuple(bool(e) for e in end))
            if game is not None:
                logs[name]["games"].append((float(game["r"]), int(game["l"])))
                logs[name]["game_overs"].append(len(runs[name]) - 1)
    fast.close()
    ours.close()
    return {name: np.array(obs) for name, obs in runs.items()}, logs


def test_ale_vector_backend_plays_the_wrappers_games(algo):
    """Pinned down: what must match (clipped rewards, life-loss ends, the real score and length of a game,
    first stacks of 4 copies of one frame) and what may differ (the frames of a game over, which the C++
    env does not grab: they repeat the previous frame). 1,500 random steps hold 2-3 games of 3 lives."""
    obs, logs = play_both_backends(algo, 1500)
    ours, fast = logs["wrappers"], logs["ale-vector"]
    assert ours["rewards"] == fast["rewards"], "clipped rewards, step by step"
    assert ours["ends"] == fast["ends"], "life-loss and game-over ends, step by step"
    assert len(ours["games"]) >= 2 and ours["games"] == fast["games"], "the real score (all lives, unclipped) and length"
    assert ours["game_overs"] == fast["game_overs"]
    assert sum(e[0] for e in ours["ends"]) > 2 * len(ours["games"]), "lost lives ended episodes"
    assert max(score for score, _ in ours["games"]) > max(ours["rewards"]), "scores are real points, not clipped"
    starts = [0] + [t + 1 for t, end in enumerate(ours["ends"], 1) if any(end)]
    for t in starts[:-1]:
        for name in obs:
            assert all(np.array_equal(obs[name][t, 0], obs[name][t, k]) for k in range(4)), f"{name}: first stack at {t}"
    diff = np.abs(obs["wrappers"].astype(np.int16) - obs["ale-vector"].astype(np.int16))
    differing = {t for t in range(len(diff)) if diff[t].max() > 2}
    game_over_stacks = {t + k for t in ours["game_overs"] for k in range(4)}
    assert differing <= game_over_stacks, f"frames differ outside the stacks holding a game's end: {sorted(differing - game_over_stacks)}"
