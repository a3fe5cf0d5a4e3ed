"""Double DQN on Atari games, in one file: the third fix of Unit 3 of the Hugging Face Deep RL course.

    python ddqn_atari.py --env-id SpaceInvadersNoFrameskip-v4 --track

A convolutional network takes a stack of 4 preprocessed frames and outputs one Q-value per action; the agent
acts epsilon-greedily on them (Mnih et al. 2015). The course's three fixes for stable training: experience replay
and a fixed Q-target, here and in ddqn_atari.py; Double DQN (van Hasselt et al. 2016), in ddqn_atari.py alone: this
file with another TD target (`diff dqn_atari.py ddqn_atari.py`). One game at a time, in the order of the course's
pseudocode: act, step, store, learn, copy the target. CleanRL's flags and TensorBoard tags. Faster: dqn_atari_fast.py.
"""

import collections
import difflib
import importlib.util
import os
import random
import signal
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import NamedTuple, Optional

if "OMP_WAIT_POLICY" not in os.environ:  # plumbing, before torch loads: idle threads sleep, not spin (docs/speed.md)
    os.environ.setdefault("GOMP_SPINCOUNT", "1000")

import ale_py
import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro
from torch.utils.tensorboard import SummaryWriter

gym.register_envs(ale_py)  # ale-py >= 0.9 ships the ROMs; this makes "SpaceInvadersNoFrameskip-v4" known to gym.make


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment"""
    seed: int = 1
    """seed of the experiment"""
    torch_deterministic: bool = True
    """if toggled, `torch.backends.cudnn.deterministic=True`"""
    cuda: bool = True
    """if toggled, use the GPU when there is one (the CPU otherwise)"""
    track: bool = False
    """if toggled, this experiment will be tracked with Weights and Biases"""
    wandb_project_name: str = "dqn-course"
    """the wandb's project name"""
    wandb_entity: Optional[str] = None
    """the entity (team) of wandb's project"""
    capture_video: bool = False
    """whether to capture videos of the agent performances (check out `videos` folder)"""
    save_model: bool = False
    """CleanRL's name: whether to evaluate the model at the end (every run saves it into `runs/{run_name}`)"""
    eval_episodes: int = 10
    """the number of full games played by the final evaluation (at epsilon 0.05, as in the Nature paper)"""
    eval_only: Optional[str] = None
    """a saved model to evaluate without training: a .pt file or a run folder"""
    checkpoint_frequency: int = 500_000
    """environment steps between the checkpoints that --resume continues from (0: none)"""
    resume: Optional[str] = None
    """a run folder (runs/{run_name}) to continue from its last checkpoint"""

    # Algorithm specific arguments
    env_id: str = "SpaceInvadersNoFrameskip-v4"
    """the id of the Atari game"""
    total_timesteps: int = 10_000_000
    """total environment steps of the experiment"""
    learning_rate: float = 1e-4
    """the learning rate of the optimizer"""
    buffer_size: int = 1_000_000
    """the replay memory buffer size (1M transitions: about 7.1 GB)"""
    gamma: float = 0.99
    """the discount factor gamma"""
    target_network_frequency: int = 1000
    """the environment steps it takes to update the target network"""
    batch_size: int = 32
    """the batch size of sample from the replay memory"""
    start_e: float = 1
    """the starting epsilon for exploration"""
    end_e: float = 0.01
    """the ending epsilon for exploration"""
    exploration_fraction: float = 0.10
    """the fraction of `total-timesteps` it takes from start-e to go end-e (0: end-e from the start)"""
    learning_starts: int = 80000
    """environment steps before learning starts"""
    train_frequency: int = 4
    """the environment steps per gradient step"""


# ENVIRONMENT: the game as the agent sees it
def make_env(env_id, seed, video_folder=None, training=True):
    """The game inside wrappers, each wrapping the one listed before it and changing what step() and reset() return:
    FrameStackObservation.step() calls TransformReward.step(), which calls FireResetEnv.step(), ... down to the game.

        RecordEpisodeStatistics  the real game score, for the logs
        AtariPreprocessing       84x84 grayscale frames                                 the course
                                 frame skipping: an action every 4th frame              the Nature paper
        EpisodicLifeEnv          training: a lost life ends the episode                 the Nature paper
        FireResetEnv             presses FIRE to start the games that wait for it       OpenAI's baselines
        TransformReward          training: each reward becomes its sign, -1, 0 or +1    the Nature paper
        FrameStackObservation    frame stacking: the last 4 frames                      the course"""
    env = gym.make(env_id, frameskip=1, render_mode="rgb_array" if video_folder else None)  # every frame: skipped below
    if video_folder:
        env = gym.wrappers.RecordVideo(env, video_folder, disable_logger=True)
    # innermost, so `charts/episodic_return` is the real game score: all lives, rewards unclipped
    env = gym.wrappers.RecordEpisodeStatistics(env)
    # an agent step (what --total-timesteps counts) is 4 frames, seen as the pixel max of the last 2 (some sprites
    # are drawn every other frame only); a reset plays 1 to 30 no-op actions, so games do not all start alike
    env = gym.wrappers.AtariPreprocessing(env, noop_max=30, frame_skip=4, screen_size=84, grayscale_obs=True)
    if training:
        env = EpisodicLifeEnv(env)
    if "FIRE" in env.unwrapped.get_action_meanings():
        env = FireResetEnv(env)
    if training:  # the sign of each reward: one learning rate fits every game's score scale
        env = gym.wrappers.TransformReward(env, np.sign)
    # frame stacking: one frame cannot show motion (the temporal limitation), four can
    env = gym.wrappers.FrameStackObservation(env, 4)
    env.action_space.seed(seed)  # for an action_space.sample() of yours: epsilon_greedy() draws from its own rng
    return env


