"""Deep Q-Learning on Atari games, the fast variant: the DQN of dqn_atari.py (Unit 3 of the Hugging Face Deep RL
course; Mnih et al. 2015) with what makes it fast, as CleanRL keeps ppo_atari_envpool.py beside ppo_atari.py.

    python dqn_atari_fast.py --env-id PongNoFrameskip-v4 --env-backend ale-vector --num-envs 4

The same network, TD target, flags and TensorBoard tags as dqn_atari.py, and these additions:
- several games at once (--num-envs), in processes of their own or on ale-py's C++ threads (--env-backend
  ale-vector); the games step while the network learns, so a step is stored after the update it follows;
- the replay memory on the device (the GPU when there is one), one ring of frames per game, sampled there;
- the gradient steps due are done in catch-up (several games add several steps at a time);
- --compile: the gradient step compiled with torch.compile (on a GPU, replayed as CUDA graphs);
- checkpoints written in the background, only the parts of the replay memory that changed.
It is not a line-by-line diff of dqn_atari.py: read that file first, then this one for speed.
Checkpoints that dqn_atari.py wrote before this variant had a file of its own resume here.
"""

import contextlib
import json
import multiprocessing
import os
import random
import shutil
import signal
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Literal, NamedTuple, Optional

# torch's OpenMP threads spin for about a millisecond after each piece of parallel work: on a busy machine that
# takes the cores from the game and the other work (docs/speed.md). Before torch loads; your own setting wins
if "OMP_WAIT_POLICY" not in os.environ:
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
    """whether to save the model into the `runs/{run_name}` folder, then evaluate it"""
    upload_model: bool = False
    """whether to upload the saved model and its evaluation to the Hugging Face Hub"""
    hf_entity: str = ""
    """the user or org name of the model repository from the Hugging Face Hub"""
    eval_episodes: int = 10
    """the number of full games played by the final evaluation (at epsilon 0.05, as in the Nature paper)"""
    eval_only: Optional[str] = None
    """a saved model to evaluate without training: a .pt file, a run folder or a Hugging Face Hub repo id"""
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
    num_envs: int = 1
    """the number of games played in parallel"""
    buffer_size: int = 1_000_000
    """the replay memory buffer size (1M frames: about 7.1 GB)"""
    gamma: float = 0.99
    """the discount factor gamma"""
    tau: float = 1.0
    """the target network update rate (1.0: a full copy)"""
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
    env_backend: Literal["gymnasium", "ale-vector"] = "gymnasium"
    """the games: gymnasium's vector env over the wrappers below, or ale-py's faster C++ one (ALEVectorEnv)"""
    compile: bool = False
    """if toggled, compile the gradient step with torch.compile (on a GPU: replayed as CUDA graphs); about a minute of compiling first"""


# ENVIRONMENT: the Atari preprocessing of the Nature paper, one small wrapper per idea
class NoopResetEnv(gym.Wrapper):
    """Start each game with 1 to `noop_max` no-ops, so games do not all begin in the same state."""

    def __init__(self, env, noop_max=30):
        super().__init__(env)
        self.noop_max = noop_max
        assert env.unwrapped.get_action_meanings()[0] == "NOOP"

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        noops = self.unwrapped.np_random.integers(1, self.noop_max + 1)  # seeded by reset(seed=...)
        for _ in range(noops):
            obs, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:
                obs, info = self.env.reset()
        return obs, info


class MaxAndSkipEnv(gym.Wrapper):
    """Repeat the action for `skip` frames, sum the rewards, return the max of the last two frames. Why the
    max: the Atari draws some sprites only on every other frame (flicker); the pixel-wise max of two
    consecutive frames shows everything that is on screen."""

    def __init__(self, env, skip=4):
        super().__init__(env)
        self.skip = skip
        self.frames = np.zeros((2, *env.observation_space.shape), dtype=np.uint8)

    def step(self, action):
        total_reward = 0.0
        for i in range(self.skip):
            obs, reward, terminated, truncated, info = self.env.step(action)
            self.frames[i % 2] = obs
            total_reward += reward
            if terminated or truncated:
                break
        # after a one-frame step (the game ended on it) the other frame is from an earlier step: not maxed
        last = self.frames[i % 2]
        obs = last.copy() if i == 0 else np.maximum(last, self.frames[(i + 1) % 2])
        return obs, total_reward, terminated, truncated, info


class EpisodicLifeEnv(gym.Wrapper):
    """Training only: a lost life ends the episode for the agent (its value does not bootstrap past a
    death), while the game itself resets only at game over. Evaluation plays full games."""

    def __init__(self, env):
        super().__init__(env)
        self.lives, self.game_over = 0, True

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
        else:  # a life was lost: keep playing the same game (a no-op moves it past the death)
            obs, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:
                obs, info = self.env.reset(**kwargs)
        self.lives = self.unwrapped.ale.lives()
        return obs, info


class FireResetEnv(gym.Wrapper):
    """Press FIRE after each reset: games like Breakout wait for it, and an agent yet to learn it would stand still."""

    def __init__(self, env):
        super().__init__(env)
        assert env.unwrapped.get_action_meanings()[1] == "FIRE"

    def reset(self, **kwargs):
        self.env.reset(**kwargs)
        for action in (1, 2):  # FIRE, then another action, as OpenAI's baselines do
            obs, _, terminated, truncated, info = self.env.step(action)
            if terminated or truncated:
                self.env.reset(**kwargs)
        return obs, info


class ClipRewardEnv(gym.RewardWrapper):
    """Training only: rewards become -1, 0 or +1, so one learning rate fits every game's score scale."""

    def reward(self, reward):
        return float(np.sign(reward))


def make_env(env_id, seed, idx, capture_video, run_name, training=True):
    def thunk():
        ignore_stop_signals_in_game_processes()  # the main process stops them, after saving the model
        # the ALE renders the grayscale screen itself (cheaper than converting RGB frames in Python);
        # frameskip=1 because MaxAndSkipEnv does the skipping ("ALE/...-v5" would skip 4 by default)
        env = gym.make(env_id, obs_type="grayscale", frameskip=1, render_mode="rgb_array" if capture_video else None)
        if capture_video and idx == 0:
            env = gym.wrappers.RecordVideo(env, f"videos/{run_name}", disable_logger=True)
        # innermost, so `charts/episodic_return` is the real game score: all lives, rewards unclipped
        env = gym.wrappers.RecordEpisodeStatistics(env)
        env = NoopResetEnv(env, noop_max=30)
        env = MaxAndSkipEnv(env, skip=4)
        if training:
            env = EpisodicLifeEnv(env)
        if "FIRE" in env.unwrapped.get_action_meanings():
            env = FireResetEnv(env) if training else FireAfterLifeLossEnv(FireResetEnv(env))  # evaluation: FIRE after lost lives too
        if training:
            env = ClipRewardEnv(env)
        env = gym.wrappers.ResizeObservation(env, (84, 84))
        # frame stacking: one frame cannot show motion (the temporal limitation), four can
        env = gym.wrappers.FrameStackObservation(env, 4)
        env.action_space.seed(seed)
        return env

    return thunk


# ALGO LOGIC: the Deep Q-Network of the Nature paper
class QNetwork(nn.Module):
    def __init__(self, n_actions):
        super().__init__()
        self.network = nn.Sequential(  # the Nature paper's: 3 convolutions, then 2 fully connected layers
            nn.Conv2d(4, 32, 8, stride=4), nn.ReLU(),  # 4x84x84 -> 32x20x20
            nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),  # -> 64x9x9
            nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(),  # -> 64x7x7
            nn.Flatten(), nn.Linear(3136, 512), nn.ReLU(),
            nn.Linear(512, n_actions),  # one Q-value per action
        )  # fmt: skip

    def forward(self, x):
        # uint8 frames (4x less memory) to floats in [0, 1]; channels-last: the same numbers, faster convolutions
        x = x.to(memory_format=torch.channels_last, dtype=torch.float32) / 255.0
        return self.network(x)


# EXPERIENCE REPLAY: the replay memory D of the pseudocode: store transitions, sample random minibatches
class ReplayBatch(NamedTuple):
    observations: torch.Tensor  # (B, 4, 84, 84) uint8
    actions: torch.Tensor  # (B, 1) int64
    rewards: torch.Tensor  # (B,) float32
    next_observations: torch.Tensor  # (B, 4, 84, 84) uint8
    dones: torch.Tensor  # (B,) float32: 1.0 where the episode terminated


