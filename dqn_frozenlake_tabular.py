"""Tabular Q-learning on FrozenLake-v1, Taxi and CliffWalking: the Deep Q-Learning loop without the network.

Hugging Face Deep RL course, Unit 2 (Q-learning on FrozenLake-v1 and Taxi-v3), written in the CleanRL layout of
dqn_atari.py so the two read side by side.

    python dqn_frozenlake_tabular.py                              # FrozenLake 4x4, not slippery (course)
    python dqn_frozenlake_tabular.py --is-slippery                # the stochastic lake
    python dqn_frozenlake_tabular.py --env-id Taxi-v4 --save-model
    python dqn_frozenlake_tabular.py --eval-only runs/<run_name> --capture-video
    python dqn_frozenlake_tabular.py --capture-video --upload-model --hf-entity <your Hub name>   # as Unit 2 ends
    tensorboard --logdir runs

How it maps to Deep Q-Learning (course Unit 3, dqn_atari.py):
- `q_table[obs]` holds what `q_network(obs)` approximates: one Q-value per action. A table works because there are
  16 (FrozenLake 4x4) to 500 (Taxi) states; stacks of Atari frames have 256^(84x84x4), so DQN approximates the table.
- The TD target is the same line: `reward + gamma * max_a' Q(next_obs, a') * (1 - terminated)`. Q-learning moves
  one cell a fraction `learning_rate` towards it; DQN takes a gradient step on the MSE between the two.
- No replay buffer and no target network: updating one cell leaves every other state's values alone, whereas a
  gradient step on the network moves them all, the TD target included; those two fixes exist for that.
- epsilon decays exponentially per episode (course Unit 2) instead of linearly per step (CleanRL's linear_schedule).
"""