# The Nature paper's extras (FIRE: baselines'), not in the course: a first read can skip to the network
class EpisodicLifeEnv(gym.Wrapper):
    """Training only: a lost life ends the episode for the agent (so the TD target at a death is the reward alone),
    while the game itself goes on and resets only at game over. Evaluation plays full games."""

    lives, game_over = 0, True  # before the first reset(): a new game

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.game_over = terminated or truncated
        lives = self.unwrapped.ale.lives()
        if 0 < lives < self.lives:  # some games (Qbert) sit at 0 lives for a few frames: that is not a loss
            terminated = True
        self.lives = lives
        return obs, reward, terminated, truncated, info

    def reset(self, **kwargs):
        if self.game_over:
            obs, info = self.env.reset(**kwargs)
        else:  # a life was lost, not the game: play on. reset() must return an observation: one no-op step gives it
            obs, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:
                obs, info = self.env.reset(**kwargs)
        self.lives = self.unwrapped.ale.lives()
        return obs, info


class FireResetEnv(gym.Wrapper):
    """Press FIRE to start: games like Breakout wait for it, and an agent yet to learn it would stand still.
    Training: a lost life ends the episode, so reset() presses FIRE. Evaluation: the game goes on, so step() does."""

    def reset(self, **kwargs):
        self.env.reset(**kwargs)
        obs, _, terminated, truncated, info = self.press_fire()
        if terminated or truncated:  # the game ended during the presses: a new one
            obs, info = self.env.reset(**kwargs)
        self.lives = self.unwrapped.ale.lives()
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        lost_a_life = 0 < self.unwrapped.ale.lives() < self.lives  # (0 lives: see EpisodicLifeEnv)
        if lost_a_life and not (terminated or truncated):  # only in evaluation: training's episode ended
            obs, more, terminated, truncated, info = self.press_fire()
            reward += more
        self.lives = self.unwrapped.ale.lives()
        return obs, reward, terminated, truncated, info

    def press_fire(self):
        # FIRE (action 1), then action 2, as OpenAI's baselines and CleanRL do, so that scores compare
        obs, reward, terminated, truncated, info = self.env.step(1)
        if not (terminated or truncated):
            obs, more, terminated, truncated, info = self.env.step(2)
            reward += more
        return obs, reward, terminated, truncated, info


# ALGO LOGIC: the Deep Q-Network of the Nature paper
class QNetwork(nn.Module):
    def __init__(self, n_actions):
        super().__init__()
        self.network = nn.Sequential(  # the Nature paper's: 3 convolutions, then 2 fully connected layers
            nn.Conv2d(4, 32, kernel_size=8, stride=4), nn.ReLU(),  # 4 stacked frames, 84x84 -> 32 channels, 20x20
            nn.Conv2d(32, 64, kernel_size=4, stride=2), nn.ReLU(),  # -> 64x9x9
            nn.Conv2d(64, 64, kernel_size=3, stride=1), nn.ReLU(),  # -> 64x7x7
            nn.Flatten(), nn.Linear(3136, 512), nn.ReLU(),  # 3136 = 64 * 7 * 7
            nn.Linear(512, n_actions),  # one Q-value per action
        )  # fmt: skip

    def forward(self, x):
        # uint8 frames (4x less memory) to floats in [0, 1]; channels-last: only for speed, the same numbers
        x = x.to(memory_format=torch.channels_last, dtype=torch.float32) / 255.0
        return self.network(x)


# EXPERIENCE REPLAY: the replay memory D of the pseudocode: store transitions, sample random minibatches
class ReplayBatch(NamedTuple):
    observations: torch.Tensor  # (B, 4, 84, 84) uint8
    actions: torch.Tensor  # (B, 1) int64: a column, for gather() in gradient_step()
    rewards: torch.Tensor  # (B,) float32
    next_observations: torch.Tensor  # (B, 4, 84, 84) uint8
    dones: torch.Tensor  # (B,) float32: 1.0 where the episode terminated (in training, a lost life too)


