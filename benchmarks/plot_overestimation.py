"""The overestimation over training, drawn as van Hasselt et al. (2016, Fig. 3) made the case for Double DQN: at
each kept network of a run, the mean Q(s, a) of the actions taken (the estimate) and the mean discounted return
that followed them (the truth), against the run's steps. Two lines per run, on one plot.

    python dqn_atari.py --total-timesteps 1000000 --checkpoint-frequency 100000 &
    python benchmarks/keep_networks.py runs/<dqn_run>          # runs/<dqn_run>/networks/step-0100000.pt, ...
    (the same with ddqn_atari.py)
    python benchmarks/plot_overestimation.py runs/<dqn_run> runs/<ddqn_run> --out docs/img/overestimation.png \
        --returns-out docs/img/training_return.png     # and the training return of both runs, on one plot

Each network plays `python watch.py NETWORK --games 3 --seed 1`: the same games, from the same seeds, for every
network of every run (epsilon 0.05; the return is that of training: clipped rewards, gamma, until a lost life).
The numbers go into each run's networks/overestimation.json, and a network measured once is not measured again:
a second call only draws.
"""

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no window
import matplotlib.pyplot as plt
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # plot_curves.py, beside this file
import plot_curves  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent  # watch.py's folder
# watch.py's last line: "over 3 games (N steps): mean Q(s, a) X, mean return Y, mean Q(s, a) - return Z (...)"
SUMMARY = re.compile(r"over \d+ games? \((\d+) steps\): mean Q\(s, a\) (-?[\d.]+), mean return (-?[\d.]+)")
NAMES = {"dqn_atari.py": "DQN", "ddqn_atari.py": "Double DQN", "dqn_atari_fast.py": "DQN (fast variant)"}


def measure(network, games, seed, max_steps):
    """watch.py --games on one network: its mean Q(s, a), mean return and the steps they are over."""
    command = [sys.executable, str(ROOT / "watch.py"), str(network), "--games", str(games), "--seed", str(seed),
               "--max-steps", str(max_steps)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    found = SUMMARY.search(done.stdout)
    if done.returncode != 0 or not found:
        sys.exit(f"error: {' '.join(command)} failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}")
    steps, q, ret = found.groups()
    return {"q": float(q), "return": float(ret), "steps": int(steps)}


def measure_run(run_folder, games, seed, max_steps):
    """Every network of runs/<run>/networks, measured or read from overestimation.json; (name, {step: numbers})."""
    folder = run_folder / "networks"
    networks = sorted(folder.glob("step-*.pt"))
    if not networks:
        sys.exit(f"error: no networks in {folder}: keep them while the run trains with "
                 f"python benchmarks/keep_networks.py {run_folder}")
    script = torch.load(networks[0], map_location="cpu", weights_only=True).get("script", "dqn_atari.py")
    name = NAMES.get(script, script)
    cache = folder / "overestimation.json"
    results = json.loads(cache.read_text()) if cache.exists() else {}
    key = f"games={games} seed={seed} max_steps={max_steps}"  # other games: other numbers
    measured = results.setdefault(key, {})
    for network in networks:
        step = str(int(network.stem.removeprefix("step-")))
        if step not in measured:
            measured[step] = measure(network, games, seed, max_steps)
            cache.write_text(json.dumps(results, indent=1))
            print(f"{name}, {run_folder.name}, step {int(step):,}: mean Q(s, a) {measured[step]['q']:.3f}, "
                  f"mean return {measured[step]['return']:.3f}", flush=True)
    return name, {int(step): numbers for step, numbers in measured.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (runs/<run_name>) with kept networks")
    parser.add_argument("--games", type=int, default=3, help="games per network (watch.py --games)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the first game, the same for every network")
    parser.add_argument("--max-steps", type=int, default=0, help="cut each game after this many steps (0: whole games)")
    parser.add_argument("--title", default="Space Invaders: Q-value estimates against the true returns")
    parser.add_argument("--out", type=Path, default=Path("overestimation.png"))
    parser.add_argument("--returns-out", type=Path, help="also draw the runs' training returns (charts/episodic_return)")
    opts = parser.parse_args()
    for run in opts.runs:
        if not run.is_dir():
            sys.exit(f"error: no run folder at {run}: pass runs/<run_name>")

    fig, ax = plt.subplots(figsize=(7, 4.5))
    names = []
    for run in opts.runs:
        name, measured = measure_run(run, opts.games, opts.seed, opts.max_steps)
        names.append(name)
        steps = sorted(measured)
        line = ax.plot(steps, [measured[s]["q"] for s in steps], "o-", label=f"{name}: estimate, mean Q(s, a)")
        ax.plot(steps, [measured[s]["return"] for s in steps], "s--", color=line[0].get_color(),
                label=f"{name}: truth, the discounted return")
    plot_curves.save(fig, ax, f"value (clipped rewards), {opts.games} games per point", opts.title, opts.out)
    if opts.returns_out:  # the training return of the same runs, on one plot
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for run, name in zip(opts.runs, names):
            curve = plot_curves.load_curve(run, "charts/episodic_return", 20)
            if curve is None:
                sys.exit(f"error: no charts/episodic_return in {run}: pass the run folders that training wrote")
            ax.plot(*curve, label=name)
        plot_curves.save(fig, ax, "training return, whole games (mean of 20)", "Space Invaders: training return",
                         opts.returns_out)


if __name__ == "__main__":
    main()
