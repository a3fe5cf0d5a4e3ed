"""Learning curves from TensorBoard runs: episodic return against environment steps, one line per script,
the mean over seeds with the spread (min to max) shaded.

    python benchmarks/plot_curves.py runs/ --env-id SpaceInvadersNoFrameskip-v4 --out curves.png

Run folders are named `{env_id}__{exp_name}__{seed}__{time}` (the scripts' run names); the runs of
one exp_name (dqn_atari, ddqn_atari, ...) are its seeds.
"""

import argparse
from collections import defaultdict
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # files only, no window
import matplotlib.pyplot as plt
import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def load_curve(run_dir, tag, window):
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    if tag not in events.Tags()["scalars"]:
        return None
    points = events.Scalars(tag)
    steps = np.array([p.step for p in points])
    values = np.array([p.value for p in points])
    smoothed = np.array([values[max(0, i - window + 1) : i + 1].mean() for i in range(len(values))])
    return steps, smoothed


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="folders holding run folders (or run folders)")
    parser.add_argument("--env-id", default="SpaceInvadersNoFrameskip-v4")
    parser.add_argument("--tag", default="charts/episodic_return")
    parser.add_argument("--window", type=int, default=20, help="logged points in the moving average (episodes, for returns)")
    parser.add_argument("--eval-tag", default=None, help="also draw this tag's points (e.g. eval/mean_return, from eval_checkpoints.py) as markers")
    parser.add_argument("--title", default=None)
    parser.add_argument("--out", type=Path, default=Path("curves.png"))
    opts = parser.parse_args()

    by_script, evals = defaultdict(list), defaultdict(list)
    for root in opts.runs:
        for run_dir in sorted([root, *root.iterdir()] if root.is_dir() else []):
            parts = run_dir.name.split("__")
            if len(parts) == 4 and parts[0] == opts.env_id and not parts[1].endswith("-eval"):
                curve = load_curve(run_dir, opts.tag, opts.window)
                if curve is not None:
                    by_script[parts[1]].append(curve)
                evaluation = load_curve(run_dir, opts.eval_tag, 1) if opts.eval_tag else None
                if evaluation is not None:
                    evals[parts[1]].append(evaluation)
    if not by_script:
        raise SystemExit(f"error: no runs of {opts.env_id} with {opts.tag} under {', '.join(map(str, opts.runs))}")

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for script, curves in sorted(by_script.items()):
        last_step = min(steps[-1] for steps, _ in curves)  # the range every seed covers
        grid = np.linspace(max(steps[0] for steps, _ in curves), last_step, 200)
        values = np.stack([np.interp(grid, steps, smoothed) for steps, smoothed in curves])
        line = ax.plot(grid, values.mean(axis=0), label=f"{script} ({len(curves)} seed{'s' * (len(curves) > 1)})")
        ax.fill_between(grid, values.min(axis=0), values.max(axis=0), color=line[0].get_color(), alpha=0.2)
        for steps, points in evals[script]:  # each evaluation as it was: no smoothing
            ax.plot(steps, points, "o--", color=line[0].get_color(), label=f"{script}: {opts.eval_tag}")
    save(fig, ax, f"{opts.tag} (mean of {opts.window} points)", opts.title or opts.env_id, opts.out)


def save(fig, ax, ylabel, title, out):
    """The axes labelled (steps with thousands separators), the legend and grid drawn, the figure written."""
    ax.xaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:,.0f}"))
    ax.set_xlabel("environment steps")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