class SimpleReplayBuffer:
    """The replay memory D as the course tells it: a deque of transitions, sampled in random minibatches (random, so
    that consecutive steps do not correlate). It can replace ReplayBuffer in train(): 8x the memory, no --resume."""

    def __init__(self, buffer_size, device, seed):
        self.memory = collections.deque(maxlen=buffer_size)  # full: append() drops the oldest transition
        self.device, self.rng = device, np.random.default_rng(seed)

    def add(self, obs, action, reward, next_obs, terminated, truncated):
        self.memory.append((obs, action, reward, next_obs, terminated))  # truncated: not a terminal state

    def sample(self, batch_size):
        minibatch = [self.memory[i] for i in self.rng.integers(len(self.memory), size=batch_size)]
        obs, actions, rewards, next_obs, dones = (np.array(column) for column in zip(*minibatch))
        columns = (obs, actions[:, None], rewards.astype(np.float32), next_obs, dones.astype(np.float32))
        return ReplayBatch(*(torch.as_tensor(column, device=self.device) for column in columns))


class ReplayBuffer:
    """SimpleReplayBuffer with each frame stored once, the one train() uses (a first read can skip its body): the
    deque's tuples keep each frame 8 times (it sits in 4 obs and 4 next_obs stacks), 56 GB for 1M; here 7.1 GB."""

    # Slot i holds the newest frame of an obs, its place in its episode (`ages`), and the action, reward and
    # termination that followed it. Episode a: 5 frames, 4 transitions; then episode b:
    #     slot      0    1    2    3    4      5    6    7
    #     frame     a0   a1   a2   a3   a4     b0   b1   b2
    #     age       0    1    2    3    4      0    1    2
    #     valid     yes  yes  yes  yes  never  yes  yes  not yet   (valid: a transition starts in the slot)
    # An add() writes obs's newest frame into slot pos and next_obs's newest into slot pos + 1, then moves pos on to
    # pos + 1, where the next add() writes that same frame again. Slot 4, a4, is a last frame: no obs ends with it, so
    # no transition starts there (never valid), and end_episode() moves pos past it. Slot 7, b2, waits for the next
    # step (not valid yet). sample() rebuilds obs from slot i and the 3 slots before it, not past the episode's first
    # frame, which it repeats as reset() does (slot 2: a0a0a1a2; slot 6: b0b0b0b1), and next_obs from slot i+1.
    def __init__(self, buffer_size, device, seed, frame_shape=(84, 84)):
        self.frames = np.zeros((buffer_size, *frame_shape), dtype=np.uint8)
        self.ages = np.zeros(buffer_size, dtype=np.int32)
        self.actions = np.zeros(buffer_size, dtype=np.int64)
        self.rewards = np.zeros(buffer_size, dtype=np.float32)
        self.dones = np.zeros(buffer_size, dtype=bool)
        self.valid = np.zeros(buffer_size, dtype=bool)
        self.pos = 0  # the slot the next add() writes
        self.size = 0  # the slots written so far, up to buffer_size
        self.age = 0  # the place of the next add()'s obs in its episode
        self.device, self.rng = device, np.random.default_rng(seed)

    def add(self, obs, action, reward, next_obs, terminated, truncated):
        i, after = self.pos, (self.pos + 1) % len(self.frames)
        self.frames[i], self.ages[i] = obs[-1], self.age  # obs's 3 older frames are in the slots before
        self.actions[i], self.rewards[i], self.dones[i] = action, reward, terminated
        self.valid[i] = True
        self.frames[after], self.ages[after] = next_obs[-1], self.age + 1  # next_obs's newest frame
        # slot i+1 is not valid yet (its next frame is to come), and once the ring is full the oldest slots, i+2 to i+4,
        # are valid no more: their stacks reach up to 3 slots back, into slots i and i+1, which now hold new frames
        self.valid[(i + np.arange(1, 5)) % len(self.frames)] = False
        self.pos, self.size = after, min(self.size + 1, len(self.frames))
        self.age += 1
        if terminated or truncated:  # a truncated episode is no terminal state: done is False, its value bootstraps
            self.end_episode()

    def end_episode(self):  # the episode's last frame, in slot pos, starts no transition: the next add() goes past it
        self.pos, self.size = (self.pos + 1) % len(self.frames), min(self.size + 1, len(self.frames))
        self.age = 0

    def sample(self, batch_size):
        # uniform over the complete transitions: draw slots, and draw again the few that are not complete
        slots = self.rng.integers(self.size, size=batch_size)
        while not self.valid[slots].all():
            redraw = ~self.valid[slots]
            slots[redraw] = self.rng.integers(self.size, size=redraw.sum())
        next_slots = (slots + 1) % len(self.frames)  # next_obs: the stack of the next slot
        columns = (self.stacks(slots), self.actions[slots, None], self.rewards[slots], self.stacks(next_slots),
                   self.dones[slots].astype(np.float32))
        return ReplayBatch(*(torch.as_tensor(column, device=self.device) for column in columns))

    def stacks(self, slots):  # the stacks of 4 frames whose newest frame is in `slots`
        back = np.minimum([3, 2, 1, 0], self.ages[slots, None])  # slots back: 3, 2, 1, 0; at age 1: 1, 1, 1, 0
        return self.frames[(slots[:, None] - back) % len(self.frames)]