class ReplayBuffer:
    """The replay memory: add() stores each game's transition (obs, action, reward, next_obs, terminated),
    sample() draws a random minibatch of the stored ones (random, so consecutive steps do not correlate).

    Each frame is stored once: a stack of 4 frames shares 3 with the next one, so storing obs and next_obs
    as stacks would keep every frame 8 times (1M transitions: 56 GB, not 7.1 GB). Each game writes into a
    ring of slots of its own; slot i holds the newest frame of an obs and the action, reward and termination
    that followed. sample() rebuilds each stack from the frames before it; one reaching back past an
    episode's first frame repeats that frame (as FrameStackObservation does):

        slot    0    1    2    3    4    5    6    7    (episode a: 5 frames; b starts in slot 5)
        frame   a0   a1   a2   a3   a4   b0   b1   b2
        slot 2: obs = a0 a0 a1 a2    next_obs = a0 a1 a2 a3
        slot 3: obs = a0 a1 a2 a3    next_obs = a1 a2 a3 a4    done: a ended with a4
        slot 6: obs = b0 b0 b0 b1    next_obs = b0 b0 b1 b2

    An episode's last frame (a4) takes a slot of its own, which starts no transition. The step after an
    episode's end only resets the game (gymnasium's next-step autoreset): add() stores nothing for it."""

    def __init__(self, buffer_size, num_envs, frame_shape, device, seed):
        self.capacity = buffer_size // num_envs  # slots per game
        self.num_envs, self.device = num_envs, device
        shape = (num_envs, self.capacity)
        self.frames = torch.empty((*shape, *frame_shape), dtype=torch.uint8, device=device)
        self.actions = torch.zeros(shape, dtype=torch.uint8, device=device)
        self.rewards = torch.zeros(shape, dtype=torch.float32, device=device)
        self.dones = torch.zeros(shape, dtype=torch.bool, device=device)
        self.first = torch.zeros(shape, dtype=torch.bool, device=device)  # the slot's frame starts an episode
        self.valid = torch.zeros(shape, dtype=torch.bool, device=device)  # the slot starts a complete transition
        self.newest = torch.zeros(num_envs, dtype=torch.int64, device=device)  # each game's last transition
        self.pos = np.zeros(num_envs, dtype=np.int64)  # the slot each game writes next
        self.filled = 0  # highest slot count written by any game
        self.ended = np.zeros(num_envs, dtype=bool)  # the game's last step ended an episode: its next one resets it
        self.new_episode = np.ones(num_envs, dtype=bool)  # the game's obs at the next add() is an episode's first
        self.rng = torch.Generator(device=device).manual_seed(seed)

    @staticmethod
    def bytes_per_slot(frame_shape):
        return int(np.prod(frame_shape)) + 1 + 4 + 1 + 1 + 1  # frame, action, reward, done, first, valid

    def add(self, obs, actions, rewards, next_obs, terminations, truncations):
        """Store one step of every game (obs, next_obs: on the device). Truncation is no termination: it bootstraps."""
        games = np.flatnonzero(~self.ended)  # a reset step is no transition
        first = self.new_episode[games]
        self.new_episode = self.ended  # after a reset step, next_obs is an episode's first observation
        self.ended = terminations | truncations
        if len(games) == 0:
            return
        slot = self.pos[games]
        # one copy to the device for the step's small arrays (on a GPU, each copy waits for the GPU)
        game, i, action, terminated, first = torch.as_tensor(np.stack([games, slot, actions[games], terminations[games], first]), device=self.device)
        nxt = (i + 1) % self.capacity
        self.frames[game, i] = obs[game, -1]  # the 3 older frames of obs are in the slots before
        self.frames[game, nxt] = next_obs[game, -1]  # if the episode goes on, the next add() writes it again
        self.actions[game, i] = action.to(torch.uint8)
        self.rewards[game, i] = torch.as_tensor(rewards[games], dtype=torch.float32, device=self.device)
        self.dones[game, i] = terminated.bool()
        self.first[game, i], self.first[game, nxt] = first.bool(), False
        self.valid[game, i], self.newest[game] = True, i
        # the 4 slots ahead start no transition: their next frame is not written yet, or their past is overwritten
        self.valid[game[:, None], (i[:, None] + torch.arange(1, 5, device=self.device)) % self.capacity] = False
        self.pos[games] = (slot + 1 + self.ended[games]) % self.capacity  # an episode's last frame keeps its slot
        self.filled = min(self.capacity, max(self.filled, int(slot.max()) + 2))

    def sample(self, batch_size):
        # uniform over the complete transitions: of 8 random draws, the first complete one (drawing again would
        # loop, each test waiting for the GPU). None of 8 (odds about 1% ** 8): the game's newest transition
        size = (batch_size, 8)
        env_ids = torch.randint(self.num_envs, size, device=self.device, generator=self.rng)
        slots = torch.randint(self.filled, size, device=self.device, generator=self.rng)
        ok = self.valid[env_ids, slots]
        pick = ok.int().argmax(dim=1, keepdim=True)  # the first complete candidate
        env_ids, slots = env_ids.gather(1, pick).squeeze(1), slots.gather(1, pick).squeeze(1)
        slots = torch.where(ok.any(dim=1), slots, self.newest[env_ids])
        # frames slot-3 .. slot+1: the observation is the first four, the next observation the last four
        window = (slots[:, None] + torch.arange(-3, 2, device=self.device)) % self.capacity
        for k in (2, 1, 0):  # from the newest frame back: before an episode's first frame, repeat it
            window[:, k] = torch.where(self.first[env_ids, window[:, k + 1]], window[:, k + 1], window[:, k])
        frames = self.frames[env_ids[:, None], window]
        return ReplayBatch(
            observations=frames[:, :4], next_observations=frames[:, 1:],
            actions=self.actions[env_ids, slots].long().unsqueeze(1),
            rewards=self.rewards[env_ids, slots], dones=self.dones[env_ids, slots].float(),
        )


def linear_schedule(start_e: float, end_e: float, duration: int, t: int):
    if duration <= 0:  # --exploration-fraction 0: no decay, epsilon is end-e from the first step (as in SB3)
        return end_e
    slope = (end_e - start_e) / duration
    return max(slope * t + start_e, end_e)


def compute_td_target(q_network, target_network, batch, gamma):
    """The TD target (Q-target): reward + gamma * value of the next state, 0 past a terminal state."""
    # no_grad: the target is a fixed number to regress to; gradients flow only through Q(s, a)
    with torch.no_grad():
        # DQN: the target network both picks the best next action and values it (the max);
        # q_network is unused here (Double DQN, ddqn_atari.py, uses it to pick the action)
        target_max, _ = target_network(batch.next_observations).max(dim=1)
        return batch.rewards + gamma * target_max * (1 - batch.dones)


def gradient_step(q_network, target_network, optimizer, batch, gamma):
    """One gradient descent step on the squared TD error (Q-target - Q(s, a))^2; returns the loss and the mean Q(s, a)."""
    td_target = compute_td_target(q_network, target_network, batch, gamma)
    old_val = q_network(batch.observations).gather(1, batch.actions).squeeze(1)
    loss = F.mse_loss(old_val, td_target)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.detach(), old_val.mean().detach()


