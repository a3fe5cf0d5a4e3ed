"""Shared fixtures of the Atari tests (dqn_atari.py and ddqn_atari.py)."""

import importlib
import os

import pytest
import torch

ALGOS = ["dqn_atari", "ddqn_atari"]


@pytest.fixture(params=ALGOS)
def algo(request):
    """The script under test, imported as a module (importing it trains nothing)."""
    return importlib.import_module(request.param)


@pytest.fixture(scope="session")
def single_thread():
    """One torch thread, so that a run's losses are the same on every machine: they depend on the thread count
    (the order of the float sums; docs/speed.md)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def subprocess_env():
    """Environment for running the scripts as a user would: no wandb key, one thread per process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.pop("PYTHONPATH", None)  # the script must run from its own folder, as a user starts it
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def fast():
    """The fast variant, dqn_atari_fast.py (DQN only)."""
    return importlib.import_module("dqn_atari_fast")