def epsilon_greedy(q_network, obs, epsilon, n_actions, rng, device):
    """Explore with probability epsilon (a random action), else exploit: the action of the highest Q-value."""
    if rng.random() < epsilon:
        return int(rng.integers(n_actions))
    with torch.no_grad():
        return int(q_network(torch.as_tensor(obs, device=device)[None]).argmax(dim=1))  # [None]: a batch of one


def linear_schedule(start_e: float, end_e: float, duration: int, t: int):  # epsilon, annealed as the Nature paper does
    if duration <= 0:  # --exploration-fraction 0: no decay, epsilon is end-e from the first step (as in SB3)
        return end_e
    slope = (end_e - start_e) / duration
    return max(slope * t + start_e, end_e)


def compute_td_target(q_network, target_network, batch, gamma):
    """The TD target (Q-target): reward + gamma * value of the next state, 0 past a terminal state."""
    # no_grad: the target is a fixed number to regress to; gradients flow only through Q(s, a)
    with torch.no_grad():
        # --- TD target: the only block that differs between dqn_atari.py and ddqn_atari.py ---
        # Double DQN. DQN's max lets one noisy estimate both choose the next action and value it: overestimates win
        # and feed on themselves. Decoupled here: q_network selects the action, the target network values it
        next_actions = q_network(batch.next_observations).argmax(dim=1, keepdim=True)
        target_max = target_network(batch.next_observations).gather(1, next_actions).squeeze(1)
        # --- end of the TD target block ---
        return batch.rewards + gamma * target_max * (1 - batch.dones)  # (1 - dones): y = r at a terminal step


def gradient_step(q_network, target_network, optimizer, batch, gamma):
    """One gradient descent step on the squared TD error (Q-target - Q(s, a))^2; returns the loss and mean Q(s, a)."""
    td_target = compute_td_target(q_network, target_network, batch, gamma)
    q_values = q_network(batch.observations)  # (B, n_actions): every action's Q-value, for each transition
    q_sa = q_values.gather(1, batch.actions).squeeze(1)  # Q(phi_j, a_j), (B,): of row b, the column actions[b]
    loss = F.mse_loss(q_sa, td_target)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item(), q_sa.mean().item()


# TRAINING LOOP: Deep Q-Learning with experience replay and a fixed Q-target, as in Unit 3's pseudocode
def train(args: Args, make_env=make_env):
    """Train a Deep Q-Network; returns the run name, the model path and, after --save-model, the evaluation scores."""
    run = Run(args)  # TRY NOT TO MODIFY: folder, seeding, run.writer (TensorBoard), run.stop_requested (Ctrl-C)
    args, device = run.args, run.device  # (with --resume, the run's saved args)

    env = make_env(args.env_id, args.seed, run.video_folder)
    rb = ReplayBuffer(args.buffer_size, device, args.seed)  # Initialize replay memory D (SimpleReplayBuffer's batches)
    # Initialize the Q-network with random weights, and the target network (the fixed Q-target) as its copy
    q_network = QNetwork(env.action_space.n).to(device)
    target_network = QNetwork(env.action_space.n).to(device)
    target_network.load_state_dict(q_network.state_dict())
    optimizer = torch.optim.Adam(q_network.parameters(), lr=args.learning_rate, fused=True)  # fused: 7x faster on CPUs
    rng = np.random.default_rng(args.seed)  # the draws of epsilon-greedy
    exploration_steps = args.exploration_fraction * args.total_timesteps  # epsilon decays over these first steps
    global_step = 0
    learner = (q_network, target_network, optimizer, rng, rb)  # what a checkpoint keeps, with global_step
    if args.resume:  # TRY NOT TO MODIFY: --resume only, puts all of them back as saved (skip on a first read)
        global_step = restore_checkpoint(run, learner)

    # the pseudocode's "for each episode" and "for each step" as one loop over steps; a new episode: step 6, below
    obs, _ = env.reset(seed=args.seed + global_step)  # the first game (a resumed run: another seed, another game)
    while global_step < args.total_timesteps and not run.stop_requested:
        # 1. ALGO LOGIC: an epsilon-greedy action, epsilon decaying from start-e to end-e
        epsilon = linear_schedule(args.start_e, args.end_e, exploration_steps, global_step)
        action = epsilon_greedy(q_network, obs, epsilon, env.action_space.n, rng, device)

        # 2. play it: the reward (training: its sign), the next stack of frames (phi: make_env's wrappers), and
        #    terminated (a terminal state, value 0; training: a lost life too) or truncated (a time limit: not terminal)
        next_obs, reward, terminated, truncated, info = env.step(action)
        global_step += 1

        # 3. store the transition in the replay memory D
        rb.add(obs, action, reward, next_obs, terminated, truncated)
        obs = next_obs  # TRY NOT TO MODIFY: CRUCIAL step easy to overlook (else the agent acts on an old state)

        if global_step > args.learning_starts:  # not in the pseudocode: fill D first (the Nature paper's replay start)
            # 4. every `train_frequency` (4) steps, not every step: a gradient step on a random minibatch of D
            if global_step % args.train_frequency == 0:
                batch = rb.sample(args.batch_size)
                loss, q_mean = gradient_step(q_network, target_network, optimizer, batch, args.gamma)
                if global_step % 100 == 0:
                    run.writer.add_scalar("losses/td_loss", loss, global_step)
                    run.writer.add_scalar("losses/q_values", q_mean, global_step)
            # 5. (outside step 4's if) every C = `target_network_frequency` env steps: copy the Q-network to the target
            if global_step % args.target_network_frequency == 0:
                target_network.load_state_dict(q_network.state_dict())

        # 6. at an episode's end, a new one. In training a lost life ends an episode, and reset() plays on in the
        #    same game (EpisodicLifeEnv); the game ends with its last life, and its score is logged then
        if terminated or truncated:
            obs, _ = env.reset()

        run.log(global_step, epsilon, info)  # a game's score when it ends; every 1000 steps: SPS, epsilon
        if args.checkpoint_frequency and global_step % args.checkpoint_frequency == 0:
            save_checkpoint(run, global_step, learner)  # what --resume goes on from

    # TRY NOT TO MODIFY: every run keeps what it learned: its last checkpoint, and the model
    env.close()
    save_checkpoint(run, global_step, learner)
    save_model(run.model_path, q_network, args, env.action_space.n)
    eval_returns = []
    if args.save_model and args.eval_episodes > 0 and not run.stop_requested:  # CleanRL's flag: evaluate the model
        eval_returns = evaluate(q_network, args.env_id, args.eval_episodes, device, 0.05, run.eval_video, args.seed,
                                make_env)
        for idx, episodic_return in enumerate(eval_returns):
            run.writer.add_scalar("eval/episodic_return", episodic_return, idx)
    return run.end(global_step, eval_returns)