# TRAINING LOOP: Deep Q-Learning with experience replay and a fixed Q-target, as in Unit 3's pseudocode
def train(args: Args, make_env=make_env, typed=None):
    """Train a Deep Q-Network; returns the run name, the model path and, after --save-model, the evaluation scores."""
    # TRY NOT TO MODIFY: arguments (--resume: the run's own), seeding, the run folder (Run, in PLUMBING below)
    run = Run(args, make_env, typed)
    args, device = run.args, run.device

    rb = run.replay_memory()  # Initialize the replay memory D (a ReplayBuffer; --resume refills it)
    envs = run.games()  # --num-envs games, each in a process of its own: they step while the network learns
    # Initialize the Q-network with random weights, and the target network (the fixed Q-target) as its copy
    q_network = QNetwork(envs.single_action_space.n).to(device, memory_format=torch.channels_last)
    target_network = QNetwork(envs.single_action_space.n).to(device, memory_format=torch.channels_last)
    target_network.load_state_dict(q_network.state_dict())
    optimizer = torch.optim.Adam(q_network.parameters(), lr=args.learning_rate, fused=True)  # fused: 1 kernel, 0.7 ms, not 4.8 ms, on the CPU
    update = compiled(gradient_step, device) if args.compile else gradient_step  # --compile: a faster, same step
    rng = np.random.default_rng(args.seed)  # exploration
    # TRY NOT TO MODIFY: --resume loads its checkpoint into all of these (else 0, 0); logging starts
    global_step, updates, writer = run.resume(q_network, target_network, optimizer, rng)

    # TRY NOT TO MODIFY: start the game
    obs = torch.as_tensor(envs.reset(seed=args.seed + global_step)[0], device=device)  # frames live on the device
    with run.stoppable():  # Ctrl-C or SIGTERM: the loop stops after its step, and the run ends as below
        while global_step < args.total_timesteps and not run.stop_requests:
            # ALGO LOGIC: put action logic here
            epsilon = linear_schedule(args.start_e, args.end_e, run.exploration_steps, global_step)  # decays over exploration_fraction * total_timesteps of the run's start
            actions = rng.integers(envs.single_action_space.n, size=args.num_envs)
            greedy = rng.random(args.num_envs) >= epsilon
            if greedy.any():
                with torch.no_grad():
                    q_values = q_network(obs)
                actions = np.where(greedy, q_values.argmax(dim=1).cpu().numpy(), actions)

            # TRY NOT TO MODIFY: the games play the actions while the network learns below. So this step is stored
            # after it learns (the course stores, then learns): a minibatch misses only this newest transition
            envs.step_async(actions)

            # ALGO LOGIC: training, a gradient step every `train_frequency` environment steps after `learning_starts`:
            # with one game, when global_step - learning_starts is a positive multiple of train_frequency. With
            # --num-envs N, global_step moves N at a time, and the loop does all the gradient steps due meanwhile
            updates_due = max(0, (global_step - args.learning_starts) // args.train_frequency)
            while updates < updates_due:
                loss, q_mean = update(q_network, target_network, optimizer, rb.sample(args.batch_size), args.gamma)
                updates += 1

                if updates % 100 == 0:  # .item() waits for the GPU: only when logging
                    writer.add_scalar("losses/td_loss", loss.item(), global_step)
                    writer.add_scalar("losses/q_values", q_mean.item(), global_step)

                # update the fixed Q-target every `target_network_frequency` environment steps: when the steps
                # learned from have just reached a multiple of it (defaults 1000 and 4: at updates 250, 500, ...)
                steps_learned = updates * args.train_frequency
                if steps_learned % args.target_network_frequency < args.train_frequency:
                    for target_param, q_param in zip(target_network.parameters(), q_network.parameters()):
                        target_param.data.copy_(args.tau * q_param.data + (1.0 - args.tau) * target_param.data)

            next_obs, rewards, terminations, truncations, infos = envs.step_wait()
            next_obs = torch.as_tensor(next_obs, device=device)  # one copy to the device, for acting and replay
            global_step += args.num_envs

            # TRY NOT TO MODIFY: record rewards for plotting purposes (charts/episodic_return and _length)
            run.log_episodes(infos, global_step)

            rb.add(obs, actions, rewards, next_obs, terminations, truncations)  # store the transition in D

            # TRY NOT TO MODIFY: CRUCIAL step easy to overlook
            obs = next_obs

            run.log_progress(global_step, epsilon)  # every 1000 steps: charts/SPS, charts/epsilon, the progress bar
            run.checkpoint_if_due(global_step, updates)  # every `checkpoint_frequency` steps: what --resume continues
    return run.end(global_step, updates)  # TRY NOT TO MODIFY: the last checkpoint, the model saved, evaluated, uploaded


# ======================================================================================================
# PLUMBING: what a run needs around the DQN above, and nothing a learner must read to follow Unit 3:
# argument and memory checks, the fast games (ALEVectorEnv), wandb, the progress bar, the run's set-up
# and end (Run), checkpoints and --resume, evaluation, --eval-only and the Hugging Face Hub
# ======================================================================================================
class UsageError(Exception):
    """Bad input: reported as one line and exit code 2, without a traceback."""


def ignore_stop_signals_in_game_processes():
    """Ctrl-C reaches every process of the terminal, and a job scheduler's SIGTERM every process of the
    job: the game processes ignore both, so that the main process can save the model and close them in order."""
    if multiprocessing.parent_process() is not None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def file_name(env_id):
    """gymnasium's recommended ids hold a slash ("ALE/Pong-v5"): "ALE-Pong-v5" makes one folder level under
    runs/ and videos/, and a valid Hub repo name. The env id itself is kept everywhere else."""
    return env_id.replace("/", "-")


def make_run_folder(args):
    """runs/{env}__{exp_name}__{seed}__{time}, made here: two runs started in the same second get two folders
    (the second with -2), and a folder that cannot be made is one error line."""
    base = f"{file_name(args.env_id)}__{args.exp_name}__{args.seed}__{int(time.time())}"
    for name in [base] + [f"{base}-{n}" for n in range(2, 100)]:
        try:
            Path("runs", name).mkdir(parents=True)
            return name
        except FileExistsError:
            continue
        except OSError as e:
            raise UsageError(f"cannot write the run folder runs/{name} ({e.strerror}): work in a folder of yours")
    raise UsageError(f"runs/{base} and 98 more folders of the same second exist: start the run again")


def check_atari_env_id(env_id):
    """Unknown or non-Atari ids fail here, before any process starts, with gymnasium's own hint (the versions
    that the id's name has, or the closest name)."""
    try:
        entry_point = str(gym.spec(env_id).entry_point)
    except gym.error.Error as e:
        raise UsageError(f"unknown environment id '{env_id}': {e} Atari ids look like PongNoFrameskip-v4.") from None
    if not entry_point.startswith("ale_py"):
        raise UsageError(
            f"'{env_id}' is not an Atari game: this script learns from screen pixels, e.g. --env-id "
            "PongNoFrameskip-v4 (for FrozenLake or Taxi use dqn_frozenlake_tabular.py)"
        )


def camera_in_game_process_only(filmed, unfilmed):
    """AsyncVectorEnv builds its first game twice: once in this process, only to read its spaces, then in its
    game process. A RecordVideo in the first build would create videos/<run_name>/, and the one that films
    would then warn "Overwriting existing videos" on every run: the first build gets no camera."""

    def thunk():
        return (filmed if multiprocessing.parent_process() is not None else unfilmed)()

    return thunk


# FAST PATH: ale-py's C++ vector env
class ALEVectorEnv:
    """--env-backend ale-vector: ale-py's own vector env, the fast path. Its games run on C++ threads of
    this process (no game processes, no frames sent through pipes), and step while the network learns.

    It does the frame skip (4, max over the last two frames), 0 to 29 no-ops and FIRE on reset, the
    84x84 grayscale frames and the next-step autoreset itself. Three things are done here instead,
    because its own versions differ from the wrappers above:
    - episodic life: its `episodic_life=True` restarts the whole game at each lost life, so a second
      life would never be played. Here a lost life only ends the agent's episode, and the step after it
      presses FIRE (NOOP in games without FIRE), as EpisodicLifeEnv and FireResetEnv do
    - reward clipping: clipped rewards hide the real game score, so the raw rewards are summed into the
      score (`charts/episodic_return`) and clipped here
    - frame stacking: it pads a new episode's stack with black frames; here the first frame is repeated,
      as FrameStackObservation does and as the replay buffer rebuilds its stacks
    Not identical to the wrappers above: the start of each game differs by a few frames (FIRE, then
    no-ops; the wrappers do no-ops, then FIRE and RIGHT), so the same seed plays other games."""

    def __init__(self, env_id, num_envs, training=True, **options):
        from ale_py.vector_env import AtariVectorEnv

        game = gym.registry[env_id].kwargs  # "SpaceInvadersNoFrameskip-v4" and "ALE/SpaceInvaders-v5": "space_invaders"
        self.envs = AtariVectorEnv(
            game["game"], num_envs, frameskip=4, stack_num=1, reward_clipping=False, episodic_life=False,
            repeat_action_probability=game["repeat_action_probability"],  # v4 ids: 0, v5 ids: 0.25 (sticky actions)
            max_num_frames_per_episode=game["max_num_frames_per_episode"], **options,
        )  # fmt: skip
        self.num_envs, self.training, self.single_action_space = num_envs, training, self.envs.single_action_space
        actions = list(self.envs.ale.get_action_set())
        fire = options.get("use_fire_reset", True) and ale_py.Action.FIRE in actions
        self.restart_action = actions.index(ale_py.Action.FIRE) if fire else 0  # FIRE, or NOOP

    def reset(self, seed=None):
        frames, info = self.envs.reset(seed=seed)  # game i gets seed + i, as with gym.vector
        self.stack = np.repeat(frames, 4, axis=1)  # (N, 4, 84, 84) uint8
        self.lives, self.score = info["lives"], np.zeros(self.num_envs)
        self.game_over = np.zeros(self.num_envs, dtype=bool)  # the C++ env resets these games at the next step
        self.life_lost = np.zeros(self.num_envs, dtype=bool)  # these games go on after a lost life at the next step
        return self.stack.copy(), {}

    def step_async(self, actions):  # returns at once: the games step while the network learns
        self.envs.send(np.where(self.life_lost, self.restart_action, actions))

    def step_wait(self):
        frames, raw_rewards, terminated, truncated, info = self.envs.recv()
        restart = self.game_over | self.life_lost  # a reset step (next-step autoreset): no transition
        self.score = np.where(self.game_over, 0, self.score) + raw_rewards  # the real score: all lives, unclipped
        self.game_over = terminated | truncated
        lives = info["lives"]
        # training only: a lost life ends the agent's episode (Qbert sits at 0 lives for a few frames: no loss)
        self.life_lost = self.training & (0 < lives) & (lives < self.lives) & ~self.game_over
        self.lives = lives
        self.stack = np.where(restart[:, None, None, None], frames, np.concatenate([self.stack[:, 1:], frames], axis=1))
        rewards = np.where(restart, 0.0, np.sign(raw_rewards) if self.training else raw_rewards).astype(np.float32)
        infos = {}
        if self.game_over.any():  # "l" counts frames, as RecordEpisodeStatistics under the frame skip does
            infos = {"episode": {"r": self.score.copy(), "l": info["episode_frame_number"].copy()}, "_episode": self.game_over.copy()}
        return self.stack.copy(), rewards, terminated | self.life_lost, truncated, infos

    def close(self):
        self.envs = None  # its close() leaves the C++ threads running; freeing it stops them


# SETUP: arguments, device, memory, logging
def check_args(args: Args):
    problems = [
        (args.total_timesteps < 1, "--total-timesteps must be positive"),
        (args.learning_rate <= 0, f"--learning-rate must be positive (got {args.learning_rate}); the default is 1e-4"),
        (args.num_envs < 1, "--num-envs must be at least 1"),
        (args.buffer_size < 5 * args.num_envs, "--buffer-size must hold at least 5 frames per game"),
        (args.batch_size < 1, "--batch-size must be at least 1"),
        (
            args.batch_size > args.buffer_size,
            f"--batch-size {args.batch_size} is larger than --buffer-size {args.buffer_size}: "
            "the replay memory cannot fill a batch",
        ),
        (
            args.learning_starts >= args.total_timesteps,
            f"--learning-starts {args.learning_starts} is not below --total-timesteps {args.total_timesteps}: "
            "the agent would never learn; lower --learning-starts or raise --total-timesteps",
        ),
        (args.learning_starts < args.batch_size, "--learning-starts must be at least --batch-size"),
        (not 0 <= args.gamma <= 1, "--gamma must be in [0, 1]"),
        (not 0 < args.tau <= 1, "--tau must be in (0, 1]"),
        (args.train_frequency < 1, "--train-frequency must be at least 1"),
        (args.target_network_frequency < 1, "--target-network-frequency must be at least 1"),
        (not 0 <= args.end_e <= args.start_e <= 1, "epsilon needs 0 <= --end-e <= --start-e <= 1"),
        (not 0 <= args.exploration_fraction <= 1, "--exploration-fraction must be in [0, 1]"),
        (args.eval_episodes < 0, "--eval-episodes cannot be negative"),
        (args.upload_model and args.eval_episodes < 1, "--upload-model needs an evaluation: --eval-episodes of at least 1"),
        (args.checkpoint_frequency < 0, "--checkpoint-frequency cannot be negative (0 turns checkpoints off)"),
    ]
    for bad, message in problems:
        if bad:
            raise UsageError(message)
    if args.capture_video:
        try:
            import moviepy  # noqa: F401  (gymnasium's RecordVideo writes mp4 files with it)
        except ImportError:
            raise UsageError("--capture-video needs moviepy to encode videos: pip install moviepy")


def select_device(args):
    if args.cuda and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def available_memory_bytes(device):
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            return int(next(line for line in f if line.startswith("MemAvailable")).split()[1]) * 1024
    except (OSError, StopIteration):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_buffer_fits(buffer_size, frame_shape, device):
    needed = buffer_size * ReplayBuffer.bytes_per_slot(frame_shape)
    available = available_memory_bytes(device)
    print(f"replay buffer: {buffer_size:,} frames, {needed / 1e9:.2f} GB on {device.type}")
    if needed > 0.9 * available:  # fail now, not hours later when the buffer fills the memory
        fits = int(0.8 * available / ReplayBuffer.bytes_per_slot(frame_shape))
        raise UsageError(
            f"a replay buffer of {buffer_size:,} frames needs {needed / 1e9:.1f} GB but only "
            f"{available / 1e9:.1f} GB is available: use --buffer-size {fits} or less"
        )


def start_wandb(args, run_name, run_id=None):
    """wandb with the TensorBoard scalars; with no login, an offline run that can be synced later."""
    import wandb

    mode = os.environ.get("WANDB_MODE")
    if mode is None and not wandb.login(prompt=False, verify=False):  # never ask for a key on the terminal
        mode = "offline"
        print("wandb: not logged in, logging offline; upload later with `wandb login && wandb sync wandb/offline-run-*`")
    return wandb.init(
        project=args.wandb_project_name,
        entity=args.wandb_entity,
        sync_tensorboard=True,
        config=vars(args),
        name=run_name,
        save_code=True,
        mode=mode,
        id=run_id,  # on --resume, the same wandb run
        resume="allow" if run_id else None,
    )


class Progress:
    """A tqdm bar on a terminal; in a log file (nohup, a notebook), a plain line at once, then one every 30 s."""

    def __init__(self, total, initial=0):
        self.bar = None
        if sys.stdout.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)
        self.last, self.last_line = initial, 0.0

    def update(self, global_step, sps, recent_return, epsilon):
        text = f"SPS={sps} return={recent_return:.1f} epsilon={epsilon:.3f}"
        if self.bar is not None:  # the figures first: update() draws the bar, with the postfix set before it
            self.bar.set_postfix_str(text, refresh=False)
            self.bar.update(global_step - self.last)
            self.last = global_step
        elif time.time() - self.last_line > 30:
            print(f"global_step={global_step} {text}", flush=True)
            self.last_line = time.time()

    def close(self):
        if self.bar is not None:
            self.bar.close()


