"""See what the network sees: a saved DQN or Double DQN agent plays one Atari game, filmed beside its
input and its Q-values.

    python watch.py models/dqn_atari_SpaceInvadersNoFrameskip-v4.pt --gif
    python watch.py models/dqn_atari_SpaceInvadersNoFrameskip-v4.pt --games 5

Each frame of the video shows the game; the 4 preprocessed 84x84 frames exactly as the network receives
them; the Q-value of every action, the chosen one marked, greedy or a random (epsilon) draw; and, over the
game so far, Q(s, a) of the actions taken against the discounted return that actually followed each
step. Where the first line runs above the second, the network overestimates: the bias that Double DQN
(ddqn_atari.py) reduces. That return is only known once the game has ended, so the game is played first
and the video written after it. `--games N` plays N games without a video and prints the mean gap.

The model is a .pt file, a run folder or a Hugging Face Hub repo id of a model saved by dqn_atari.py,
ddqn_atari.py or dqn_atari_fast.py, loaded as their --eval-only loads it, and the game is theirs: the same
evaluation environment, epsilon and random draws, so `--seed N` plays the first game of `--eval-only MODEL --seed N`.
A model of your own copy of dqn_atari.py, with another QNetwork: `--script my_dqn.py` loads it into that network.
"""

import functools
import importlib.util
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import cv2
import numpy as np
import torch
import tyro

import dqn_atari
from dqn_atari import UsageError


@dataclass
class Args:
    model: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="MODEL")]
    """a model saved by an Atari script here: its .pt file, its run folder or a Hugging Face Hub repo id"""
    seed: int = 1
    """seed of the game (and of the epsilon draws): the first game of `dqn_atari.py --eval-only MODEL --seed N`"""
    epsilon: float = 0.05
    """the probability of a random action, as in the scripts' evaluation"""
    gif: bool = False
    """if toggled, also write a GIF of the first `gif-steps` steps of the video"""
    gif_steps: int = 300
    """the steps in the GIF (its size grows with them: 300 make about 2 MB)"""
    max_steps: int = 0
    """stop the game after this many agent steps (0: play it to the end)"""
    games: int = 0
    """if > 0: play this many games without a video and print the mean of Q(s, a) - the return that followed"""
    fps: int = 15
    """frames per second of the video (15: real time, one frame per agent step of 4 Atari frames)"""
    cuda: bool = True
    """if toggled, use the GPU when there is one (the CPU otherwise)"""
    script: str = "dqn_atari.py"
    """the script whose QNetwork and evaluation game the model is loaded into: a copy of dqn_atari.py of yours"""


# THE GAME: one evaluation game, with what the network saw and said at every step
@dataclass
class Game:
    observations: list  # (4, 84, 84) uint8 each: the tensor fed to the network, oldest frame first
    screens: list  # the RGB screen at each decision, PNG-compressed (a long game would not fit in memory raw)
    q_values: np.ndarray  # (T, n_actions): the network's output on observations[t]
    actions: np.ndarray  # (T,) the action taken
    greedy: np.ndarray  # (T,) True where the action was the argmax, False where it was an epsilon draw
    rewards: np.ndarray  # (T,) the real game rewards (the score)
    lives: np.ndarray  # (T,) lives left at each decision (as the screen shows them)
    terminal: np.ndarray  # (T,) True where training would end the episode: a lost life or game over
    game_over: bool  # False if --max-steps (or the time limit) cut the game
    action_names: list