def evaluate(q_network, env_id, eval_episodes, device, epsilon=0.05, video_folder=None, seed=0, make_env=make_env):
    """Play full games (all lives, real rewards) at epsilon 0.05, as the Nature paper evaluates; return their scores."""
    env = make_env(env_id, seed, video_folder, training=False)
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    episodic_returns = []
    while len(episodic_returns) < eval_episodes:
        action = epsilon_greedy(q_network, obs, epsilon, env.action_space.n, rng, device)
        obs, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            episodic_returns.append(float(info["episode"]["r"]))
            if len(episodic_returns) < eval_episodes:  # no extra game: RecordVideo would film its start
                obs, _ = env.reset()
    env.close()
    mean, std = np.mean(episodic_returns), np.std(episodic_returns)
    print(f"evaluation over {eval_episodes} game{'s' * (eval_episodes > 1)}: {mean:.1f} +/- {std:.1f} "
          f"(the leaderboard's mean - std: {mean - std:.1f})")
    return episodic_returns


# ======================================================================================================
# PLUMBING: what a run needs around the DQN above (checks, the run, checkpoints, models), not needed for Unit 3
# ======================================================================================================
class UsageError(Exception):
    """Bad input: reported as one line and exit code 2, without a traceback."""


SCRIPT = os.path.basename(__file__)
# what --resume may change: how far the run goes, and what it logs and saves; not what it learns with
RESUME_OVERRIDES = {"resume", "total_timesteps", "cuda", "track", "wandb_project_name", "wandb_entity",
                    "capture_video", "save_model", "eval_episodes", "checkpoint_frequency"}


def check_args(args: Args):
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    needed = args.buffer_size * (84 * 84 + 18)  # a slot of the replay memory: its frame, age, action, reward, flags
    problems = {
        "--total-timesteps and --learning-rate must be positive": min(args.total_timesteps, args.learning_rate) <= 0,
        "--batch-size, --train-frequency and --target-network-frequency must be at least 1":
            min(args.batch_size, args.train_frequency, args.target_network_frequency) < 1,
        "--buffer-size must be at least 5 and at least --batch-size": args.buffer_size < max(5, args.batch_size),
        f"--buffer-size {args.buffer_size:,} needs {needed / 1e9:.1f} GB, more than this machine's "
        f"{memory / 1e9:.1f} GB of memory: lower it": needed > 0.9 * memory,
        f"--learning-starts {args.learning_starts:,} must be at least --batch-size and below --total-timesteps":
            not args.batch_size <= args.learning_starts < args.total_timesteps,
        "--gamma must be in [0, 1]": not 0 <= args.gamma <= 1,
        "epsilon needs 0 <= --end-e <= --start-e <= 1 and --exploration-fraction in [0, 1]":
            not (0 <= args.end_e <= args.start_e <= 1 and 0 <= args.exploration_fraction <= 1),
        "--eval-episodes and --checkpoint-frequency cannot be negative":
            min(args.eval_episodes, args.checkpoint_frequency) < 0,
        "--capture-video needs moviepy to encode videos: pip install moviepy":
            args.capture_video and importlib.util.find_spec("moviepy") is None,
    }  # fmt: skip
    for message, bad in problems.items():
        if bad:
            raise UsageError(message)
    try:  # gymnasium's own hint: the versions that the id's name has, or the closest name
        entry_point = str(gym.spec(args.env_id).entry_point)
    except gym.error.Error as e:
        raise UsageError(f"unknown environment id '{args.env_id}' ({e}): ids look like PongNoFrameskip-v4") from None
    if not entry_point.startswith("ale_py"):
        raise UsageError(f"'{args.env_id}' is not an Atari game: this script learns from screen pixels "
                         "(for FrozenLake or Taxi use dqn_frozenlake_tabular.py)")