import contextlib
import dataclasses
import difflib
import importlib.util
import io
import itertools
import json
import math
import os
import pickle
import re
import shutil
import signal
import sys
import time
import warnings
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import gymnasium as gym
import numpy as np
import tyro
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment"""
    seed: int = 1
    """seed of the experiment (training; evaluation episode i uses seed + 10000 + i, after Taxi's 100 course seeds)"""
    track: bool = False
    """if toggled, this experiment will be tracked with Weights and Biases (offline if not logged in)"""
    wandb_project_name: str = "dqn-course"
    """the wandb's project name"""
    wandb_entity: Optional[str] = None
    """the entity (team) of wandb's project"""
    capture_video: bool = False
    """whether to capture videos of the evaluation episodes (check out `videos` folder)"""
    save_model: bool = False
    """whether to save the Q-table and args into the `runs/{run_name}` folder"""
    upload_model: bool = False
    """whether to upload the saved Q-table, its evaluation and video to the Hugging Face Hub"""
    hf_entity: str = ""
    """the user or org name of the model repository from the Hugging Face Hub"""
    eval_only: Optional[str] = None
    """evaluate a saved Q-table (a run folder, its q_table.npy, or a Hugging Face Hub repo id) without training: the run's game, seed and --eval-episodes unless typed"""

    # Algorithm specific arguments; None = the env's default from ENV_DEFAULTS (printed when training starts)
    env_id: str = "FrozenLake-v1"
    """the id of the environment (Discrete observations and actions)"""
    is_slippery: bool = False
    """FrozenLake/CliffWalking: a move slips sideways 2 times in 3 (off, as in the course)"""
    map_name: Optional[str] = "4x4"
    """FrozenLake-v1's map: 4x4 or 8x8 (other envs have no map and ignore the default)"""
    total_episodes: Optional[int] = None
    """number of training episodes (None: per env)"""
    learning_rate: Optional[float] = None
    """the learning rate, the step towards the TD target (None: per env)"""
    gamma: Optional[float] = None
    """the discount factor gamma (None: per env)"""
    max_steps: Optional[int] = None
    """steps per episode before truncation, set as the env's TimeLimit (None: per env; Taxi is evaluated at 99)"""
    start_e: float = 1.0
    """the starting epsilon for exploration"""
    end_e: float = 0.05
    """the ending epsilon for exploration"""
    decay_rate: Optional[float] = None
    """epsilon = end_e + (start_e - end_e) * exp(-decay_rate * episode) (None: per env)"""
    eval_episodes: int = 100
    """number of greedy evaluation episodes (Taxi: the course's 100 seeds first)"""


# Per-env defaults for the Args left at None: course Unit 2 values, except the rows marked "chosen here"
# (see README). max_steps 99 is the course's; gymnasium's own limits are 100 (4x4), 200 (8x8, Taxi).
HYPERPARAMETERS = ("total_episodes", "learning_rate", "gamma", "max_steps", "decay_rate")
ENV_DEFAULTS = {
    ("FrozenLake-v1", "4x4", False): (10_000, 0.7, 0.95, 99, 0.0005),
    ("FrozenLake-v1", "4x4", True): (10_000, 0.1, 0.99, 100, 0.0005),  # chosen here
    ("FrozenLake-v1", "8x8", False): (10_000, 0.7, 0.95, 200, 0.0005),  # course values, 8x8 time limit
    ("FrozenLake-v1", "8x8", True): (30_000, 0.1, 0.999, 200, 0.0003),  # chosen here
    ("Taxi-v4", None, False): (25_000, 0.7, 0.95, 99, 0.005),
    ("CliffWalking-v1", None, False): (500, 0.7, 0.95, 100, 0.01),  # chosen here
}
GENERIC_DEFAULTS = (10_000, 0.1, 0.99, None, 0.0005)  # any other Discrete env; max_steps: its TimeLimit, else 200


def make_env(args: Args, capture_video: bool = False, run_name: str = "") -> gym.Env:
    kwargs = {"max_episode_steps": args.max_steps}
    # gymnasium's FrozenLake is slippery by default, the course's is not: always pass the flag to it
    if args.env_id.startswith("FrozenLake") or args.is_slippery:
        kwargs["is_slippery"] = args.is_slippery
    if args.map_name is not None:
        kwargs["map_name"] = args.map_name
    if capture_video:
        # gymnasium draws toy-text envs with pygame, which requirements.txt does not pin: draw the text render instead
        if importlib.util.find_spec("pygame") is None:
            env = AnsiToRgb(gym.make(args.env_id, render_mode="ansi", **kwargs))
        else:
            env = gym.make(args.env_id, render_mode="rgb_array", **kwargs)
        env = gym.wrappers.RecordVideo(env, f"videos/{run_name}")
    else:
        env = gym.make(args.env_id, **kwargs)
    env = gym.wrappers.RecordEpisodeStatistics(env)
    env.action_space.seed(args.seed)
    return env


# ALGO LOGIC: the Q-table
def initialize_q_table(env: gym.Env) -> np.ndarray:
    return np.zeros((env.observation_space.n, env.action_space.n))


def greedy_action(q_table: np.ndarray, obs: int, rng: np.random.Generator) -> int:
    """argmax_a Q(obs, a), ties broken at random."""
    # The course's np.argmax returns the FIRST maximum. A zero-initialised table is all ties, so a greedy agent
    # would always pick action 0 (LEFT on FrozenLake) and walk into the wall until an epsilon step rescues it.
    row = q_table[obs]
    ties = np.flatnonzero(row == row.max())
    return int(ties[0]) if len(ties) == 1 else int(rng.choice(ties))


def exponential_schedule(start_e: float, end_e: float, decay_rate: float, episode: int) -> float:
    return end_e + (start_e - end_e) * np.exp(-decay_rate * episode)


def epsilon_greedy_action(q_table, obs, epsilon, env, rng) -> int:
    if rng.random() < epsilon:
        return int(env.action_space.sample())
    return greedy_action(q_table, obs, rng)


def q_learning_update(q_table, obs, action, reward, next_obs, terminated, learning_rate, gamma) -> float:
    """One Q-learning step on q_table, in place; returns the TD target."""
    # Bellman update: Q(s,a) := Q(s,a) + lr * [R(s,a) + gamma * max_a' Q(s',a') - Q(s,a)]
    # Mask on terminated only: a hole or the goal has no future, but a time-limit cut (truncated, our max_steps
    # included) does; zeroing it would teach the agent that the state where time ran out is worth nothing.
    td_target = reward + gamma * np.max(q_table[next_obs]) * (1 - terminated)
    q_table[obs, action] += learning_rate * (td_target - q_table[obs, action])
    return td_target


def train(args: Args) -> tuple[np.ndarray, list[float]]:
    """Q-learning, then a greedy evaluation (and --save-model); returns (q_table, evaluation returns)."""
    args = resolve_args(args)  # bad flags stop here; the hyperparameters left at None get the env's defaults
    run = Run(args)  # the run's name, TensorBoard (and wandb), the evaluation env: the plumbing, below

    # TRY NOT TO MODIFY: seeding
    rng = np.random.default_rng(args.seed)
    env = make_env(args)
    q_table = initialize_q_table(env)

    global_step, episode, episodes = 0, 0, None
    obs, _ = env.reset(seed=args.seed)
    # Ctrl-C, or a SIGTERM (see the end of the file), stops training; the try opens before the line that says
    # training starts, so that a stop sent on seeing it is caught
    try:
        episodes = run.episodes(q_table)  # prints what trains; a progress bar on a terminal
        for episode in episodes:
            epsilon = exponential_schedule(args.start_e, args.end_e, args.decay_rate, episode)
            while True:
                # choose A_t with the epsilon-greedy policy, take it, observe R_t+1 and S_t+1, update Q(S_t, A_t)
                action = epsilon_greedy_action(q_table, obs, epsilon, env, rng)
                next_obs, reward, terminated, truncated, info = env.step(action)
                q_learning_update(q_table, obs, action, reward, next_obs, terminated, args.learning_rate, args.gamma)
                global_step += 1
                # TRY NOT TO MODIFY: CRUCIAL step easy to overlook
                obs = next_obs
                if terminated or truncated:
                    break
            run.log_episode(episode, epsilon, info, global_step)
            obs, _ = env.reset()
    except KeyboardInterrupt:
        if episodes is not None:
            episodes.close()
        print(f"\ninterrupted after {episode} episodes: evaluating (and with --save-model saving) the table so far")
    env.close()
    return q_table, run.end(q_table, global_step)  # the greedy evaluation, its report, the picture, saving


# EVALUATION: Taxi is scored as the course scores every classmate's agent (Unit 2's `evaluate_agent`): from the
# same 100 starting positions (its `eval_seed` list, "DO NOT MODIFY"), at most 99 steps, the first maximum
# (np.argmax), score = mean - std; so the leaderboard compares like with like. Other envs (the course passes no
# seeds; the non-slippery lake is deterministic anyway): episode i starts from seed + 10000 + i, unseen in training.
COURSE_EVAL_ENVS = ("Taxi-v3", "Taxi-v4")
COURSE_EVAL_MAX_STEPS = 99
COURSE_TAXI_EVAL_SEEDS = [
    16, 54, 165, 177, 191, 191, 120, 80, 149, 178, 48, 38, 6, 125, 174, 73, 50, 172, 100, 148, 146, 6, 25, 40, 68,
    148, 49, 167, 9, 97, 164, 176, 61, 7, 54, 55, 161, 131, 184, 51, 170, 12, 120, 113, 95, 126, 51, 98, 36, 135,
    54, 82, 45, 95, 89, 59, 95, 124, 9, 113, 58, 85, 51, 134, 121, 169, 105, 21, 30, 11, 50, 65, 12, 43, 82,
    145, 152, 97, 106, 55, 31, 85, 38, 112, 102, 168, 123, 97, 21, 83, 158, 26, 80, 63, 5, 81, 32, 11, 28, 148,
]  # fmt: skip


def eval_seeds(env_id: str, eval_episodes: int, seed: int) -> list[int]:
    """The reset seed of each evaluation episode: Taxi's course seeds first, then seed + 10000 + i for episode i."""
    course_seeds = COURSE_TAXI_EVAL_SEEDS if env_id in COURSE_EVAL_ENVS else []
    own_seeds = [seed + 10_000 + i for i in range(len(course_seeds), eval_episodes)]
    return (course_seeds + own_seeds)[:eval_episodes]


def eval_max_steps(args: Args) -> int:
    # the course evaluates Taxi at 99 steps whatever the training used (its own max_steps, 99, is the default here)
    return COURSE_EVAL_MAX_STEPS if args.env_id in COURSE_EVAL_ENVS else args.max_steps


def make_eval_env(args: Args, run_name: str = "") -> gym.Env:
    with warnings.catch_warnings():
        # videos/<run_name>/ was created just before, for this run alone (see new_folder): RecordVideo's warning
        # that it would overwrite the videos in an existing folder is wrong here
        warnings.filterwarnings("ignore", message=".*Overwriting existing videos")
        return make_env(dataclasses.replace(args, max_steps=eval_max_steps(args)), args.capture_video, run_name)


def evaluate(q_table: np.ndarray, env: gym.Env, eval_episodes: int, seed: int) -> list[float]:
    """Greedy episodes (no exploration), each reset with its seed from eval_seeds, so scores are comparable."""
    course = env.spec.id in COURSE_EVAL_ENVS
    rng = np.random.default_rng(seed)  # only for breaking ties
    episodic_returns = []
    for episode_seed in eval_seeds(env.spec.id, eval_episodes, seed):
        obs, _ = env.reset(seed=episode_seed)
        while True:
            # the course's greedy_policy is np.argmax, which takes the first maximum: its Taxi score depends on it
            action = int(np.argmax(q_table[obs])) if course else greedy_action(q_table, obs, rng)
            obs, _, terminated, truncated, info = env.step(action)
            if terminated or truncated:
                episodic_returns.append(float(info["episode"]["r"]))
                break
    return episodic_returns


# ================================================================================================================
# PLUMBING. Everything above is Q-learning as the course teaches it; everything below is what a run needs around
# it: argument checks, videos without pygame, wandb, TensorBoard and progress, saving, --eval-only, the Hub.
# ================================================================================================================
class UsageError(Exception):
    """Bad flags or an environment a Q-table cannot handle; main() prints it as one line and exits 2."""


def parse_args(argv: list[str]) -> tuple[Args, set[str]]:
    """tyro.cli(Args), a bad command line as one UsageError; also the fields typed on it: --eval-only must tell
    a typed `--seed 1` from the default 1, which the parsed Args cannot."""
    flags = {}  # every spelling tyro accepts -> the field: --map-name, --map_name, --no-is-slippery
    for field in dataclasses.fields(Args):
        flags["--" + field.name.replace("_", "-")] = field.name
        if field.type is bool:
            flags["--no-" + field.name.replace("_", "-")] = field.name
    typed = set()
    for token in argv:
        if not token.startswith("--") or token == "--help":
            continue
        flag = token.split("=", 1)[0].replace("_", "-")
        if flag not in flags:
            close = difflib.get_close_matches(flag, [f for f in flags if not f.startswith("--no-")], n=2)
            raise UsageError(f"unknown option {flag}: " + (f"did you mean {' or '.join(close)}?" if close else "see --help"))
        typed.add(flags[flag])
    tyro_says = io.StringIO()
    try:
        with contextlib.redirect_stderr(tyro_says):
            args = tyro.cli(Args, args=argv)
    except SystemExit as e:
        if not e.code:  # --help, printed on stdout
            raise
        # tyro draws a box of ~10 lines; its first paragraph is the error ("Error parsing --seed: invalid literal ...")
        lines = [line.strip("│╭╰─ ") for line in tyro_says.getvalue().splitlines()[1:]]
        message = " ".join(itertools.takewhile(bool, lines))
        raise UsageError(f"{message or 'bad command line'} (see --help)") from None
    return args, typed


def check_args(args: Args) -> None:
    """Each number in its range, before an env is built or a file written; None = the env's default, valid."""
    given = {k: getattr(args, k) for k in HYPERPARAMETERS if getattr(args, k) is not None}
    problems = [
        (args.seed < 0, f"--seed must be 0 or more (got {args.seed}): gymnasium seeds with non-negative integers"),
        (given.get("total_episodes", 0) < 0, f"--total-episodes cannot be negative (got {args.total_episodes}; 0 evaluates the untrained table)"),
        (
            not 0 < given.get("learning_rate", 1) <= 1,
            f"--learning-rate {args.learning_rate} is out of range: need 0 < --learning-rate <= 1 (the fraction of "
            "the way to the TD target; 1 replaces Q(s, a) by it)",
        ),
        (not 0 <= given.get("gamma", 1) <= 1, f"--gamma {args.gamma} is out of range: need 0 <= --gamma <= 1"),
        (given.get("max_steps", 1) < 1, f"--max-steps must be at least 1 (got {args.max_steps}): the episode's time limit"),
        (not 0 <= args.start_e <= 1, f"--start-e {args.start_e} is out of range: need 0 <= --start-e <= 1"),
        (not 0 <= args.end_e <= 1, f"--end-e {args.end_e} is out of range: need 0 <= --end-e <= 1"),
        (
            args.end_e > args.start_e,
            f"--end-e {args.end_e} is above --start-e {args.start_e}: epsilon would rise during training "
            "(need 0 <= --end-e <= --start-e <= 1)",
        ),
        # a negative rate makes exp(-decay_rate * episode) grow until it overflows: epsilon = inf
        (
            not 0 <= given.get("decay_rate", 0) < math.inf,
            f"--decay-rate {args.decay_rate} is out of range: need a finite --decay-rate >= 0 (0 keeps epsilon at --start-e)",
        ),
        (args.eval_episodes < 1, f"--eval-episodes must be at least 1 (got {args.eval_episodes}): every run ends with an evaluation"),
    ]
    for bad, message in problems:  # NaN fails every range test above, so it is refused too
        if bad:
            raise UsageError(message)


def canonical_env_id(env_id: str) -> str:
    # the course's id; gymnasium 1.3 renamed it Taxi-v4 when it fixed the is_rainy dynamics (#1561)
    return "Taxi-v4" if env_id == "Taxi-v3" else env_id


def resolve_args(args: Args) -> Args:
    """Checks the env and flags, fills the per-env defaults; raises UsageError on anything a Q-table cannot run."""
    check_args(args)
    env_id = canonical_env_id(args.env_id)
    if env_id != args.env_id:
        print(f"note: {args.env_id} is called {env_id} in gymnasium >= 1.3; using {env_id}")
    if env_id not in gym.registry and importlib.util.find_spec("ale_py") is not None:
        import ale_py  # registers the Atari ids, so that one gets pointed to dqn_atari.py rather than "unknown"

        gym.register_envs(ale_py)
    if env_id in gym.registry and str(gym.registry[env_id].entry_point).startswith("ale_py"):
        raise UsageError(f"{env_id} is an Atari game, its states are screen images, too many for a table: use dqn_atari.py")
    try:
        gym.spec(env_id)
    except gym.error.Error as e:  # gymnasium's own hint: the versions that the id's name has, or the closest name
        raise UsageError(f"unknown --env-id {env_id!r}: {e} Try FrozenLake-v1, Taxi-v4 or CliffWalking-v1.") from None
    # the 4x4 default is FrozenLake-v1's map; for an env without a map it means none (None in args.json)
    map_name = None if args.map_name == Args.map_name and env_id != "FrozenLake-v1" else args.map_name
    if map_name is not None and not (env_id.startswith("FrozenLake") and map_name in ("4x4", "8x8")):
        raise UsageError(f"--map-name takes 4x4 or 8x8, for FrozenLake only (got {map_name!r} for {env_id})")
    if args.capture_video:
        try:
            import moviepy  # noqa: F401  (RecordVideo encodes the mp4 with it)
        except ImportError:
            raise UsageError("--capture-video needs moviepy to write mp4 files: pip install moviepy") from None
    args = dataclasses.replace(args, env_id=env_id, map_name=map_name)
    try:
        env = make_env(args)
    except TypeError:  # an unexpected keyword argument
        raise UsageError(f"{env_id} has no is_slippery option (FrozenLake and CliffWalking have)") from None
    spaces = env.observation_space, env.action_space
    env.close()
    if not all(isinstance(space, gym.spaces.Discrete) for space in spaces):
        obs_kind, action_kind = (type(space).__name__ for space in spaces)
        raise UsageError(
            f"{env_id} has {obs_kind} observations and {action_kind} actions, a Q-table needs Discrete for both: "
            "pick a toy-text env (FrozenLake-v1, Taxi-v4, CliffWalking-v1); dqn_atari.py handles image observations"
        )

    map_name = args.map_name or ("4x4" if env_id == "FrozenLake-v1" else None)
    defaults = dict(zip(HYPERPARAMETERS, ENV_DEFAULTS.get((env_id, map_name, args.is_slippery), GENERIC_DEFAULTS)))
    defaults["max_steps"] = defaults["max_steps"] or gym.spec(env_id).max_episode_steps or 200
    return dataclasses.replace(args, **{k: v for k, v in defaults.items() if getattr(args, k) is None})


class AnsiToRgb(gym.Wrapper):
    """Draws the env's text render as an image (one cell per character, ANSI colours kept), so RecordVideo works
    without pygame. The "(Down)" line naming the last action is dropped: every frame must have the same size."""

    render_mode = "rgb_array"
    CELL_H, CELL_W = 36, 24
    PALETTE = [(0, 0, 0), (220, 50, 50), (40, 170, 40), (230, 190, 0), (50, 80, 230), (190, 50, 190), (0, 170, 190)]

    def render(self) -> np.ndarray:
        import cv2

        lines = [line for line in self.env.render().splitlines() if line.strip() and not line.strip().startswith("(")]
        parsed = [self._parse(line) for line in lines]
        image = np.full((len(lines) * self.CELL_H, max(map(len, parsed)) * self.CELL_W, 3), 255, dtype=np.uint8)
        for row, cells in enumerate(parsed):
            for col, (char, fg, bg) in enumerate(cells):
                y, x = row * self.CELL_H, col * self.CELL_W
                if bg is not None:
                    image[y : y + self.CELL_H, x : x + self.CELL_W] = bg
                cv2.putText(image, char, (x + 3, y + self.CELL_H - 9), cv2.FONT_HERSHEY_SIMPLEX, 0.9, fg, 2)
        return image

    def _parse(self, line: str) -> list:
        """[(char, foreground, background or None)] from a line with gymnasium's colorize escapes."""
        cells, fg, bg = [], self.PALETTE[0], None
        for i, part in enumerate(re.split(r"\x1b\[([\d;]*)m", line)):
            if i % 2 == 0:
                cells += [(char, fg, bg) for char in part]
                continue
            fg, bg = self.PALETTE[0], None  # each escape restates the whole style; "0" resets it
            for code in (int(c) for c in part.split(";") if c):
                if 30 <= code <= 36:
                    fg = self.PALETTE[code - 30]
                elif 40 <= code <= 46:
                    bg = self.PALETTE[code - 40]
        return cells


def init_wandb(args: Args, run_name: str):
    """wandb.init that never prompts: with no API key found, or if init fails, the run is logged offline."""
    import wandb

    init_kwargs = dict(
        project=args.wandb_project_name,
        entity=args.wandb_entity,
        sync_tensorboard=True,
        config=vars(args),
        name=run_name,
        save_code=True,
    )
    mode = None if wandb.login(prompt=False, verify=False) else "offline"
    try:
        run = wandb.init(mode=mode, settings=wandb.Settings(init_timeout=30), **init_kwargs)
    except Exception as e:  # bad key, no network, ...: keep the experiment, lose only the live dashboard
        print(f"wandb.init failed ({type(e).__name__}: {e}); logging offline")
        run = wandb.init(mode="offline", **init_kwargs)
    if run.offline:
        print(f"wandb: logging offline; upload later with: wandb sync {run.sync_dir}")
    return run


class Run:
    """A training run's plumbing, in the order train() calls it: set-up, each episode's logs, the end."""

    def __init__(self, args: Args):
        self.args = args
        # the time tells runs apart only to the second: a run of the same env, --exp-name and --seed started in
        # the same second gets <run_name>-2; a folder that cannot be created stops us before anything is learned
        self.name = new_folder("runs", f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}")
        if args.capture_video:
            try:
                create_folder(Path(f"videos/{self.name}"))
            except UsageError:
                os.removedirs(f"runs/{self.name}")  # still empty: leave nothing behind (runs/ too, if it was new)
                raise
        self.eval_env = make_eval_env(args, self.name)
        self.wandb_run = init_wandb(args, self.name) if args.track else None
        self.writer = SummaryWriter(f"runs/{self.name}")
        self.writer.add_text(
            "hyperparameters",
            "|param|value|\n|-|-|\n%s" % ("\n".join([f"|{key}|{value}|" for key, value in vars(args).items()])),
        )
        self.recent_returns = deque(maxlen=100)
        self.show_bar = sys.stdout.isatty()  # a bar for people, a plain line every 10% for logs

    def episodes(self, q_table: np.ndarray) -> tqdm:
        args = self.args
        hyperparameters = ", ".join(f"{k}={getattr(args, k)}" for k in HYPERPARAMETERS)
        print(f"training {args.env_id} ({q_table.shape[0]} states x {q_table.shape[1]} actions): {hyperparameters}")
        self.bar = tqdm(range(args.total_episodes), disable=not self.show_bar, unit="episode")
        return self.bar

    def log_episode(self, episode: int, epsilon: float, info: dict, global_step: int) -> None:
        recent_returns, writer = self.recent_returns, self.writer
        # info["episode"] comes from RecordEpisodeStatistics, as in the Atari scripts
        recent_returns.append(float(info["episode"]["r"]))
        writer.add_scalar("charts/episodic_return", recent_returns[-1], global_step)
        writer.add_scalar("charts/episodic_length", int(info["episode"]["l"]), global_step)
        writer.add_scalar("charts/epsilon", epsilon, global_step)
        if self.show_bar and episode % 100 == 0:
            self.bar.set_postfix(mean_return=f"{np.mean(recent_returns):.2f}", epsilon=f"{epsilon:.3f}")
        elif not self.show_bar and (episode + 1) % max(1, self.args.total_episodes // 10) == 0:
            mean_return = np.mean(recent_returns)
            print(f"episode={episode + 1}, mean_return(last 100)={mean_return:.2f}, epsilon={epsilon:.3f}")

    def end(self, q_table: np.ndarray, global_step: int) -> list[float]:
        args, writer, run_dir = self.args, self.writer, Path(f"runs/{self.name}")
        try:
            eval_returns = evaluate(q_table, self.eval_env, args.eval_episodes, args.seed)
            for idx, episodic_return in enumerate(eval_returns):
                writer.add_scalar("eval/episodic_return", episodic_return, idx)
            report(q_table, eval_returns, self.eval_env)
            # the table on the map, once at the end (a drawing costs 0.15-0.3 s: ten during training would slow
            # the default run by half); Taxi has no map and gets none
            figure = draw_q_table(q_table, self.eval_env)
            if figure is not None:
                writer.add_image("charts/q_table", figure_to_rgb(figure), global_step, dataformats="HWC")
                figure.savefig(run_dir / "q_table.png")
            if args.save_model or args.upload_model:
                save_model(q_table, args, self.name)
        finally:
            self.eval_env.close()  # RecordVideo writes the last video on close
            writer.close()
            if self.wandb_run is not None:
                self.wandb_run.finish()
        if args.upload_model:  # after the close: the video is complete
            push_to_hub(args, self.name, q_table, eval_returns)
        if args.capture_video:
            print(f"the evaluation videos are in videos/{self.name}/")
        if (run_dir / "q_table.npy").is_file():
            # the saved args hold the seed and --eval-episodes: this command prints the score above again
            print(f"evaluate it with: python {os.path.basename(__file__)} --eval-only {run_dir}")
        print(f"run folder {run_dir}/: {describe_run_folder(run_dir)}")
        return eval_returns


def create_folder(folder: Path, exist_ok: bool = True) -> bool:
    """mkdir -p; False if exist_ok is False and the folder is there. A folder that cannot be created (a read-only
    or someone else's folder, a file in the way) is one UsageError naming it and the fix, not a traceback."""
    try:
        folder.mkdir(parents=True, exist_ok=exist_ok)
        return True
    except OSError as e:
        if isinstance(e, FileExistsError) and not exist_ok and os.path.lexists(folder):
            return False
        in_the_way = next((p for p in reversed([folder, *folder.parents]) if p.exists() and not p.is_dir()), None)
        fix = f"{in_the_way} is a file: move it away" if in_the_way else "start the script from a folder where you can write"
        raise UsageError(f"cannot create {folder}/ ({e.strerror}): {fix}") from None


def new_folder(parent: str, name: str) -> str:
    """Creates parent/name/, or name-2, name-3, ... if it is taken; returns the name it got."""
    # mkdir without exist_ok is atomic: of two runs that want one folder at the same instant (an exists() check,
    # then a mkdir, would let both in), one gets it and the other the next name; neither writes into the other's
    names = itertools.chain([name], (f"{name}-{i}" for i in itertools.count(2)))
    return next(n for n in names if create_folder(Path(parent, n), exist_ok=False))


def describe_run_folder(run_dir: Path) -> str:
    names = {path.name for path in run_dir.iterdir()}
    contents = ["TensorBoard logs"] if any(name.startswith("events.out.tfevents") for name in names) else []
    contents += [name for name in ("q_table.png", "q_table.npy", "args.json") if name in names]
    contents += ["hub/ (the Hugging Face Hub folder)"] if "hub" in names else []
    return ", ".join(contents)


def report(q_table: np.ndarray, eval_returns: list[float], env: gym.Env) -> None:
    """Prints the evaluation score, and for grid worlds the Q-table and the greedy policy on the map."""
    mean, std = np.mean(eval_returns), np.std(eval_returns)
    protocol = " (the course's Taxi seeds first)" if env.spec.id in COURSE_EVAL_ENVS else ""
    print(f"eval over {len(eval_returns)} episodes{protocol}: mean_reward={mean:.3f} +/- {std:.3f}, score={mean - std:.3f} (mean - std)")
    world = grid_map(env)
    if world is None:
        return
    grid, arrows, ends = world
    print(f"Q-table (rows: states, columns: actions {' '.join(arrows)}):")
    for state, row in enumerate(q_table):
        print(f"{state:4d} " + " ".join(f"{q:8.3f}" for q in row))
    print("greedy policy (· = all actions tie, e.g. a state never reached):")
    for cells, rows in zip(grid, q_table.reshape(*grid.shape, -1)):
        print(" ".join(c if c in ends + "S" else "·" if q.min() == q.max() else arrows[q.argmax()] for c, q in zip(cells, rows)))


def grid_map(env: gym.Env) -> Optional[tuple[np.ndarray, str, str]]:
    """A grid world's map (one letter per state, row by row), its actions as arrows, the letters where an episode
    ends (holes, cliff, goal); None for an env without a map, such as Taxi."""
    env_id, unwrapped = env.spec.id, env.unwrapped
    if env_id.startswith("FrozenLake"):
        return unwrapped.desc.astype(str), "←↓→↑", "HG"
    if env_id.startswith("CliffWalking"):
        grid = np.full(unwrapped.shape, ".")
        # stepping on the cliff sends the agent back to S (-100): no episode ends there, but no agent stays there
        grid[-1, 0], grid[-1, 1:-1], grid[-1, -1] = "S", "C", "G"
        return grid, "↑→↓←", "CG"
    return None


ARROW_MOVES = {"←": (-1, 0), "↓": (0, 1), "→": (1, 0), "↑": (0, -1)}  # (column, row) steps; rows count downwards
END_COLOURS = {"H": "#2e2e2e", "C": "#8b5a2b", "G": "#e8a800"}  # hole, cliff (rock), goal (gold)


def draw_q_table(q_table: np.ndarray, env: gym.Env):
    """The Q-table on the map of a grid world, as a matplotlib Figure (None for Taxi): each state's value
    max_a Q(s, a) as a colour and number, its greedy actions as arrows (every action tied for the maximum; none
    where all tie, e.g. a state never reached), the map's letter in its corner, holes, cliff and goal in their
    own colours (nothing is learned there: their rows stay 0)."""
    world = grid_map(env)
    if world is None:
        return None
    # imported here: importing the script stays cheap; a bare Figure draws with Agg, never a window or pyplot state
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    grid, arrows, ends = world
    rows, cols = grid.shape
    values = np.ma.masked_array(q_table.max(axis=1).reshape(rows, cols), mask=np.isin(grid, list(ends)))
    figure = Figure(figsize=(1.5 + 0.75 * cols, 0.9 + 0.75 * rows), layout="constrained")
    ax = figure.add_subplot()
    image = ax.imshow(values, cmap="Blues")
    figure.colorbar(image, ax=ax, shrink=0.9, label=r"value $\max_a Q(s, a)$; arrows: $\arg\max_a Q(s, a)$")
    ax.set_title(f"{env.spec.id} {rows}x{cols}" + (", slippery" if env.spec.kwargs.get("is_slippery") else ""), fontsize=10)
    x, y, dx, dy = [], [], [], []
    for state, row in enumerate(q_table):
        r, c = divmod(state, cols)
        letter = grid[r, c]
        if letter in ends:
            ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, color=END_COLOURS[letter]))
            ax.text(c, r, letter, ha="center", va="center", fontsize=12, fontweight="bold", color="white")
            continue
        if row.min() < row.max():
            for action in np.flatnonzero(row == row.max()):
                step = ARROW_MOVES[arrows[action]]
                x, y, dx, dy = x + [c], y + [r], dx + [0.32 * step[0]], dy + [0.32 * step[1]]
        ink = "white" if image.norm(values[r, c]) > 0.6 else "black"  # readable on the dark blues too
        ax.text(c + 0.45, r - 0.45, f"{values[r, c]:.2f}", ha="right", va="top", fontsize=7, color=ink)
        if letter != ".":
            ax.text(c - 0.45, r - 0.45, letter, ha="left", va="top", fontsize=8, fontweight="bold", color=ink)
    # angles and scale in data units: an arrow goes 0.32 of a cell from the centre, down the screen for DOWN
    ax.quiver(x, y, dx, dy, angles="xy", scale_units="xy", scale=1, pivot="tail", color="white", edgecolor="black",
              linewidth=0.7, width=0.035 / cols, headwidth=4, headlength=4, headaxislength=3.5)
    ax.set_xticks(np.arange(cols + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(rows + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", linewidth=1)
    ax.tick_params(which="both", length=0, labelbottom=False, labelleft=False)
    return figure


def figure_to_rgb(figure) -> np.ndarray:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3]


def save_model(q_table: np.ndarray, args: Args, run_name: str) -> None:
    # plain .npy + .json, no pickle: loading a file cannot run code
    np.save(f"runs/{run_name}/q_table.npy", q_table)
    Path(f"runs/{run_name}/args.json").write_text(json.dumps(vars(args), indent=2))


def load_saved(path_or_repo: str) -> tuple[np.ndarray, dict, str]:
    """The Q-table and saved args of a run folder, a q_table.npy, or a Hub repo id (user/name), and the run's name
    (its folder's, or the repo's)."""
    path = Path(path_or_repo)
    q_path = path / "q_table.npy" if path.is_dir() else path
    if q_path.is_file():
        saved = json.loads((q_path.parent / "args.json").read_text()) if (q_path.parent / "args.json").is_file() else {}
        return np.load(q_path), saved, q_path.resolve().parent.name
    if path.exists() or path_or_repo.count("/") != 1:
        raise UsageError(f"--eval-only {path_or_repo}: no Q-table there (expected a run folder, q_table.npy or a Hub repo id)")
    return *download_from_hub(path_or_repo), path_or_repo.split("/")[1]


# --eval-only plays the saved run's game, and unless told otherwise its evaluation: the same seed, episodes and
# time limit, so that it prints the score the run printed
SAVED_GAME = ("env_id", "map_name", "is_slippery")
SAVED_EVALUATION = ("seed", "eval_episodes", "max_steps")


def evaluate_saved(args: Args, typed: Optional[set[str]] = None) -> list[float]:
    """--eval-only. typed: the fields set on the command line (None, a call from Python: those that differ from
    their default). A typed --seed, --eval-episodes or --max-steps changes the evaluation; a typed flag of another
    game is refused (the table holds values of the saved game's states); a training flag is ignored, with a note."""
    if typed is None:
        typed = {field.name for field in dataclasses.fields(Args) if getattr(args, field.name) != field.default}
    q_table, saved, name = load_saved(args.eval_only)
    game = dataclasses.replace(Args(), **{k: saved[k] for k in SAVED_GAME if k in saved})
    for field in SAVED_GAME:
        given = getattr(args, field)
        same = canonical_env_id(given) == canonical_env_id(saved[field]) if field == "env_id" else given == saved.get(field)
        if field in typed and field in saved and not same:
            raise UsageError(
                f"{flag_text(field, given)} contradicts the saved run: its table was learned on {game_text(game)}, "
                f"the game --eval-only plays (drop {flag_text(field, given).split()[0]})"
            )
    ignored = sorted(typed - set(SAVED_GAME + SAVED_EVALUATION) - {"eval_only", "capture_video"})
    if ignored:
        print(f"note: --eval-only trains and saves nothing: {', '.join(flag_text(f, getattr(args, f)).split()[0] for f in ignored)} ignored")
    from_saved = {k: saved[k] for k in SAVED_GAME + SAVED_EVALUATION if k in saved and k not in typed}
    args = resolve_args(dataclasses.replace(args, **{k: getattr(Args(), k) for k in ignored}, **from_saved))
    env = make_env(args)  # no video yet: a table that does not fit must leave nothing written
    spaces = (env.observation_space.n, env.action_space.n)
    env.close()
    if q_table.shape != spaces:
        raise UsageError(
            f"the Q-table of {args.eval_only} has {q_table.shape[0]} states x {q_table.shape[1]} actions, "
            f"{game_text(args)} has {spaces[0]} x {spaces[1]}"
        )
    print(f"evaluating {args.eval_only} on {game_text(args)}: seed {args.seed}, {args.eval_episodes} episodes")
    # videos/<run_name>-eval/, as the Atari scripts name their evaluation videos; the next evaluations get
    # -eval-2, -eval-3, ... (RecordVideo would overwrite)
    video_name = new_folder("videos", f"{name}-eval") if args.capture_video else ""
    env = make_eval_env(args, video_name)
    try:
        eval_returns = evaluate(q_table, env, args.eval_episodes, args.seed)
        report(q_table, eval_returns, env)
    finally:
        env.close()
    if args.capture_video:
        print(f"the videos are in videos/{video_name}/")
    return eval_returns


def game_text(args: Args) -> str:
    """FrozenLake-v1 (8x8, slippery), Taxi-v4."""
    details = [args.map_name] if args.map_name else []
    if args.env_id.startswith("FrozenLake") or args.is_slippery:
        details.append("slippery" if args.is_slippery else "not slippery")
    return args.env_id + (f" ({', '.join(details)})" if details else "")


def flag_text(field: str, value) -> str:
    """How a field is typed: --seed 2, --is-slippery, --no-is-slippery."""
    flag = "--" + field.replace("_", "-")
    if isinstance(value, bool):
        return flag if value else f"--no-{flag[2:]}"
    return f"{flag} {value}"


# HUGGING FACE HUB: share the Q-table as Unit 2 does
def env_tag(args: Args) -> str:
    """The env's name on the course leaderboard: for FrozenLake the map and slipperiness are part of it."""
    if args.env_id == "FrozenLake-v1":
        return f"FrozenLake-v1-{args.map_name or '4x4'}" + ("" if args.is_slippery else "-no_slippery")
    return args.env_id


def hub_repo_id(args: Args) -> str:
    repo_name = f"{env_tag(args)}-{args.exp_name}-seed{args.seed}"
    return f"{args.hf_entity}/{repo_name}" if args.hf_entity else repo_name


def build_hub_folder(args: Args, run_name: str, q_table: np.ndarray, eval_returns: list[float]) -> Path:
    """runs/{run_name}/hub/: the Q-table (ours and the course notebook's q-learning.pkl), this script, the args,
    the evaluation video and a model card with the metadata that the course leaderboard reads."""
    from huggingface_hub import metadata_eval_result, metadata_save

    run_dir = Path(f"runs/{run_name}")
    folder = run_dir / "hub"
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("q_table.npy", "args.json"):
        shutil.copy(run_dir / name, folder / name)
    shutil.copy(__file__, folder / os.path.basename(__file__))
    # the course notebook loads this dict with load_from_hub(repo_id, "q-learning.pkl"), and its push_to_hub scores
    # it with evaluate_agent(env, max_steps, n_eval_episodes, qtable, eval_seed): these are our evaluation's values
    course_model = {
        "env_id": args.env_id, "max_steps": eval_max_steps(args), "n_training_episodes": args.total_episodes,
        "n_eval_episodes": args.eval_episodes, "eval_seed": eval_seeds(args.env_id, args.eval_episodes, args.seed),
        "learning_rate": args.learning_rate, "gamma": args.gamma, "max_epsilon": args.start_e,
        "min_epsilon": args.end_e, "decay_rate": args.decay_rate, "qtable": q_table,
    }  # fmt: skip
    (folder / "q-learning.pkl").write_bytes(pickle.dumps(course_model))
    videos = sorted(Path(f"videos/{run_name}").glob("*.mp4"), key=os.path.getmtime)
    if videos:
        shutil.copy(videos[-1], folder / "replay.mp4")
    mean, std = float(np.mean(eval_returns)), float(np.std(eval_returns))
    tag, script = env_tag(args), os.path.basename(__file__)
    # Taxi-v4 is gymnasium >= 1.3's name for the course's Taxi-v3 (same game unless is_rainy): the leaderboard lists v3
    extra_tags = ["Taxi-v3"] if args.env_id == "Taxi-v4" else []
    protocol = " as the course's `evaluate_agent` plays them" if args.env_id in COURSE_EVAL_ENVS else ""
    (folder / "README.md").write_text(f"""
# Q-learning agent playing {tag}

A Q-table trained with `{script}` for {args.total_episodes:,} episodes (seed {args.seed}), as in Unit 2 of the
Hugging Face Deep RL course. Evaluation: {len(eval_returns)} greedy episodes{protocol}, {mean:.2f} +/- {std:.2f}.

Watch it play (`pip install -r requirements.txt` from the project that holds `{script}`):

```sh
python {script} --eval-only {hub_repo_id(args)} --capture-video
```

In the course's notebook: `model = load_from_hub(repo_id="{hub_repo_id(args)}", filename="q-learning.pkl")`
(`env_id` is `{args.env_id}`{", the course's Taxi-v3 under its gymnasium >= 1.3 name" if args.env_id == "Taxi-v4" else ""}).
Arguments of the run: `args.json`.
""")
    # the card's YAML header: what the leaderboard reads
    metadata_save(folder / "README.md", {
        "tags": [tag, *extra_tags, "q-learning", "reinforcement-learning", "custom-implementation"],
        **metadata_eval_result(
            model_pretty_name=args.exp_name, task_pretty_name="reinforcement-learning", task_id="reinforcement-learning",
            metrics_pretty_name="mean_reward", metrics_id="mean_reward", metrics_value=f"{mean:.2f} +/- {std:.2f}",
            dataset_pretty_name=tag, dataset_id=tag,
        ),
    })  # fmt: skip
    return folder


def upload_folder_to_hub(repo_id: str, folder: Path) -> str:
    from huggingface_hub import HfApi

    api = HfApi()
    repo_url = api.create_repo(repo_id, exist_ok=True)
    api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=f"Upload {folder.parent.name}")
    return repo_url


def push_to_hub(args: Args, run_name: str, q_table: np.ndarray, eval_returns: list[float]) -> None:
    """Upload the hub folder; without a login or a network the folder stays, with the command that uploads it."""
    from huggingface_hub import get_token

    folder = build_hub_folder(args, run_name, q_table, eval_returns)
    repo_id = hub_repo_id(args)
    later = f"the files are in {folder}; upload them with: hf auth login && hf upload {repo_id} {folder} ."
    if get_token() is None:
        print(f"not logged in to the Hugging Face Hub: {later}")
        return
    try:
        print(f"uploaded to {upload_folder_to_hub(repo_id, folder)}")
    except Exception as e:
        print(f"upload to the Hugging Face Hub failed ({type(e).__name__}): {later}")


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Loads the course's q-learning.pkl (a dict of numbers, strings and one array) and nothing else: a pickle
    from the Hub could otherwise run any code while it loads."""

    def find_class(self, module, name):
        if module.split(".")[0] == "numpy" and name in ("_reconstruct", "ndarray", "dtype", "scalar"):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"q-learning.pkl refers to {module}.{name}, not a plain Q-table")


def download_from_hub(repo_id: str) -> tuple[np.ndarray, dict]:
    """A Q-table from the Hub: this script's q_table.npy and args.json, or a course notebook's q-learning.pkl."""
    try:
        from huggingface_hub import HfApi, hf_hub_download

        # one request lists the repo's files, with no retries: without a network this fails in a second
        files = [f.rfilename for f in HfApi().model_info(repo_id, timeout=10).siblings]
        if "q_table.npy" in files:
            saved = json.loads(Path(hf_hub_download(repo_id, "args.json")).read_text()) if "args.json" in files else {}
            return np.load(hf_hub_download(repo_id, "q_table.npy")), saved
        with open(hf_hub_download(repo_id, "q-learning.pkl"), "rb") as f:
            model = NumpyOnlyUnpickler(f).load()
        course = {"env_id": model["env_id"], "max_steps": model.get("max_steps"), "eval_episodes": model.get("n_eval_episodes")}
        return np.asarray(model["qtable"]), {k: v for k, v in course.items() if v is not None}
    except Exception as e:
        raise UsageError(
            f"--eval-only {repo_id}: no local file of that name, and no Q-table (q_table.npy or q-learning.pkl) "
            f"could be loaded from the Hub repo of that name ({type(e).__name__})"
        ) from None


def main(argv: Optional[list[str]] = None):
    """The command line: train (returns the Q-table and the evaluation returns) or --eval-only (the returns)."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        args, typed = parse_args(argv)
        return evaluate_saved(args, typed) if args.eval_only else train(args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # a Ctrl-C or SIGTERM before training, or a second one during the evaluation
        sys.exit(130)


if __name__ == "__main__":
    # a SIGTERM (kill, a job scheduler, tune.py stopping a trial) does what Ctrl-C does: training stops, and the
    # table is still evaluated and saved; by default it would kill the run with nothing saved
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    main()