def play_game(q_network, env, rng, device, epsilon, max_steps=0, seed=None, keep_frames=True, report=None):
    """Play one game as the scripts' evaluate() does, recording each step. `seed` seeds the first game of an
    env; evaluate() then resets without a seed, and so does the caller for the games after it. `report` gets a
    line every 250 steps: a long game takes minutes, and its video is written only when it ends."""
    obs, _ = env.reset(seed=seed) if seed is not None else env.reset()
    ale = env.unwrapped.ale
    lives_before = ale.lives()
    observations, screens, q_values, actions, greedy, rewards, lives, terminal = [], [], [], [], [], [], [], []
    game_over = False
    while not max_steps or len(actions) < max_steps:
        x = torch.as_tensor(obs, device=device)[None]
        with torch.no_grad():
            q = q_network(x)[0].cpu().numpy()
        # the same random draws in the same order as evaluate(): one uniform a step, one more for an epsilon action
        if rng.random() < epsilon:
            action, was_greedy = int(rng.integers(env.action_space.n)), False
        else:
            action, was_greedy = int(q.argmax()), True
        if keep_frames:
            observations.append(x[0].cpu().numpy())
            # the screen as a person sees it, read from the emulator: the env itself renders no RGB frames
            screens.append(cv2.imencode(".png", ale.getScreenRGB())[1])
        obs, reward, terminated, truncated, _ = env.step(action)
        lives_after = ale.lives()
        lives.append(lives_before)
        q_values.append(q)
        actions.append(action)
        greedy.append(was_greedy)
        rewards.append(float(reward))
        # what EpisodicLifeEnv makes terminal in training (some games sit at 0 lives before game over: not a loss)
        terminal.append(bool(terminated or 0 < lives_after < lives_before))
        lives_before = lives_after
        if terminated or truncated:
            game_over = bool(terminated)  # a time-limit truncation is not terminal: its return is unknown
            break
        if report and len(actions) % 250 == 0:
            report(f"  playing: step {len(actions):,}, score {sum(rewards):.0f}")
    return Game(observations, screens, np.array(q_values), np.array(actions), np.array(greedy), np.array(rewards),
                np.array(lives), np.array(terminal), game_over, env.unwrapped.get_action_meanings())  # fmt: skip


# THE RETURN THAT FOLLOWED: what Q(s, a) estimates, measured
def discounted_returns(rewards, terminal, gamma):
    """G_t = r_t + gamma * G_{t+1}, with G = 0 past a terminal step. Also whether each G_t is complete: a
    step after the last terminal one (the game cut by --max-steps) misses the rewards after the cut.

    The target that Q learns is not the game score: training clips each reward to -1, 0 or +1
    (the sign of each) and ends the episode at every lost life (EpisodicLifeEnv), so Q(s, a) estimates the
    discounted sum of CLIPPED rewards until the next lost life. That is the return computed here, from
    the real rewards of an evaluation game (which plays all lives, unclipped)."""
    clipped = np.sign(rewards)
    returns = np.zeros(len(rewards))
    g = 0.0
    for t in reversed(range(len(rewards))):
        g = clipped[t] + gamma * g * (not terminal[t])
        returns[t] = g
    complete = np.flip(np.logical_or.accumulate(np.flip(terminal)))  # a terminal step at t or after it
    return returns, complete


def q_taken(game):
    return game.q_values[np.arange(len(game.actions)), game.actions]


# THE PICTURE: one frame of the video per step, drawn with OpenCV: a few milliseconds, where a matplotlib
# figure per frame would make a game of a few thousand steps take minutes to draw
FONT, WHITE, GREY, DIM = cv2.FONT_HERSHEY_SIMPLEX, (235, 235, 235), (150, 150, 150), (90, 90, 90)
Q_COLOUR, RETURN_COLOUR, CHOSEN, LOST_LIFE = (255, 160, 40), (70, 200, 255), (255, 215, 0), (230, 60, 60)  # RGB
WIDTH, HEIGHT = 1000, 680  # even sizes: the H.264 encoder needs them