class Run:
    """A training run around the loop of train(): its folder, seeding, logging, Ctrl-C, checkpoints, its last lines."""

    def __init__(self, args: Args):
        self.state = load_checkpoint(args) if args.resume else None
        self.args = args = Args(**self.state["args"]) if self.state else args
        check_args(args)
        self.device = torch.device("cuda" if args.cuda and torch.cuda.is_available() else "cpu")
        self.name = self.state["run_name"] if self.state else make_run_folder(args)
        self.dir = Path("runs", self.name)
        self.model_path = self.dir / f"{args.exp_name}.pt"
        self.start_step = self.checkpoint_step = self.state["global_step"] if self.state else 0
        resumed = f"/resumed-at-{self.start_step}" if self.state else ""  # its videos beside the first leg's
        self.video_folder = f"videos/{self.name}{resumed}" if args.capture_video else None
        self.eval_video = f"videos/{self.name}-eval" if args.capture_video else None
        # TRY NOT TO MODIFY: seeding
        random.seed(args.seed)
        np.random.seed(args.seed)
        torch.manual_seed(args.seed)
        torch.backends.cudnn.deterministic = args.torch_deterministic
        # purge_step: on resume, TensorBoard drops what the interrupted run logged after its checkpoint
        self.writer = SummaryWriter(str(self.dir), purge_step=self.start_step if self.state else None)
        table = "\n".join(f"|{key}|{value}|" for key, value in vars(args).items())
        self.writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")
        self.wandb = start_wandb(args, self.name, self.state and self.state["wandb_id"]) if args.track else None
        self.returns, self.stop_requested = [], False
        self.start_time, self.last_line = time.time(), 0.0  # a first progress line at step 1000
        self.handlers = {sig: signal.signal(sig, self.request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}

    def request_stop(self, signum, frame):  # Ctrl-C or SIGTERM: the run ends after this step; a second Ctrl-C: at once
        self.stop_requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def log(self, global_step, epsilon, info):
        if "episode" in info:  # a whole game ended, all its lives: its real score
            self.returns.append(float(info["episode"]["r"]))
            self.writer.add_scalar("charts/episodic_return", float(info["episode"]["r"]), global_step)
            self.writer.add_scalar("charts/episodic_length", int(info["episode"]["l"]), global_step)  # in frames
        if global_step % 1000 != 0:
            return
        sps = int((global_step - self.start_step) / (time.time() - self.start_time))
        self.writer.add_scalar("charts/SPS", sps, global_step)
        self.writer.add_scalar("charts/epsilon", epsilon, global_step)
        if time.time() - self.last_line > (5 if sys.stdout.isatty() else 30):  # in a log file: every 30 s
            recent = np.mean(self.returns[-20:]) if self.returns else 0.0
            print(f"global_step={global_step:,} SPS={sps} return={recent:.1f} epsilon={epsilon:.3f}", flush=True)
            self.last_line = time.time()

    def end(self, global_step, eval_returns):  # the logs closed; the last lines say what the run left, how to go on
        for sig, handler in self.handlers.items():
            signal.signal(sig, handler)
        self.writer.close()
        if self.wandb:
            self.wandb.finish()
        if self.stop_requested:
            resume = f"; continue it with: python {SCRIPT} --resume {self.dir}" if self.checkpoint_step else ""
            print(f"\nstopped at step {global_step:,}{resume}")
        print(f"evaluate it with: python {SCRIPT} --eval-only {self.model_path}; "
              f"watch it with: python watch.py {self.model_path}")
        checkpoint = f", the checkpoint of step {self.checkpoint_step:,} (for --resume)" if self.checkpoint_step else ""
        print(f"run folder {self.dir}: TensorBoard events{checkpoint}, the model {self.model_path.name}")
        return {"run_name": self.name, "model_path": str(self.model_path), "eval_returns": eval_returns}


def save_checkpoint(run, global_step, learner):
    """One file, written beside the last and renamed over it: a kill leaves one whole checkpoint (docs/dqn.md)."""
    if not run.args.checkpoint_frequency or global_step == run.checkpoint_step:
        return
    q_network, target_network, optimizer, rng, rb = learner
    replay = {k: torch.from_numpy(v[: rb.size + 1]) for k, v in vars(rb).items() if isinstance(v, np.ndarray)}
    replay.update({k: v for k, v in vars(rb).items() if isinstance(v, (int, bool))}, rng=rb.rng.bit_generator.state)
    state = {"script": SCRIPT, "run_name": run.name, "args": asdict(run.args), "global_step": global_step,
             "wandb_id": run.wandb and run.wandb.id, "q_network": q_network.state_dict(),
             "target_network": target_network.state_dict(), "optimizer": optimizer.state_dict(),
             "rng": rng.bit_generator.state, "replay": replay}
    path = run.dir / "checkpoint.pt"
    try:
        torch.save(state, path.with_suffix(".tmp"))
        os.replace(path.with_suffix(".tmp"), path)
    except OSError as e:
        path.with_suffix(".tmp").unlink(missing_ok=True)
        raise UsageError(f"cannot write {path} ({e.strerror}): free some disk, or lower --buffer-size")
    run.checkpoint_step = global_step


def restore_checkpoint(run, learner):
    """--resume: networks, optimizer, draws and replay memory as saved; returns the step. The episode is cut."""
    q_network, target_network, optimizer, rng, rb = learner
    try:
        q_network.load_state_dict(run.state["q_network"])
        target_network.load_state_dict(run.state["target_network"])
        optimizer.load_state_dict(run.state["optimizer"])
        for name, value in run.state["replay"].items():
            if isinstance(value, torch.Tensor):
                getattr(rb, name)[: len(value)] = value.numpy()
            elif name != "rng":
                setattr(rb, name, value)
    except Exception as e:
        raise UsageError(f"the checkpoint in '{run.dir}' does not fit this network or replay memory "
                         f"({type(e).__name__}): start a new run instead") from None
    rb.rng.bit_generator.state, rng.bit_generator.state = run.state["replay"]["rng"], run.state["rng"]
    if rb.age > 0:
        rb.end_episode()
    print(f"resuming {run.name} at step {run.start_step:,}: the game starts a new episode")
    return run.start_step


def make_run_folder(args: Args):
    """runs/{env}__{exp_name}__{seed}__{time}, made here: two runs started in the same second get two folders."""
    base = f"{args.env_id.replace('/', '-')}__{args.exp_name}__{args.seed}__{int(time.time())}"
    for name in [base] + [f"{base}-{n}" for n in range(2, 100)]:
        try:
            Path("runs", name).mkdir(parents=True)
            return name
        except FileExistsError:
            continue
        except OSError as e:
            raise UsageError(f"cannot write the run folder runs/{name} ({e.strerror}): work in a folder of yours")


def start_wandb(args, run_name, run_id):
    """wandb with the TensorBoard scalars (on --resume, the same wandb run); with no login, an offline run."""
    import wandb  # only with --track
    mode = os.environ.get("WANDB_MODE")
    if mode is None and not wandb.login(prompt=False, verify=False):  # never ask for a key on the terminal
        mode = "offline"
        print("wandb: not logged in, logging offline (upload later: wandb login && wandb sync wandb/offline-run-*)")
    return wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, sync_tensorboard=True,
                      config=vars(args), name=run_name, save_code=True, mode=mode, id=run_id,
                      resume="allow" if run_id else None)