def not_the_profiler_label_warning(record):
    """--compile traces the gradient step's optimizer.zero_grad() and optimizer.step(), which torch wraps in a
    profiler label (torch.autograd.profiler.record_function). The compiled step leaves the label out (only a
    torch.profiler trace would show it) and torch warns "Profiler record function ... will be ignored": not a
    problem of the run, so --compile drops that one message, and no other, from that one torch logger."""
    return not record.getMessage().startswith("Profiler record function")


def compiled(step, device):
    """--compile: the gradient step launches ~40 small kernels, and on a GPU their launches take most of its
    time; compiled and replayed as CUDA graphs ("reduce-overhead"), they are launched together."""
    compiled_step = torch.compile(step, mode="reduce-overhead" if device.type == "cuda" else None)

    def update(*args):
        torch.compiler.cudagraph_mark_step_begin()  # a new step: CUDA graphs may reuse the last step's outputs
        return compiled_step(*args)

    return update


class RunSetup:
    """A run's arguments, folder, device and seeding (__init__), its replay memory and its games. typed: the
    fields set on the command line, which --resume applies (None: those that differ from their default)."""

    def __init__(self, args: Args, make_env, typed=None):
        self.state = None
        if args.resume:  # the run's own arguments, from its last checkpoint
            self.state, self.checkpoint_folder, args = load_checkpoint(args.resume, args, typed)
        check_args(args)
        if make_env is globals()["make_env"]:  # tests pass environments of their own
            check_atari_env_id(args.env_id)
        self.args, self.make_env = args, make_env
        if args.compile:
            import logging

            logging.getLogger("torch._dynamo.variables.ctx_manager").addFilter(not_the_profiler_label_warning)
        self.run_name = self.state["run_name"] if self.state else make_run_folder(args)
        self.run_dir = Path(f"runs/{self.run_name}")
        self.model_path = self.run_dir / f"{args.exp_name}.pt"
        self.device = select_device(args)

        # TRY NOT TO MODIFY: seeding
        random.seed(args.seed)
        np.random.seed(args.seed)
        torch.manual_seed(args.seed)
        torch.backends.cudnn.deterministic = args.torch_deterministic
        torch.backends.cudnn.benchmark = not args.torch_deterministic  # let cuDNN time its convolution kernels

        self.stop_requests, self.interrupted, self.recent_returns = [], False, deque(maxlen=20)

    def replay_memory(self, frame_shape=(84, 84)):
        """The replay memory, once it is known to fit; the checkpoint's replay files of --resume are checked."""
        args = self.args
        check_buffer_fits(args.buffer_size, frame_shape, self.device)
        # nothing is read into the buffer before the game processes fork (they would keep its pages), but its
        # files are checked before they start: their ALE banner on stderr would bury the one error line
        self.rb = CheckpointedReplayBuffer(args.buffer_size, args.num_envs, frame_shape, self.device, args.seed)
        if self.state:
            try:
                load_replay_buffer(self.rb, self.checkpoint_folder, check_only=True)
            except Exception as e:
                raise UsageError(f"the replay buffer of the checkpoint in '{args.resume}' is damaged or does not fit this run ({type(e).__name__}); start a new run instead")
        return self.rb

    def games(self):
        """--num-envs games: gymnasium's vector env, each game in its own process, or ALEVectorEnv."""
        args, make_env = self.args, self.make_env
        if args.env_backend == "ale-vector":  # the fast path: games on C++ threads (its training games are not filmed)
            if args.capture_video:
                evaluated = (args.save_model or args.upload_model) and args.eval_episodes > 0
                filmed = f"only the evaluation at the end (videos/{self.run_name}-eval/)" if evaluated else "and this run has no evaluation to film (--save-model)"
                print(f"--capture-video: the ale-vector backend films no training game, {filmed}")
            self.envs = ALEVectorEnv(args.env_id, args.num_envs)
        else:
            # a resumed run films into a folder of its own, beside the videos of the run before it (not over them)
            filmed = f"{self.run_name}/resumed-at-{self.state['global_step']}" if self.state else self.run_name
            env_fns = [make_env(args.env_id, args.seed + i, i, args.capture_video, filmed) for i in range(args.num_envs)]
            if args.capture_video:
                env_fns[0] = camera_in_game_process_only(env_fns[0], make_env(args.env_id, args.seed, 0, False, self.run_name))
            self.envs = gym.vector.AsyncVectorEnv(env_fns, autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
        assert isinstance(self.envs.single_action_space, gym.spaces.Discrete), "only discrete action space is supported"
        return self.envs

class RunStart:
    """--resume's checkpoint loaded into the networks, the optimizer, the replay memory and the exploration;
    then logging starts."""

    def resume(self, q_network, target_network, optimizer, rng):
        """Load the checkpoint of --resume (if any) into the networks, the optimizer, the replay memory and
        the exploration, then start logging; returns the environment step and gradient step to go on from."""
        args, state, global_step, updates = self.args, self.state, 0, 0
        self.trained = q_network, target_network, optimizer, rng
        self.exploration_steps = args.exploration_fraction * args.total_timesteps
        if state:  # all of it is checked before anything is written into the run folder
            try:
                q_network.load_state_dict(state["q_network"])
                target_network.load_state_dict(state["target_network"])
                optimizer.load_state_dict(state["optimizer"])
                load_replay_buffer(self.rb, self.checkpoint_folder)
            except Exception as e:
                self.envs.close()
                raise UsageError(f"the checkpoint in '{args.resume}' does not fit this game's network or buffer ({type(e).__name__}); start a new run instead")
            rng.bit_generator.state = state["explore_rng"]
            torch.set_rng_state(state["torch_rng"])
            global_step, updates = state["global_step"], state["updates"]
            # epsilon decays over the steps the run started with (checkpoints older than this field: over the
            # fraction of the total they were saved with)
            saved = state["args"]
            self.exploration_steps = state.get("exploration_steps", saved["exploration_fraction"] * saved["total_timesteps"])
            print(f"resuming {self.run_name} at step {global_step:,}: the games start new episodes")
        self.start_logging(global_step)
        return global_step, updates, self.writer

    def start_logging(self, global_step):
        args, state = self.args, self.state
        # purge_step: on resume, TensorBoard drops what the interrupted run logged after its checkpoint
        self.writer = SummaryWriter(str(self.run_dir), purge_step=global_step if state else None)
        self.wandb_run = start_wandb(args, self.run_name, state["wandb_id"] if state else None) if args.track else None
        if not state:
            self.writer.add_text(
                "hyperparameters",
                "|param|value|\n|-|-|\n%s" % ("\n".join([f"|{key}|{value}|" for key, value in vars(args).items()])),
            )
        self.checkpoint_step = global_step if state else None  # the step of the checkpoint on disk
        self.start_time, self.start_step = time.time(), global_step
        self.progress = Progress(args.total_timesteps, initial=global_step)


class RunLoop:
    """What the loop of train() calls: Ctrl-C handling, logging, checkpoints."""

    @contextlib.contextmanager
    def stoppable(self):
        """Ctrl-C (or a SIGTERM) asks the loop to stop after the current step, so that the checkpoint is
        consistent; a second Ctrl-C stops at once. At the end, the progress bar and the games are closed."""

        def request_stop(signum, frame):
            self.stop_requests.append(signum)
            signal.signal(signal.SIGINT, signal.default_int_handler)

        handlers = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        except KeyboardInterrupt:  # a second Ctrl-C: no checkpoint, the step may be half done
            self.interrupted = True
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            self.progress.close()
            self.envs.close()

    def log_episodes(self, infos, global_step):
        if "episode" in infos:
            for i in np.flatnonzero(infos["_episode"]):
                self.recent_returns.append(float(infos["episode"]["r"][i]))
                self.writer.add_scalar("charts/episodic_return", float(infos["episode"]["r"][i]), global_step)
                self.writer.add_scalar("charts/episodic_length", int(infos["episode"]["l"][i]), global_step)

    def log_progress(self, global_step, epsilon):
        if global_step % 1000 >= self.args.num_envs:
            return
        sps = int((global_step - self.start_step) / (time.time() - self.start_time))
        self.writer.add_scalar("charts/SPS", sps, global_step)
        self.writer.add_scalar("charts/epsilon", epsilon, global_step)
        self.progress.update(global_step, sps, np.mean(self.recent_returns) if self.recent_returns else 0.0, epsilon)

    def checkpoint_if_due(self, global_step, updates):
        if self.args.checkpoint_frequency and global_step % self.args.checkpoint_frequency < self.args.num_envs:
            self.checkpoint(global_step, updates)

    def checkpoint(self, global_step, updates):
        q_network, target_network, optimizer, rng = self.trained
        save_checkpoint(self.run_dir, {
            "script": os.path.basename(__file__), "run_name": self.run_name, "args": asdict(self.args),
            "global_step": global_step, "updates": updates, "q_network": q_network.state_dict(),
            "target_network": target_network.state_dict(), "optimizer": optimizer.state_dict(),
            "explore_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(), "exploration_steps": self.exploration_steps,
            "wandb_id": self.wandb_run.id if self.wandb_run else None,
        }, self.rb)  # fmt: skip
        self.checkpoint_step = global_step

class RunEnd:
    """The end of a run: the last checkpoint, the model saved, evaluated and uploaded, the logs closed."""

    def end(self, global_step, updates):
        """The last checkpoint, then the model saved, evaluated and uploaded as the flags ask."""
        args, run_name, model_path = self.args, self.run_name, self.model_path
        q_network = self.trained[0]
        self.last_checkpoint(global_step, updates)
        interrupted = self.interrupted or bool(self.stop_requests)

        eval_returns = []
        if args.save_model or args.upload_model or interrupted:
            save_model(model_path, q_network, args)
            print(f"model saved to {model_path}")
        if (args.save_model or args.upload_model) and not interrupted and args.eval_episodes > 0:
            eval_returns = evaluate(
                q_network, args.env_id, args.eval_episodes, f"{run_name}-eval", self.device, epsilon=0.05,
                capture_video=args.capture_video, seed=args.seed, make_env=self.make_env,
            )
            report_evaluation(eval_returns, self.writer)
            if args.upload_model:
                push_to_hub(args, run_name, model_path, eval_returns, f"videos/{run_name}-eval")
        self.close_logs()
        self.say_what_is_left(updates, interrupted)
        return {"run_name": run_name, "model_path": str(model_path), "eval_returns": eval_returns, "interrupted": interrupted}

    def last_checkpoint(self, global_step, updates):
        args, stop_requests = self.args, self.stop_requests
        if stop_requests:
            print(f"\nstopped at step {global_step:,}", end="")
        if args.checkpoint_frequency and not self.interrupted and self.checkpoint_step != global_step:
            print(": writing a checkpoint" if stop_requests else f"writing the last checkpoint (step {global_step:,})")
            self.checkpoint(global_step, updates)  # the last one: `--resume ... --total-timesteps N` can go further from it
        elif stop_requests:
            print(": its checkpoint is written" if args.checkpoint_frequency else "")
        if self.rb.writer is not None:
            self.rb.writer.join(timeout=1)
            if self.rb.writer.is_alive():  # a full replay memory takes a while
                print(f"waiting for the checkpoint of step {self.checkpoint_step:,} to be written")
        self.rb.wait_for_checkpoint()

    def close_logs(self):
        args, run_name = self.args, self.run_name
        self.writer.close()
        if self.wandb_run is not None:
            if args.capture_video:
                import wandb

                for video in sorted(Path("videos").glob(f"{run_name}*/*.mp4")):
                    self.wandb_run.log({f"videos/{video.parent.name}": wandb.Video(str(video))})
            self.wandb_run.finish()


class RunReport:
    """The last lines of a run: how to go on from it, and what its folder holds."""

    def contents(self, model_saved):
        """One line: the run's folder and what is in it (and where its videos are)."""
        what = ["TensorBoard events"]
        if self.checkpoint_step is not None:
            what.append(f"the checkpoint of step {self.checkpoint_step:,} (for --resume)")
        what.append(f"the model {self.model_path.name}" if model_saved else "no model (--save-model saves one)")
        if (self.run_dir / "hub").is_dir():
            what.append("hub/, the files for the Hugging Face Hub")
        videos = [f"videos/{name}/" for name in (self.run_name, f"{self.run_name}-eval") if Path("videos", name).is_dir()]
        return f"run folder {self.run_dir}: {', '.join(what)}" + (f"; videos in {' and '.join(videos)}" if videos else "")

    def say_what_is_left(self, updates, interrupted):
        """How to go on: --resume, --eval-only, and what the run folder holds."""
        args, stop_requests, run_dir, model_path = self.args, self.stop_requests, self.run_dir, self.model_path
        script = os.path.basename(__file__)
        if interrupted:
            if stop_requests and args.checkpoint_frequency:
                print(f"continue it with: python {script} --resume {run_dir}")
            if updates == 0:
                print(f"learning had not started yet (it starts after step {args.learning_starts:,}): the saved network is untrained")
        model_saved = args.save_model or args.upload_model or interrupted
        if model_saved:  # --eval-only plays the games of the run's own evaluation (its seed): the same score
            print(f"evaluate it with: python {script} --eval-only {model_path}{eval_episodes_flag(args)}")
        print(self.contents(model_saved))


class Run(RunSetup, RunStart, RunLoop, RunEnd, RunReport):
    """Everything a training run does around the DQN loop of train(): its set-up (RunSetup), --resume and
    logging (RunStart), what the loop calls (RunLoop), its end (RunEnd) and its last lines (RunReport)."""


# EVALUATION AND SAVING
class FireAfterLifeLossEnv(gym.Wrapper):
    """Evaluation only: press FIRE after each lost life, without ending the episode. In training, a lost life
    ends the episode and FireResetEnv presses FIRE at the next one, so the agent never had to learn FIRE;
    without this wrapper, in a game that waits for it after a lost life (Breakout), it would stand still
    until a random action (epsilon) presses FIRE."""

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self.lives = self.unwrapped.ale.lives()
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        lives = self.unwrapped.ale.lives()
        for action in (1, 2) if 0 < lives < self.lives else ():  # FIRE, then another action, as FireResetEnv does
            if terminated or truncated:
                break
            obs, more, terminated, truncated, info = self.env.step(action)
            reward += more
        self.lives = self.unwrapped.ale.lives()
        return obs, reward, terminated, truncated, info


def evaluate(q_network, env_id, eval_episodes, run_name, device, epsilon=0.05, capture_video=False, seed=0, make_env=make_env):
    """Play full games (all lives, real rewards, FIRE after each lost life) with epsilon-greedy actions;
    return their scores. epsilon 0.05: the Nature paper's evaluation (Mnih et al. 2015); CleanRL's
    dqn_atari.py evaluates at --end-e (0.01)."""
    env = make_env(env_id, seed, 0, capture_video, run_name, training=False)()
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    episodic_returns = []
    while len(episodic_returns) < eval_episodes:
        if rng.random() < epsilon:
            action = int(rng.integers(env.action_space.n))
        else:
            with torch.no_grad():
                action = int(q_network(torch.as_tensor(obs, device=device)[None]).argmax(dim=1))
        obs, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            episodic_returns.append(float(info["episode"]["r"]))
            if len(episodic_returns) < eval_episodes:  # no extra game: RecordVideo would film its start
                obs, _ = env.reset()
    env.close()
    return episodic_returns


def report_evaluation(returns, writer=None):
    mean, std = float(np.mean(returns)), float(np.std(returns))
    print(f"evaluation over {len(returns)} {'game' if len(returns) == 1 else 'games'}: {mean:.1f} +/- {std:.1f} (leaderboard score mean - std: {mean - std:.1f})")
    if writer is not None:
        for idx, episodic_return in enumerate(returns):
            writer.add_scalar("eval/episodic_return", episodic_return, idx)
    return mean, std


def save_model(path, q_network, args):
    """The network, the run's arguments, and what loading needs: the number of actions and the script that saved it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    n_actions = int(q_network.network[-1].out_features)  # the last layer: one Q-value per action
    torch.save({"model": q_network.state_dict(), "args": asdict(args), "n_actions": n_actions, "script": os.path.basename(__file__)}, tmp)
    os.replace(tmp, path)  # atomic: a kill during the write leaves no half-written model


def load_model(path, device):
    """A model saved by any of the Atari scripts, into this script's QNetwork. weights_only: only tensors and
    plain values are read, no code. Models older than their n_actions field take it from their game."""
    try:
        saved = torch.load(path, map_location=device, weights_only=True)
        q_network = QNetwork(saved.get("n_actions") or gym.make(saved["args"]["env_id"]).action_space.n).to(device)
    except FileNotFoundError:
        raise UsageError(f"no saved model at '{path}': pass the .pt file written by --save-model")
    except Exception as e:
        raise UsageError(f"'{path}' is no model saved by an Atari script here ({type(e).__name__}): pass the .pt file written by --save-model")
    try:
        q_network.load_state_dict(saved["model"])
    except RuntimeError:
        raise UsageError(f"the network in '{path}', saved by {saved.get('script', 'dqn_atari.py')}, does not fit "
                         f"the QNetwork of {os.path.basename(__file__)}: load it with the script that saved it") from None
    return q_network.to(memory_format=torch.channels_last), saved["args"]


def eval_episodes_flag(args: Args):
    """What an --eval-only command needs to replay the run's evaluation: its number of games, where not the default."""
    return f" --eval-episodes {args.eval_episodes}" if args.eval_episodes not in (0, Args.eval_episodes) else ""


def resolve_model_path(path_or_repo):
    """A model file, a run folder (the .pt file in it), or a Hub repo id (user/name) whose .pt file is downloaded."""
    if os.path.isdir(path_or_repo):  # runs/{run_name}
        models = sorted(Path(path_or_repo).glob("*.pt"), key=os.path.getmtime)
        if not models:
            raise UsageError(f"no model in the folder '{path_or_repo}': pass the .pt file written by --save-model")
        if len(models) > 1:
            print(f"{path_or_repo} holds {len(models)} models ({', '.join(m.name for m in models)}): evaluating the newest, {models[-1].name}")
        return str(models[-1])
    local = path_or_repo.startswith(("runs/", "./", "../", "/")) or path_or_repo.endswith(".pt") or path_or_repo.count("/") != 1
    if local or os.path.exists(path_or_repo):
        return path_or_repo  # load_model says it if the file is missing
    try:
        from huggingface_hub import HfApi, hf_hub_download

        # one request lists the repo's files, with no retries: without a network this fails in a second
        files = [f.rfilename for f in HfApi().model_info(path_or_repo, timeout=10).siblings]
        filename = next(f for f in files if f.endswith(".pt"))
        return hf_hub_download(path_or_repo, filename)
    except Exception as e:
        raise UsageError(f"no saved model at '{path_or_repo}', and no model could be downloaded from the Hub repo of that name ({type(e).__name__})")


# the flags --eval-only uses; the others only shape a training run, and are said to be ignored
EVAL_ONLY_FLAGS = ("eval_only", "eval_episodes", "capture_video", "cuda", "seed", "env_id", "exp_name")


def eval_only(args: Args, typed=()):
    """Play the saved model on the games of its run's evaluation: its game and its seed, unless `typed` (the
    fields whose flags were typed) holds seed. A typed --env-id of another game is refused."""
    if args.capture_video:
        check_args(args)
    device = select_device(args)
    model_path = resolve_model_path(args.eval_only)
    q_network, saved_args = load_model(model_path, device)
    env_id = saved_args.get("env_id", args.env_id)
    if "env_id" in typed and args.env_id != env_id:
        raise UsageError(f"'{args.eval_only}' was trained on {env_id}: its network cannot play --env-id {args.env_id} (drop --env-id)")
    check_atari_env_id(env_id)
    ignored = [f"--{name.replace('_', '-')}" for name in sorted(set(typed) - set(EVAL_ONLY_FLAGS))]
    if ignored:
        print(f"--eval-only ignores {', '.join(ignored)}: {'it shapes' if len(ignored) == 1 else 'they shape'} a training run only")
    seed = args.seed if "seed" in typed else saved_args.get("seed", args.seed)
    print(f"evaluating {model_path} on {env_id}, seed {seed} ({'--seed' if 'seed' in typed else 'the seed of its run'})")
    run_name = f"{file_name(env_id)}__{args.exp_name}-eval__{seed}__{int(time.time())}"
    returns = evaluate(q_network, env_id, args.eval_episodes, run_name, device, capture_video=args.capture_video, seed=seed)
    report_evaluation(returns)
    if args.capture_video:
        print(f"the video is in videos/{run_name}/")
    return returns


# CHECKPOINTS: what --resume continues from
def save_checkpoint(run_dir, state, rb):
    """Start writing a checkpoint into a new folder, and return: a background thread (rb.writer) writes it
    while the loop goes on, from copies of what the loop changes (the state, the small arrays of the
    replay memory and its frame chunks being written into), then points checkpoint.json at it. Renames
    are atomic, so a kill at any moment leaves the previous checkpoint whole and pointed at."""
    import copy
    import threading

    rb.wait_for_checkpoint()  # one write at a time: its frame files are linked to the previous checkpoint's
    pointer = run_dir / "checkpoint.json"
    previous = run_dir / json.loads(pointer.read_text())["folder"] if pointer.exists() else None
    state = copy.deepcopy(state)  # the networks and the optimizer change at the next gradient step
    replay = {name: getattr(rb, name)[:, : rb.filled].to("cpu", copy=True).numpy() for name in REPLAY_ARRAYS}
    replay.update(pos=rb.pos.copy(), rng=rb.rng.get_state().numpy(), chunk=rb.chunk)
    # the frame chunks that changed since the previous checkpoint are written, the others linked to its files;
    # the chunks that the next step writes into are copied now, the others written from the live memory
    chunks = range(-(-rb.filled // rb.chunk))
    changed = [c for c in chunks if rb.changed[c] or previous is None or not (previous / chunk_file(c)).exists()]
    head = rb.chunks_written_next(np.ones(rb.num_envs, dtype=bool))
    copies = {c: rb.frame_chunk(c, rb.filled).to("cpu", copy=True).numpy() for c in changed if c in head}
    rb.changed[:] = False
    rb.unsaved = set(changed) - set(copies)
    # from the chunk after the write position on: the order in which the ring overwrites them
    order = sorted(changed, key=lambda c: (c - rb.pos[0] // rb.chunk - 1) % len(rb.changed))

    def write():
        folder, partial = run_dir / f"checkpoint-{state['global_step']}", run_dir / "checkpoint.partial"
        try:
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
            torch.save(state, partial / "state.pt")
            save_replay_buffer(rb, partial, previous, replay, order, copies)
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(partial, folder)
            (run_dir / "checkpoint.json.partial").write_text(json.dumps({"folder": folder.name, "global_step": state["global_step"]}))
            os.replace(run_dir / "checkpoint.json.partial", pointer)
            for old in run_dir.glob("checkpoint-*"):
                if old != folder:
                    shutil.rmtree(old)
        except BaseException as e:  # raised in the main thread by wait_for_checkpoint
            rb.write_error = e
            rb.changed[changed] = True  # not on disk: a next checkpoint must not link them to the previous one
        finally:
            rb.unsaved = set()

    rb.writer = threading.Thread(target=write, name="checkpoint-writer")
    rb.writer.start()


# what --resume may change: how far the run goes, what it logs and saves, and how fast or where it runs
# (--compile, --cuda; --env-backend plays the same games with the same preprocessing into the same replay
# memory). What is learned may not change; --num-envs neither: the replay memory keeps one ring per game
RESUME_OVERRIDES = ("resume", "total_timesteps", "cuda", "track", "wandb_project_name", "wandb_entity", "capture_video",
                    "save_model", "upload_model", "hf_entity", "eval_episodes", "checkpoint_frequency", "compile", "env_backend")


def load_checkpoint(run_dir, args: Args, typed=None):
    """The state of the last checkpoint of a run folder, and the run's own arguments with the flags typed
    with --resume applied. typed: the fields set on the command line (see typed_flags); None (a call from
    Python): the fields whose value differs from their default."""
    if not Path(run_dir).is_dir():
        raise UsageError(f"there is no run folder '{run_dir}': pass one of runs/<run_name>")
    try:
        pointer = json.loads((Path(run_dir) / "checkpoint.json").read_text())
        folder = Path(run_dir) / pointer["folder"]
        state = torch.load(folder / "state.pt", map_location="cpu", weights_only=True)
        saved = Args(**state["args"])
    except FileNotFoundError:
        if (Path(run_dir) / "checkpoint.pt").exists():  # one file: a checkpoint of dqn_atari.py or ddqn_atari.py
            script = torch.load(Path(run_dir) / "checkpoint.pt", map_location="cpu", weights_only=True, mmap=True)["script"]
            raise UsageError(f"'{run_dir}' was trained by {script}: resume it with that script")
        raise UsageError(f"no checkpoint in '{run_dir}': pass a run folder runs/<run_name> of a run with --checkpoint-frequency > 0")
    except Exception as e:
        raise UsageError(f"the checkpoint in '{run_dir}' is damaged ({type(e).__name__}); start a new run instead")
    if state["script"] not in (os.path.basename(__file__), "dqn_atari.py"):  # dqn_atari.py: written before this file was its own
        raise UsageError(f"'{run_dir}' was trained by {state['script']}: resume it with that script")
    # the run keeps its own arguments; flags typed with --resume may extend it or change what is logged
    # and saved, but not the game or the algorithm. A flag typed with its default value is still typed
    if typed is None:
        typed = {field.name for field in fields(Args) if getattr(args, field.name) != field.default}
    for field in fields(Args):
        given, saved_value = getattr(args, field.name), getattr(saved, field.name)
        if field.name not in typed or given == saved_value:
            continue
        if field.name in RESUME_OVERRIDES:
            setattr(saved, field.name, given)
        else:
            flag = "--" + field.name.replace("_", "-")
            why = "its replay memory holds one ring of transitions per game" if field.name == "num_envs" else "a resumed run keeps what it learns with"
            raise UsageError(f"'{run_dir}' was trained with {flag} {saved_value}: {why} (drop {flag} {given})")
    if saved.total_timesteps < state["global_step"]:
        raise UsageError(f"--total-timesteps {saved.total_timesteps} is below the step of the checkpoint in '{run_dir}' ({state['global_step']:,}): pass a larger one to go on")
    return state, folder, saved


# the replay memory of a checkpoint
REPLAY_ARRAYS = ("actions", "rewards", "dones", "first", "valid")


class CheckpointedReplayBuffer(ReplayBuffer):
    """The replay memory of a run, with what its checkpoints need: the frames are saved in chunks of
    CHUNK_FRAMES frames (one file each), and it knows which chunks changed since the last checkpoint.
    While a checkpoint is written in the background, add() waits before it writes into a chunk that is
    not on disk yet (the checkpoint writes those in the order in which the ring reaches them)."""

    CHUNK_FRAMES = 16_384  # 115 MB files: a checkpoint writes what changed, to within one file

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.set_chunk(max(1, self.CHUNK_FRAMES // self.num_envs))  # slots per chunk, of each game
        self.writer, self.write_error, self.unsaved = None, None, set()

    def set_chunk(self, chunk):
        self.chunk = chunk
        self.changed = np.zeros(-(-self.capacity // chunk), dtype=bool)  # since the last checkpoint

    def frame_chunk(self, c, filled):
        return self.frames[:, c * self.chunk : min((c + 1) * self.chunk, filled)]

    def chunks_written_next(self, store):
        slots = self.pos[store]
        return set((np.concatenate([slots, (slots + 1) % self.capacity]) // self.chunk).tolist())

    def add(self, obs, actions, rewards, next_obs, terminations, truncations):
        chunks = self.chunks_written_next(~self.ended)  # the games that store a transition
        while self.unsaved & chunks:  # the checkpoint being written still needs what is in these chunks
            self.writer.join(0.01)
        self.changed[list(chunks)] = True
        super().add(obs, actions, rewards, next_obs, terminations, truncations)

    def wait_for_checkpoint(self):
        if self.writer is not None:
            self.writer.join()
        if self.write_error is not None:
            error, self.write_error = self.write_error, None
            if isinstance(error, OSError):  # a full disk, most often: the last whole checkpoint is still there
                raise UsageError(f"cannot write a checkpoint ({error.strerror or error}): free some disk, or lower "
                                 "--buffer-size; the last whole checkpoint is kept") from None
            raise error


def chunk_file(c):
    return f"frames-{c:05d}.npy"


def save_replay_buffer(rb, folder, previous, replay, order, copies):
    """Raw uint8 frames (np.save) and the small arrays: written and read at disk speed. The chunks in
    `order` are written (from `copies`, else from the buffer), the others hard-linked to the previous
    checkpoint's files (the same bytes: no write; a copy on a filesystem without links)."""
    np.savez(folder / "replay.npz", **replay)
    filled = replay["actions"].shape[1]  # the loop may have added frames since: they are not part of it
    for c in order:
        np.save(folder / chunk_file(c), copies[c] if c in copies else rb.frame_chunk(c, filled).cpu().numpy())
        rb.unsaved.discard(c)
    for c in range(-(-filled // rb.chunk)):
        if c not in order:
            try:
                os.link(previous / chunk_file(c), folder / chunk_file(c))
            except OSError:
                shutil.copyfile(previous / chunk_file(c), folder / chunk_file(c))


def replay_frames(folder, replay, filled):
    """The frame files of a checkpoint as (first slot, end slot, memory map): read in chunks, never twice
    in memory. A checkpoint written before the frames were chunked has one frames.npy."""
    if "chunk" not in replay:
        return [(0, filled, np.load(folder / "frames.npy", mmap_mode="r"))]
    chunk = int(replay["chunk"])
    return [(start, min(start + chunk, filled), np.load(folder / chunk_file(start // chunk), mmap_mode="r")) for start in range(0, filled, chunk)]


def load_replay_buffer(rb, folder, check_only=False):
    """check_only: only check that the files fit this buffer (cheap, nothing is read into it)."""
    saved = np.load(folder / "replay.npz")
    filled = saved["actions"].shape[1]
    if saved["pos"].shape != (rb.num_envs,) or any(saved[name].shape != (rb.num_envs, filled) for name in REPLAY_ARRAYS) or filled > rb.capacity:
        raise ValueError(f"replay.npz holds arrays of shape {saved['actions'].shape}, expected ({rb.num_envs}, <= {rb.capacity})")
    parts = replay_frames(folder, saved, filled)
    for start, stop, frames in parts:
        if frames.shape != (rb.num_envs, stop - start, *rb.frames.shape[2:]):
            raise ValueError(f"frames of shape {frames.shape} for slots {start} to {stop}, expected {(rb.num_envs, stop - start, *rb.frames.shape[2:])}")
    if check_only:
        return
    for start, _, frames in parts:
        for offset in range(0, frames.shape[1], 50_000):
            chunk = np.array(frames[:, offset : offset + 50_000])
            rb.frames[:, start + offset : start + offset + chunk.shape[1]] = torch.from_numpy(chunk).to(rb.device)
    for name in REPLAY_ARRAYS:
        getattr(rb, name)[:, :filled] = torch.from_numpy(saved[name]).to(rb.device)
    rb.filled = filled
    if "chunk" in saved:  # the next checkpoint links its unchanged chunks to these files (after frames.npy: none)
        rb.set_chunk(int(saved["chunk"]))
    try:
        rb.rng.set_state(torch.from_numpy(saved["rng"]))
    except (RuntimeError, TypeError):  # saved on another kind of device: the draws go on from the seed
        pass
    # the episodes cut by the checkpoint end there: their last frame keeps its slot, the games restart.
    # A game's newest transition is the slot before its write position, or the one before that when
    # the episode had just ended (its last frame took a slot of its own)
    last = (saved["pos"] - 1) % rb.capacity
    cut = rb.valid[np.arange(rb.num_envs), last].cpu().numpy()
    rb.newest = torch.as_tensor(np.where(cut, last, (last - 1) % rb.capacity), device=rb.device)
    rb.pos = (saved["pos"] + cut) % rb.capacity


# HUGGING FACE HUB: share the agent, as the course does
def hub_repo_id(args: Args):
    repo_name = f"{file_name(args.env_id)}-{args.exp_name}-seed{args.seed}"
    return f"{args.hf_entity}/{repo_name}" if args.hf_entity else repo_name


def build_hub_folder(args: Args, run_name, model_path, eval_returns, video_folder):
    """runs/{run_name}/hub/: the weights, this script, the args, a video and a model card with the
    metadata that the course leaderboard reads (env id as dataset, mean_reward as "mean +/- std")."""
    from huggingface_hub import metadata_eval_result, metadata_save

    folder = model_path.parent / "hub"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(model_path, folder / model_path.name)
    shutil.copy(__file__, folder / os.path.basename(__file__))
    (folder / "args.json").write_text(json.dumps(asdict(args), indent=2))
    videos = sorted(Path(video_folder).glob("*.mp4"), key=os.path.getmtime)
    if videos:
        shutil.copy(videos[-1], folder / "replay.mp4")
    mean, std = float(np.mean(eval_returns)), float(np.std(eval_returns))
    script = os.path.basename(__file__)
    (folder / "README.md").write_text(f"""
# {args.exp_name} playing {args.env_id}

A Deep Q-Learning agent trained with `{script}` for {args.total_timesteps:,} environment steps (seed {args.seed}).
Evaluation: {len(eval_returns)} full game(s) at epsilon 0.05, {mean:.2f} +/- {std:.2f}.

Watch it play (`pip install -r requirements.txt` from the project that holds `{script}`):

```sh
python {script} --eval-only {hub_repo_id(args)}{eval_episodes_flag(args)} --capture-video
```

Arguments of the run: `args.json`. Train it again:

```sh
python {script} {" ".join(f"--{k.replace('_', '-')} {v}" for k, v in asdict(args).items() if k in ("env_id", "seed", "total_timesteps"))}
```
""")
    # the card's YAML header: what the leaderboard reads
    metadata_save(folder / "README.md", {
        "tags": [args.env_id, "deep-reinforcement-learning", "reinforcement-learning", "custom-implementation"],
        "library_name": "pytorch",
        **metadata_eval_result(
            model_pretty_name=args.exp_name, task_pretty_name="reinforcement-learning", task_id="reinforcement-learning",
            metrics_pretty_name="mean_reward", metrics_id="mean_reward", metrics_value=f"{mean:.2f} +/- {std:.2f}",
            dataset_pretty_name=args.env_id, dataset_id=args.env_id,
        ),
    })  # fmt: skip
    return folder


def upload_folder_to_hub(repo_id, folder):
    from huggingface_hub import HfApi

    api = HfApi()
    repo_url = api.create_repo(repo_id, exist_ok=True)
    api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=f"Upload {folder.parent.name}")
    return repo_url


def push_to_hub(args: Args, run_name, model_path, eval_returns, video_folder):
    """Upload the hub folder; without a login or a network the folder stays, with the command that uploads it."""
    from huggingface_hub import get_token

    folder = build_hub_folder(args, run_name, model_path, eval_returns, video_folder)
    repo_id = hub_repo_id(args)
    later = f"the files are in {folder}; upload them with: hf auth login && hf upload {repo_id} {folder} ."
    if get_token() is None:
        print(f"not logged in to the Hugging Face Hub: {later}")
        return
    try:
        print(f"uploaded to {upload_folder_to_hub(repo_id, folder)}")
    except Exception as e:
        print(f"upload to the Hugging Face Hub failed ({type(e).__name__}): {later}")


def typed_flags(argv):
    """The fields of Args whose flags appear in argv (`--seed 3`, `--seed=3`, `--no-cuda`): what the user asked
    for, even where it equals the default (a value equal to the default cannot tell it apart)."""
    names = {field.name for field in fields(Args)}
    typed = set()
    for token in argv:
        name = token[2:].split("=", 1)[0].replace("-", "_") if token.startswith("--") else ""
        if name.startswith("no_") and name[3:] in names:  # --no-cuda: the boolean flag cuda
            name = name[3:]
        if name in names:
            typed.add(name)
    return typed


def parse_args(argv):
    """Args and the fields typed in argv. An unknown option is one line (tyro's own message is a box)."""
    args, unknown = tyro.cli(Args, args=argv, return_unknown_args=True)
    if unknown:
        import difflib

        script, word = os.path.basename(__file__), unknown[0].split("=", 1)[0]
        if not word.startswith("-"):
            raise UsageError(f"unexpected argument {word}: see python {script} --help")
        names = [prefix + f.name.replace("_", "-") for f in fields(Args) for prefix in ("", "no-")[: 1 + (f.type is bool)]]
        close = difflib.get_close_matches(word.lstrip("-"), names, n=1, cutoff=0.7)  # 0.7: --n-trails is not --no-track
        raise UsageError(f"unknown option {word}: " + (f"did you mean --{close[0]}?" if close else f"see python {script} --help"))
    return args, typed_flags(argv)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args, typed = parse_args(argv)
        if args.eval_only:
            eval_only(args, typed)
        else:
            train(args, typed=typed if args.resume else None)
    except BaseException as e:  # any error ends the run: first the game processes (they ignore SIGTERM, and
        for game in multiprocessing.active_children():  # would wait for commands, and the exit for them)
            game.kill()
        if not isinstance(e, UsageError):
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
