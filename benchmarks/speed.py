"""Time dqn_atari.py (or ddqn_atari.py) for a fixed number of steps: steps/s while learning, and peak memory.

    python benchmarks/speed.py                          # dqn_atari.py, 30,000 steps, learning from step 5,000
    python benchmarks/speed.py --script ddqn_atari.py -- --num-envs 4 --cuda
    python benchmarks/speed.py --total-timesteps 10000000 --buffer-size 1000000 --seconds 120   # stopped after 2 min
    python benchmarks/speed.py --busy 2                 # beside 2 CPU-bound processes: a busy machine

"train SPS" is the environment steps per second after learning starts, when every step also pays for
its share of gradient steps; it is read from the run's own TensorBoard events (the wall-clock times
of the first and last `losses/td_loss` points). Peak RSS is the largest resident memory of the run's
main process. Figures from different machines, or from different times on a shared one, do not compare
well: to time this script beside CleanRL's dqn_atari.py and Stable-Baselines3's DQN in one run, with
ratios, use benchmarks/peers.py (docs/speed.md).
"""

import argparse
import resource
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ROOT = Path(__file__).resolve().parent.parent


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--script", default="dqn_atari.py")
    parser.add_argument("--env-id", default="SpaceInvadersNoFrameskip-v4")
    parser.add_argument("--total-timesteps", type=int, default=30_000)
    parser.add_argument("--learning-starts", type=int, default=5_000)
    parser.add_argument("--buffer-size", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=None, help="stop the run (as Ctrl-C does) after this long")
    parser.add_argument("--busy", type=int, default=0, help="run N CPU-bound processes beside the run, as other work would")
    parser.add_argument("extra", nargs="*", help="more flags for the script, after --")
    opts = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="dqn-speed-"))
    command = [
        sys.executable, str(ROOT / opts.script), "--env-id", opts.env_id, "--seed", "1",
        "--total-timesteps", str(opts.total_timesteps), "--learning-starts", str(opts.learning_starts),
        "--buffer-size", str(opts.buffer_size), "--checkpoint-frequency", "0", *opts.extra,
    ]
    print("+", shlex.join(command), flush=True)
    # other work on the machine: each process spins on one core until it is ended, by its id, below
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(opts.busy)]
    start = time.time()
    try:
        run = subprocess.Popen(command, cwd=workdir, stdout=subprocess.DEVNULL)
        try:
            run.wait(timeout=opts.seconds)
        except subprocess.TimeoutExpired:
            run.send_signal(signal.SIGTERM)  # the script stops after the current step and saves its logs
            run.wait()
    finally:
        for process in busy:
            process.kill()
            process.wait()
    if run.returncode != 0:
        sys.exit(f"error: the run failed (exit code {run.returncode})")
    wall = time.time() - start
    peak_rss_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # Linux: KiB

    events = EventAccumulator(str(next((workdir / "runs").iterdir())), size_guidance={"scalars": 0})
    events.Reload()
    losses = events.Scalars("losses/td_loss") if "losses/td_loss" in events.Tags()["scalars"] else []
    if len(losses) < 2:  # the time between two logged losses is what is measured
        sys.exit(f"error: the run logged {len(losses)} loss(es) after learning started: too few to time; "
                 "raise --total-timesteps or lower --learning-starts")
    steps = losses[-1].step  # with --seconds, where the run stopped
    train_sps = (steps - losses[0].step) / (losses[-1].wall_time - losses[0].wall_time)
    print("| script | busy | steps | train SPS | wall s | peak RSS MiB |\n| --- | --- | --- | --- | --- | --- |")
    print(f"| {opts.script} {' '.join(opts.extra)} | {opts.busy} | {steps} | {train_sps:.0f} | {wall:.0f} | {peak_rss_mib:.0f} |")


if __name__ == "__main__":
    main()