def load_checkpoint(args: Args):
    """The checkpoint of the run folder --resume names, its arguments updated with the flags that may change."""
    folder, names = Path(args.resume), [field.name for field in fields(Args)]
    if (folder / "checkpoint.json").exists():
        raise UsageError(f"'{folder}' was written by dqn_atari.py before its fast path moved to dqn_atari_fast.py: "
                         f"resume it with python dqn_atari_fast.py --resume {folder}")
    try:  # mmap: the frames go into the replay memory from the file, never twice in memory
        state = torch.load(folder / "checkpoint.pt", map_location="cpu", weights_only=True, mmap=True)
        saved, total = state["args"], state["args"]["total_timesteps"]
        assert state["script"] == SCRIPT, f"'{folder}' was trained by {state['script']}: resume it with that script"
        unknown = [f"--{name.replace('_', '-')}" for name in saved if name not in names]
        assert not unknown, f"'{folder}' was trained with {unknown[0]}, which {SCRIPT} does not have"
    except AssertionError as e:
        raise UsageError(str(e)) from None
    except Exception as e:
        raise UsageError(f"no checkpoint could be read in '{folder}' ({type(e).__name__}): pass the folder "
                         "runs/<run_name> of a run that wrote one, or start a new run") from None
    for name in names:  # the flags given with --resume: typed (main()), or in-process, not at their default
        given, flag = getattr(args, name), "--" + name.replace("_", "-")
        if name not in saved:
            print(f"the checkpoint in '{folder}' predates {flag}: the run goes on with {flag} {given}")
        elif given == saved[name] or (given == getattr(Args, name) and flag not in getattr(args, "typed", ())):
            continue
        elif name not in RESUME_OVERRIDES:
            raise UsageError(f"'{folder}' was trained with {flag} {saved[name]}: a resumed run keeps what it "
                             f"learns with (drop {flag} {given})")
        saved[name] = given
    if saved["total_timesteps"] < state["global_step"]:
        raise UsageError(f"'{folder}' is at step {state['global_step']:,}: pass a larger --total-timesteps to go on")
    saved["exploration_fraction"] *= total / saved["total_timesteps"]  # a longer run: epsilon decays as it began to
    return state


