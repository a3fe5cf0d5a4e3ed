"""Keep the network of every checkpoint of a run, as a model file: dqn_atari.py and ddqn_atari.py write one
checkpoint file, each one replacing the last, so a run's earlier networks are gone once the next is written.
This watches the run folder and saves the Q-network of each new checkpoint beside it, in the scripts' model
format, for `--eval-only`, `watch.py` and benchmarks/plot_overestimation.py.

    python dqn_atari.py --total-timesteps 1000000 --checkpoint-frequency 100000 &
    python benchmarks/keep_networks.py runs/<run_name>      # runs/<run_name>/networks/step-0100000.pt, ...

It stops when the run's model (runs/<run_name>/<exp_name>.pt) is written after it started watching and the
last checkpoint is kept, or with Ctrl-C; a model left by an earlier stop of a resumed run does not count. Reading a checkpoint maps it (mmap): its replay memory is not read into memory.
"""

import argparse
import os
import sys
import time
from pathlib import Path

import torch


def keep(checkpoint, folder):
    """The checkpoint's Q-network as a model file named by its step; returns the step (None if unreadable)."""
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # being replaced right now: the next poll reads the new one
        return None
    step, path = state["global_step"], folder / f"step-{state['global_step']:07d}.pt"
    if not path.exists():
        model = {"model": state["q_network"], "args": state["args"], "script": state["script"],
                 "n_actions": int(state["q_network"]["network.9.weight"].shape[0])}  # the last Linear
        torch.save(model, path.with_suffix(".tmp"))
        os.replace(path.with_suffix(".tmp"), path)
        print(f"kept the network of step {step:,}: {path}", flush=True)
    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_folder", type=Path)
    parser.add_argument("--every", type=float, default=20.0, help="seconds between two looks at the folder")
    opts = parser.parse_args()
    checkpoint, folder = opts.run_folder / "checkpoint.pt", opts.run_folder / "networks"
    if not opts.run_folder.is_dir():
        sys.exit(f"error: no run folder at {opts.run_folder}: pass runs/<run_name>")
    folder.mkdir(exist_ok=True)
    seen, started = None, time.time()
    while True:
        if checkpoint.exists() and checkpoint.stat().st_mtime != seen:
            seen = checkpoint.stat().st_mtime if keep(checkpoint, folder) is not None else None
        models = [m for m in opts.run_folder.glob("*.pt") if m.name != "checkpoint.pt" and m.stat().st_mtime > started]
        if models and checkpoint.exists() and checkpoint.stat().st_mtime == seen:
            return  # the run ended: its model is saved, and its last checkpoint kept
        time.sleep(opts.every)


if __name__ == "__main__":
    main()
