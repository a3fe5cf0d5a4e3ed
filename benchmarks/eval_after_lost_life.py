"""Evaluation after a lost life (issue 18.4): the scores and game lengths of the same networks, evaluated
by two versions of the script (e.g. before and after FIRE was pressed after each lost life).

    python benchmarks/eval_after_lost_life.py /tmp/old/dqn_atari.py dqn_atari.py --games 5 --networks 3

Each network is a QNetwork initialised from a seed (an untrained agent: it mostly presses one action, so
it only serves the ball when a random action (epsilon 0.05) is FIRE). Prints one line per script and
network: the mean score and the mean game length in agent steps.
"""

import argparse
import importlib.util
import time

import gymnasium as gym
import numpy as np
import torch


class CountSteps(gym.Wrapper):
    """Counts the agent's steps of each game (the evaluation env ends an episode at game over)."""

    lengths = []

    def reset(self, **kwargs):
        self.steps = 0
        return self.env.reset(**kwargs)

    def step(self, action):
        self.steps += 1
        result = self.env.step(action)
        if result[2] or result[3]:
            CountSteps.lengths.append(self.steps)
        return result


def load(path):
    spec = importlib.util.spec_from_file_location(f"script_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("scripts", nargs="+")
    parser.add_argument("--env-id", default="BreakoutNoFrameskip-v4")
    parser.add_argument("--games", type=int, default=5)
    parser.add_argument("--networks", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for path in args.scripts:
        module = load(path)

        def make_env(*a, **k):
            return lambda: CountSteps(module.make_env(*a, **k)())

        for seed in range(args.networks):
            torch.manual_seed(seed)
            q_network = module.QNetwork(gym.make(args.env_id).action_space.n)
            CountSteps.lengths = []
            start = time.time()
            returns = module.evaluate(q_network, args.env_id, args.games, "unused", torch.device("cpu"), seed=seed, make_env=make_env)
            print(f"{path} network {seed}: score {np.mean(returns):.1f} ({', '.join(f'{r:g}' for r in returns)}), "
                  f"game length {np.mean(CountSteps.lengths):.0f} steps ({', '.join(map(str, CountSteps.lengths))}), {time.time() - start:.0f} s", flush=True)