def save_model(path, q_network, args, n_actions):
    """The network, the run's arguments, and what loading needs: the number of actions and the script that saved it."""
    model = {"model": q_network.state_dict(), "args": asdict(args), "n_actions": int(n_actions), "script": SCRIPT}
    torch.save(model, path.with_suffix(".tmp"))
    os.replace(path.with_suffix(".tmp"), path)  # atomic: a kill during the write leaves no half-written model


def load_model(path, device):
    """A model saved by any Atari script, in this script's QNetwork; its run's args and the script that saved it."""
    try:  # weights_only: tensors and plain values, never code; models before n_actions take it from their game
        saved = torch.load(path, map_location=device, weights_only=True)
        q_network = QNetwork(saved.get("n_actions") or gym.make(saved["args"]["env_id"]).action_space.n).to(device)
    except Exception as e:
        raise UsageError(f"no model saved by an Atari script here at '{path}' ({type(e).__name__}): pass the .pt "
                         "file of a run folder") from None
    try:
        q_network.load_state_dict(saved["model"])
    except RuntimeError:
        raise UsageError(f"the network in '{path}', saved by {saved.get('script', 'dqn_atari.py')}, does not fit "
                         f"the QNetwork of {SCRIPT}: load it with the script that saved it") from None
    return q_network, {**saved["args"], "script": saved.get("script", "dqn_atari.py")}


def resolve_model_path(path):
    """A model file, or a run folder (its model). A Hub repo id is downloaded first: `hf download` or watch.py."""
    if os.path.isdir(path):  # runs/{run_name}
        models = [m for m in Path(path).glob("*.pt") if m.name != "checkpoint.pt"]
        return str(max(models, key=os.path.getmtime)) if models else path
    if not os.path.exists(path) and path.count("/") == 1 and not path.endswith(".pt"):
        raise UsageError(f"no model at '{path}' (from the Hub: hf download {path} --local-dir {path})")
    return path


def eval_only(args: Args):
    """Play the saved model on the games of its run's evaluation: its game, and its seed unless --seed is given."""
    model_path = resolve_model_path(args.eval_only)
    device = torch.device("cuda" if args.cuda and torch.cuda.is_available() else "cpu")
    q_network, saved = load_model(model_path, device)
    env_id, typed = saved["env_id"], getattr(args, "typed", ())  # typed: the flags main() saw, even at their default
    seed = args.seed if args.seed != Args.seed or "--seed" in typed else saved.get("seed", args.seed)
    if args.env_id != env_id and (args.env_id != Args.env_id or "--env-id" in typed):
        raise UsageError(f"'{args.eval_only}' was trained on {env_id}: it cannot play {args.env_id} (drop --env-id)")
    check_args(Args(env_id=env_id, capture_video=args.capture_video, buffer_size=Args.batch_size))  # game, video
    video = f"videos/{env_id.replace('/', '-')}__{args.exp_name}-eval__{seed}__{int(time.time())}"
    print(f"evaluating {model_path}, trained by {saved['script']}, on {env_id}, seed {seed}"
          + (f"; video: {video}/" if args.capture_video else ""))
    return evaluate(q_network, env_id, args.eval_episodes, device, 0.05, args.capture_video and video, seed)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        args, unknown = tyro.cli(Args, args=argv, return_unknown_args=True)
        args.typed = {word.split("=")[0].replace("--no-", "--") for word in argv}  # given, even at their default
        if unknown:  # one line (tyro's own message is a box), with the closest flag
            word = unknown[0].split("=")[0]
            names = [f"--{prefix}{field.name.replace('_', '-')}" for field in fields(Args) for prefix in ("", "no-")]
            close = difflib.get_close_matches(word, names, n=1, cutoff=0.8)
            hint = f"did you mean {close[0]}?" if close else f"see python {SCRIPT} --help"
            raise UsageError(f"unknown option {word}: {hint}")
        eval_only(args) if args.eval_only else train(args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # a second Ctrl-C: out at once; the last checkpoint on disk is whole
        print("\nstopped at once: what was learned since the last checkpoint is lost", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