class Layout:
    """Where each panel is on the canvas, as (x, y, width, height). The tests read the panels through it."""

    game = (10, 10, 320, 420)  # the 160x210 screen, each pixel 2x2
    frames = [(345 + 176 * (i % 2), 54 + 192 * (i // 2), 168, 168) for i in range(4)]  # 84x84 each, 2x2
    q_panel = (705, 10, 285, 420)
    plot = (60, 470, 920, 170)

    def q_row(self, a, n_actions):
        """The row of action a in the Q-value panel; the chosen action's marker fills its first 8 pixels."""
        x, y, w, h = self.q_panel
        row_h = min(24, (h - 110) // n_actions)  # 18 actions (the full Atari set) fit above the status lines
        return (x, y + 44 + a * row_h, w, row_h)


def text(canvas, s, xy, colour=WHITE, scale=0.45):
    cv2.putText(canvas, s, xy, FONT, scale, colour, 1, cv2.LINE_AA)


class Painter:
    """Draws step t of a played game. What is fixed over the game (the scales of the bars and of the plot,
    the plot's points) is computed once here, so the bars of two frames can be compared by eye. `steps`:
    the steps the plot spans (a GIF of the game's first steps spans those), the whole game by default."""

    def __init__(self, game, returns, complete, gamma, title, steps=None):
        self.game, self.returns, self.complete, self.gamma, self.title = game, returns, complete, gamma, title
        self.steps = steps or len(returns)
        self.layout = Layout()
        self.q_taken = q_taken(game)
        self.score = np.concatenate([[0.0], np.cumsum(game.rewards)])  # the score before each step
        # the bars show how far each Q-value is above the lowest one of its step: the actions' values differ
        # by far less than their size (8.2 against 8.3), so bars from zero would all look alike. One scale for
        # the whole game (a high percentile of the spread: one odd step does not flatten the others)
        spread = game.q_values.max(axis=1) - game.q_values.min(axis=1)
        self.bar_scale = float(np.percentile(spread[: self.steps], 95)) or 1.0
        # the plot: step t at x, both lines on one y scale
        x, y, w, h = self.layout.plot
        shown = np.concatenate([self.q_taken[: self.steps], returns[: self.steps], [0.0]])
        lo, hi = shown.min(), shown.max()
        hi = hi if hi > lo else lo + 1.0
        self.y_range = (lo, hi)
        px = x + np.arange(len(returns)) * (w - 1) / max(self.steps - 1, 1)
        self.to_y = lambda v: y + h - 1 - (v - lo) / (hi - lo) * (h - 1)
        self.q_points = np.stack([px, self.to_y(self.q_taken)], axis=1).round().astype(np.int32)
        self.return_points = np.stack([px, self.to_y(returns)], axis=1).round().astype(np.int32)

    def frame(self, t):
        canvas = np.full((HEIGHT, WIDTH, 3), 24, np.uint8)
        self.draw_game(canvas, t)
        self.draw_network_input(canvas, t)
        self.draw_q_values(canvas, t)
        self.draw_plot(canvas, t)
        return canvas

    def draw_game(self, canvas, t):
        x, y, w, h = self.layout.game
        screen = cv2.imdecode(self.game.screens[t], cv2.IMREAD_UNCHANGED)
        canvas[y : y + h, x : x + w] = cv2.resize(screen, (w, h), interpolation=cv2.INTER_NEAREST)

    def draw_network_input(self, canvas, t):
        text(canvas, "network input: 4 x 84x84 (uint8)", (345, 28))
        for i, (x, y, w, h) in enumerate(self.layout.frames):
            frame = self.game.observations[t][i]
            canvas[y : y + h, x : x + w] = cv2.resize(frame, (w, h), interpolation=cv2.INTER_NEAREST)[..., None]
            text(canvas, ("t-3", "t-2", "t-1", "t (newest)")[i], (x, y - 6), GREY, 0.4)

    def draw_q_values(self, canvas, t):
        x0, y0, _, _ = self.layout.q_panel
        text(canvas, "Q(s, a) of each action", (x0, y0 + 18))
        q, chosen, n = self.game.q_values[t], self.game.actions[t], len(self.game.q_values[t])
        bar_x, bar_w = x0 + 112, 110
        for a in range(n):
            x, y, w, h = self.layout.q_row(a, n)
            if a == chosen:
                canvas[y + 2 : y + h - 2, x : x + 8] = CHOSEN  # the marker
            elif a == q.argmax():  # an epsilon draw chose another action: the greedy one is outlined
                cv2.rectangle(canvas, (x, y + 2), (x + 7, y + h - 3), WHITE, 1)
            colour = CHOSEN if a == chosen else GREY
            text(canvas, self.game.action_names[a], (x + 14, y + h - 7), colour, 0.4)
            length = 2 + round(min((q[a] - q.min()) / self.bar_scale, 1.0) * (bar_w - 2))
            cv2.rectangle(canvas, (bar_x, y + 4), (bar_x + length, y + h - 5), colour, -1)
            text(canvas, f"{q[a]:+.2f}", (bar_x + bar_w + 8, y + h - 7), colour, 0.4)
        text(canvas, "bar: Q above the step's lowest Q", (x0, y + h + 18), GREY, 0.38)
        how = "greedy: the largest Q" if self.game.greedy[t] else "random: an epsilon draw"
        text(canvas, f"chosen: {self.game.action_names[chosen]}", (x0, y + h + 44), CHOSEN)
        text(canvas, how, (x0, y + h + 64), CHOSEN if self.game.greedy[t] else LOST_LIFE)

    def draw_plot(self, canvas, t):
        x, y, w, h = self.layout.plot
        game, n = self.game, len(self.returns)
        text(canvas, f"{self.title} | score {self.score[t]:.0f} (game: {self.score[-1]:.0f}) | lives {game.lives[t]} | step {t + 1} of {n}",
             (10, y - 28), WHITE, 0.5)  # fmt: skip
        for value in np.linspace(*self.y_range, 4):
            gy = round(self.to_y(value))
            cv2.line(canvas, (x, gy), (x + w, gy), (45, 45, 45), 1)
            text(canvas, f"{value:.1f}", (10, gy + 4), GREY, 0.38)
        for s in np.flatnonzero(game.terminal[: t + 1]):  # lost lives: the return starts again from 0 there
            px = self.q_points[s, 0]
            cv2.line(canvas, (px, y + h - 12), (px, y + h), LOST_LIFE, 2)
        done = int(self.complete[: t + 1].sum())  # complete returns first; those cut by --max-steps after them, dim
        cv2.polylines(canvas, [self.return_points[:done]], False, RETURN_COLOUR, 1, cv2.LINE_AA)
        cv2.polylines(canvas, [self.return_points[max(done - 1, 0) : t + 1]], False, DIM, 1, cv2.LINE_AA)
        cv2.polylines(canvas, [self.q_points[: t + 1]], False, Q_COLOUR, 1, cv2.LINE_AA)
        cv2.line(canvas, (self.q_points[t, 0], y), (self.q_points[t, 0], y + h), DIM, 1)
        text(canvas, "Q(s, a) of the action taken", (x, y - 8), Q_COLOUR, 0.42)
        text(canvas, f"return that followed: clipped rewards, gamma {self.gamma:g}, until the next lost life (red ticks)",
             (x + 215, y - 8), RETURN_COLOUR, 0.42)  # fmt: skip
        if not self.complete.all():
            text(canvas, "grey: return cut short by the end of the recording", (x + w - 400, y + h + 22), GREY, 0.42)
        if done:  # the mean gap of the complete returns drawn so far
            gap = (self.q_taken[:done] - self.returns[:done]).mean()
            text(canvas, f"mean Q(s, a) - return over {done} {'step' if done == 1 else 'steps'}: {gap:+.2f}", (x, y + h + 22), WHITE, 0.42)


# THE VIDEO
def check_video_encoder():
    """Before the game is played: without moviepy there is no video to write it into."""
    try:
        from moviepy.video.io.ffmpeg_writer import FFMPEG_VideoWriter
    except ImportError:
        raise UsageError("watch.py writes its video with moviepy: pip install moviepy (or use --games N for the numbers alone)")
    return FFMPEG_VideoWriter


def write_video(painter, path, fps, gif_painter=None, gif_path=None):
    """Draw and encode one frame at a time (a whole game of canvases would take gigabytes); the GIF's
    painter draws the first `gif_painter.steps` steps again, its plot spanning those alone."""
    writer_class = check_video_encoder()
    gif_frames = []
    writer = writer_class(str(path), (WIDTH, HEIGHT), fps, codec="libx264", pixel_format="yuv420p")
    try:
        for t in range(len(painter.returns)):
            writer.write_frame(painter.frame(t))
            if gif_painter and t < gif_painter.steps:
                gif_frames.append(gif_painter.frame(t))
    finally:
        writer.close()
    if gif_path:
        from PIL import Image

        # one palette for every frame, from the first, middle and last ones (the last has the most plot lines):
        # the panels keep their colours from frame to frame, and the file stays small
        sample = np.concatenate([gif_frames[0], gif_frames[len(gif_frames) // 2], gif_frames[-1]])
        palette = Image.fromarray(sample).quantize(colors=64, method=Image.Quantize.MEDIANCUT)
        frames = [Image.fromarray(f).quantize(palette=palette, dither=Image.Dither.NONE) for f in gif_frames]
        frames[0].save(gif_path, save_all=True, append_images=frames[1:], duration=round(1000 / fps), loop=0, optimize=True)


# THE NUMBERS: the overestimation, as a mean over every step of the games
def measure(q_network, env, device, args, gamma, report=functools.partial(print, flush=True)):
    """Play `args.games` games and return the mean of Q(s, a) - the return that followed, over all their
    steps with a complete return. The games are those of `--eval-only MODEL --seed N --eval-episodes N`.
    The gap is not zero for a perfect network either: Q estimates the greedy policy's return (training
    acted with epsilon 0.01), while these games draw random actions with `--epsilon`."""
    rng = np.random.default_rng(args.seed)
    gaps, qs, returns_all = [], [], []
    for i in range(args.games):
        game = play_game(q_network, env, rng, device, args.epsilon, args.max_steps, seed=args.seed if i == 0 else None, keep_frames=False, report=report)
        returns, complete = discounted_returns(game.rewards, game.terminal, gamma)
        q = q_taken(game)[complete]
        gaps.append(q - returns[complete])
        qs.append(q)
        returns_all.append(returns[complete])
        numbers = (f"mean Q(s, a) {q.mean():.3f}, mean return {returns[complete].mean():.3f}, "
                   f"mean Q(s, a) - return {gaps[-1].mean():+.3f}") if len(q) else "cut before a life was lost"
        report(f"game {i + 1}: score {game.rewards.sum():.0f}, {len(game.actions)} steps, {numbers}")
    gaps, qs, returns_all = np.concatenate(gaps), np.concatenate(qs), np.concatenate(returns_all)
    if len(gaps) == 0:  # each game cut before its first lost life: no return is known in full
        raise UsageError(f"--max-steps {args.max_steps} cut every game before a life was lost, so no return that "
                         "followed a step is complete: raise --max-steps, or 0 to play whole games")
    report(f"over {args.games} game{'s' * (args.games > 1)} ({len(gaps)} steps): mean Q(s, a) {qs.mean():.3f}, mean return {returns_all.mean():.3f}, "
           f"mean Q(s, a) - return {gaps.mean():+.3f} (return: clipped rewards, gamma {gamma:g}, until the next lost life)")  # fmt: skip
    return float(gaps.mean())


# --- the command: load, play, write ---
def load(args: Args):
    """The network, its saved arguments and its evaluation environment."""
    path = Path(args.model)
    # dqn_frozenlake_tabular.py saves q_table.npy, args.json and q-learning.pkl: say so, not "not a model"
    tabular = path.is_dir() and (path / "q_table.npy").exists() and not list(path.glob("*.pt"))
    if tabular or (path.is_file() and path.suffix in (".npy", ".pkl", ".pickle", ".json")):
        raise UsageError(f"'{args.model}' holds a Q-table (dqn_frozenlake_tabular.py saves .npy, .json and .pkl files), not a network: watch.py "
                         f"shows those of dqn_atari.py and ddqn_atari.py; evaluate a Q-table with python dqn_frozenlake_tabular.py --eval-only {args.model}")  # fmt: skip
    device = torch.device("cuda" if args.cuda and torch.cuda.is_available() else "cpu")
    script = import_script(args.script)  # the file the user names, never one that the model names
    try:
        q_network, saved_args = script.load_model(script.resolve_model_path(download_from_hub(args.model)), device)
        env_id = saved_args["env_id"]
        script.check_args(script.Args(env_id=env_id, buffer_size=script.Args.batch_size))  # the game only
    except script.UsageError as e:
        raise UsageError(f"{e}" + (" (watch.py: --script that script)" if "does not fit" in str(e) else "")) from None
    # training=False: the environment of the scripts' evaluation (all lives, real rewards), whatever it holds
    env = script.make_env(env_id, args.seed, None, training=False)
    return q_network.eval(), saved_args, env, device


def download_from_hub(model):
    """A Hub repo id (user/name): the repo's .pt file, downloaded (the scripts' --eval-only takes local files only).
    A file or a run folder stays as it is."""
    if Path(model).exists() or model.endswith(".pt") or model.count("/") != 1:
        return model
    try:  # one request lists the repo's files, with no retries: without a network this fails in a second
        from huggingface_hub import HfApi, hf_hub_download

        files = [f.rfilename for f in HfApi().model_info(model, timeout=10).siblings]
        return hf_hub_download(model, next(f for f in files if f.endswith(".pt")))
    except Exception as e:
        raise UsageError(f"no saved model at '{model}', and none could be downloaded from the Hub repo of that name "
                         f"({type(e).__name__})") from None


def import_script(path):
    """The module of a training script: its QNetwork, make_env and model loading."""
    if path == "dqn_atari.py":
        return dqn_atari
    if not Path(path).is_file():
        raise UsageError(f"--script {path}: no such file (a copy of dqn_atari.py)")
    spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_args(args: Args):
    if not 0 <= args.epsilon <= 1:
        raise UsageError(f"--epsilon {args.epsilon}: a probability, between 0 and 1")
    for flag, value, least in (("--max-steps", args.max_steps, 0), ("--games", args.games, 0), ("--gif-steps", args.gif_steps, 1), ("--fps", args.fps, 1)):
        if value < least:
            raise UsageError(f"{flag} {value}: at least {least}")


def watch(args: Args):
    """Play one game, then write its video; returns the path of the video."""
    check_video_encoder()
    q_network, saved_args, env, device = load(args)
    gamma = saved_args.get("gamma", 0.99)
    env_id, exp_name = saved_args.get("env_id"), saved_args.get("exp_name", "dqn_atari")
    print(f"playing one game of {saved_args.get('env_id')}: its video is written when it ends", flush=True)
    game = play_game(q_network, env, np.random.default_rng(args.seed), device, args.epsilon, args.max_steps, seed=args.seed,
                     report=lambda line: print(line, flush=True))
    env.close()
    returns, complete = discounted_returns(game.rewards, game.terminal, gamma)
    folder = Path("videos") / f"{env_id.replace('/', '-')}__{exp_name}-watch__{args.seed}__{int(time.time())}"
    folder.mkdir(parents=True, exist_ok=True)
    video = folder / f"{exp_name}-seed{args.seed}.mp4"
    gif = video.with_suffix(".gif") if args.gif else None
    title = f"{env_id} | {exp_name}"
    painter = Painter(game, returns, complete, gamma, title)
    gif_painter = Painter(game, returns, complete, gamma, title, steps=min(args.gif_steps, len(returns))) if gif else None
    write_video(painter, video, args.fps, gif_painter, gif)
    print(f"the agent's view: {video}" + (f" (and the first {min(args.gif_steps, len(returns))} steps in {gif})" if gif else ""))
    return video


def main(argv=None):
    args = tyro.cli(Args, args=argv)
    try:
        check_args(args)
        if args.games > 0:
            q_network, saved_args, env, device = load(args)
            measure(q_network, env, device, args, saved_args.get("gamma", 0.99))
            env.close()
        else:
            watch(args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
