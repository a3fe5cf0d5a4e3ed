"""What one checkpoint costs with a full replay memory: the time the training loop waits, the time the
write takes, and the bytes written, for the first checkpoint of a run and for the next one,
`--steps-between` steps later. The memory is filled synthetically (no training), the frames hold a
pattern (neither format compresses: the content does not change the cost).

    python benchmarks/checkpoint_cost.py dqn_atari.py --folder /tmp/ckpt       # the teaching pair: one file
    python benchmarks/checkpoint_cost.py dqn_atari_fast.py --folder /tmp/ckpt  # chunks, in the background

1M frames take 7.1 GB of memory, and up to twice that on disk during a write. "sync" is the time
os.sync() takes after the checkpoint: what the page cache still had to write to the disk.
"""

import argparse
import importlib.util
import os
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch


def written_bytes():
    with open("/proc/self/io") as f:  # wchar: the bytes passed to write() by this process (its threads included)
        return int(next(line for line in f if line.startswith("wchar")).split()[1])


def checkpoint(module, run_dir, state, rb):
    written, start = written_bytes(), time.time()
    if hasattr(module, "Run"):  # the pair: save_checkpoint writes runs/<run>/checkpoint.pt, the loop waiting for it
        run = SimpleNamespace(args=module.Args(checkpoint_frequency=1), checkpoint_step=None, name="benchmark",
                              dir=run_dir, wandb=None)
        q_network = module.QNetwork(6)
        optimizer = torch.optim.Adam(q_network.parameters())
        module.save_checkpoint(run, state["global_step"], (q_network, q_network, optimizer, np.random.default_rng(0), rb))
    else:
        module.save_checkpoint(run_dir, state, rb)
    blocked = time.time() - start
    if hasattr(rb, "wait_for_checkpoint"):
        rb.wait_for_checkpoint()
    done = time.time() - start
    os.sync()
    synced = time.time() - start - done
    print(f"step {state['global_step']:,}: the loop waits {blocked:.2f} s, the write takes {done:.1f} s (+ sync {synced:.1f} s), "
          f"{(written_bytes() - written) / 1e9:.2f} GB written", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("script")
    parser.add_argument("--folder", default="/tmp/checkpoint_cost")
    parser.add_argument("--buffer-size", type=int, default=1_000_000)
    parser.add_argument("--steps-between", type=int, default=500_000)
    args = parser.parse_args()
    spec = importlib.util.spec_from_file_location("script", args.script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    start = time.time()
    if hasattr(module, "Run"):  # the pair: one game, numpy arrays
        rb = module.ReplayBuffer(args.buffer_size, torch.device("cpu"), seed=0)
        for first in range(0, args.buffer_size, 50_000):
            last = min(first + 50_000, args.buffer_size)
            rb.frames[first:last] = (np.arange(first, last) % 251).astype(np.uint8)[:, None, None]
        rb.valid[:], rb.size, rb.pos = True, args.buffer_size, int(0.6 * args.buffer_size)
        print(f"{args.script}: {args.buffer_size:,} frames filled in {time.time() - start:.0f} s", flush=True)
        run_dir = Path(args.folder)
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir(parents=True)
        for step in (1_000_000, 1_000_000 + args.steps_between):  # one file, the whole memory each time
            checkpoint(module, run_dir, {"global_step": step}, rb)
        print(f"on disk: {sum(f.stat().st_size for f in run_dir.rglob('*') if f.is_file()) / 1e9:.2f} GB", flush=True)
        shutil.rmtree(run_dir)
        raise SystemExit
    buffer = getattr(module, "CheckpointedReplayBuffer", module.ReplayBuffer)
    rb = buffer(args.buffer_size, 1, (84, 84), torch.device("cpu"), seed=0)
    for first in range(0, rb.capacity, 50_000):  # a full memory: every slot written, the ring at 60%
        last = min(first + 50_000, rb.capacity)
        rb.frames[0, first:last] = torch.arange(first, last).remainder(251).to(torch.uint8)[:, None, None]
    rb.valid[:] = True
    rb.filled, rb.pos = rb.capacity, np.array([int(0.6 * rb.capacity)])
    print(f"{args.script}: {rb.capacity:,} frames filled in {time.time() - start:.0f} s", flush=True)

    q_network = module.QNetwork(6)
    optimizer = torch.optim.Adam(q_network.parameters())
    q_network(torch.zeros((1, 4, 84, 84), dtype=torch.uint8)).sum().backward()
    optimizer.step()  # Adam's moments exist, as in a real checkpoint
    state = {"script": "benchmark", "global_step": 0, "q_network": q_network.state_dict(), "target_network": q_network.state_dict(),
             "optimizer": optimizer.state_dict(), "args": {}}  # fmt: skip
    run_dir = Path(args.folder)
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    checkpoint(module, run_dir, dict(state, global_step=1_000_000), rb)

    # the next `steps_between` steps write that many slots from the write position on (about one a step)
    for slot in range(rb.pos[0], rb.pos[0] + args.steps_between, 50_000):
        stop = min(slot + 50_000, rb.pos[0] + args.steps_between)
        slots = np.arange(slot, stop) % rb.capacity
        rb.frames[0, slots] = 7
        if hasattr(rb, "changed"):
            rb.changed[np.unique(slots // rb.chunk)] = True
    rb.pos = (rb.pos + args.steps_between) % rb.capacity
    checkpoint(module, run_dir, dict(state, global_step=1_000_000 + args.steps_between), rb)
    print(f"on disk: {sum(f.stat().st_size for f in run_dir.rglob('*') if f.is_file()) / 1e9:.2f} GB", flush=True)
    shutil.rmtree(run_dir)
