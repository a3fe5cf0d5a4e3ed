"""Evaluate a run's networks as they were at several steps, and log each evaluation against its step:
the evaluation curve of a run, next to its training curve.

    python benchmarks/eval_checkpoints.py SNAPSHOT.pt [...] --logdir runs/<run_name> --episodes 10

A snapshot is the `state.pt` of a checkpoint folder (`runs/<run_name>/checkpoint-<step>/`, the step
read from it) or a model saved by --save-model (give its step with NAME.pt@STEP). A run keeps only its
newest checkpoint, so copy each one's `state.pt` aside while it trains to get a curve. Each snapshot
plays the same full games as the run's final evaluation (ε = 0.05, the run's seed unless --seed), and
its mean goes to `eval/mean_return` at its step in --logdir's TensorBoard events, where
`benchmarks/plot_curves.py --eval-tag eval/mean_return` draws it beside `charts/episodic_return`.
"""

import argparse
import importlib
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the scripts, from any folder


def load_snapshot(spec):
    """(script module, network, saved args, step) of a checkpoint's state.pt or a saved model at NAME.pt@STEP."""
    path, _, step = spec.partition("@")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    weights = saved["q_network"] if "q_network" in saved else saved["model"]
    script = importlib.import_module(saved.get("script", "dqn_atari.py").removesuffix(".py"))
    q_network = script.QNetwork(weights["network.9.weight"].shape[0])
    q_network.load_state_dict(weights)
    return script, q_network, saved["args"], int(step or saved["global_step"])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("snapshots", nargs="+", help="checkpoint state.pt files, or saved models as NAME.pt@STEP")
    parser.add_argument("--logdir", type=Path, required=True, help="where eval/mean_return is written (the run's folder)")
    parser.add_argument("--episodes", type=int, default=10, help="full games per snapshot")
    parser.add_argument("--seed", type=int, default=None, help="the games' seed (default: the run's)")
    opts = parser.parse_args()

    writer = SummaryWriter(str(opts.logdir))
    for spec in opts.snapshots:
        script, q_network, args, step = load_snapshot(spec)
        seed = args["seed"] if opts.seed is None else opts.seed
        returns = script.evaluate(q_network, args["env_id"], opts.episodes, "unused", torch.device("cpu"), seed=seed)
        writer.add_scalar("eval/mean_return", float(np.mean(returns)), step)
        print(f"step {step:,}: {np.mean(returns):.1f} +/- {np.std(returns):.1f} over {len(returns)} games ({spec})", flush=True)
    writer.close()


if __name__ == "__main__":
    main()
