"""Time this repository's dqn_atari.py beside two well-known DQNs, in one run, with the same settings.

    python benchmarks/peers.py                                    # ours, CleanRL and SB3; 2 repeats of each
    python benchmarks/peers.py --repeats 1 --peers cleanrl        # ours and CleanRL only
    python benchmarks/peers.py --ours "python dqn_atari.py --num-envs 4 --checkpoint-frequency 0"
    python benchmarks/peers.py --total-timesteps 10000000 --buffer-size 1000000 --seconds 60   # on a GPU
    python benchmarks/peers.py --setup-only                       # make the peers' venv, fetch the peers

The programs (all three play one game at a time, as CleanRL's does):
  ours     --ours, by default `python dqn_atari.py --checkpoint-frequency 0` (`python` is the interpreter
           running this file; a `.py` path is read from here or from the repository root)
  cleanrl  CleanRL 1.2.0's cleanrl/dqn_atari.py, unchanged: read out of the cleanrl==1.2.0 wheel of the
           package index and run under a small gymnasium-1.x compatibility layer (in this file, see
           cleanrl_compat(); CleanRL 1.2.0 was written for gymnasium 0.29)
  sb3      Stable-Baselines3 2.9.2's DQN with RL-Zoo's Atari hyperparameters: the `atari` entry of
           hyperparams/dqn.yml, read out of the rl_zoo3==2.9.2 wheel (its buffer size and learning start
           replaced by the settings below, like every program's)

Same settings for all: --env-id, --seed, --total-timesteps, --learning-starts, --buffer-size, --torch-threads
(as OMP_NUM_THREADS and torch.set_num_threads), and the device: each one takes the GPU when there is one
(--cpu hides it from all). Ours gets the settings as flags appended to its command. The repeats are
interleaved (ours, cleanrl, sb3, then cleanrl, sb3, ours, ...) so that a slow stretch of the machine
does not fall on one program only.

What is measured, the same way for all three: a probe started in each program's Python process (a
sitecustomize.py on PYTHONPATH, see start_probe()) registers torch's global optimizer-step hook and
records the number of optimizer steps and the wall-clock time of the first and the last.
  train SPS    environment steps per second after learning starts, when every step also pays for its
               share of gradient steps: 4 x (optimizer steps - 1) / (time of the last - time of the
               first); all three take one gradient step every 4 environment steps (their default)
  grad steps   the optimizer steps counted: about (total - learning starts) / 4 for a full run
  warm-up s    from the start of the program to its first gradient step
  peak RSS MiB the largest resident memory of the program's largest process (the kernel's count, os.wait4)
  ours/this    ratios: ours' train SPS and peak RSS over this row's (train SPS above 1: ours is faster)
Compare ratios from one run, not figures from different runs: a shared machine drifts.

The peers run in a venv of their own, made on the first run under --cache (default ~/.cache/dqn-peers,
or $DQN_PEERS_CACHE): benchmarks/requirements-peers.txt (torch 2.13.0, gymnasium 1.4.0, ale-py 0.12.1,
stable-baselines3 2.9.2, ...), remade when that file changes; the two wheels cleanrl==1.2.0 and
rl_zoo3==2.9.2 are downloaded there with `pip download --no-deps`. Ours runs with the interpreter
running this file, so the project's requirements.txt is all it needs. On a machine without a package
index, pass --wheels DIR (or set WHEELS=DIR): pip then installs with --no-index --find-links DIR. Fill
such a folder on a machine with the index (same Python version and platform) with
    pip download -d DIR -r benchmarks/requirements-peers.txt
    pip download -d DIR --no-deps --ignore-requires-python cleanrl==1.2.0 rl_zoo3==2.9.2
Or give --peers-python PYTHON: an interpreter that has requirements-peers.txt installed already (then no
venv is made; the two wheels are still fetched, from --wheels if given).

Each run's log, its probe record, table.md and results.json go to --out (default: a new folder under
<cache>/results). On a 2-core CPU a 30,000-step run takes a few minutes, so the default (3 programs x 2
repeats) takes about half an hour. Under torch.compile the probe's hook runs outside the compiled code
(one more graph break); benchmarks/speed.py times our compiled runs without it.
"""

import argparse
import hashlib
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = Path(__file__).resolve().parent / "requirements-peers.txt"
CLEANRL, RL_ZOO = "cleanrl==1.2.0", "rl_zoo3==2.9.2"
TRAIN_FREQUENCY = 4  # environment steps per gradient step: the default of all three programs
DEFAULT_OURS = "python dqn_atari.py --checkpoint-frequency 0"
NAMES = {
    "ours": "ours",
    "cleanrl": "CleanRL 1.2.0 dqn_atari.py",
    "sb3": "SB3 2.9.2 DQN, RL-Zoo atari hyperparameters",
}


# ---------------------------------------------------------------------------------------------------
# The probe: runs inside each timed program (loaded by the sitecustomize.py that run_once() writes)
def start_probe():
    """Count optimizer steps and time the first and the last; write them to $DQN_PEERS_PROBE (JSON) at
    exit and at most once a second while running, so a run stopped by a signal leaves its record too."""
    path = os.environ.pop("DQN_PEERS_PROBE", None)  # popped: the program's own subprocesses are not probed
    if not path:
        return
    import atexit

    import torch  # every program imports it; importing it here first changes nothing but the order
    from torch.optim.optimizer import register_optimizer_step_post_hook  # not an attribute of torch.optim

    threads = int(os.environ.get("DQN_PEERS_THREADS", "0"))
    if threads > 0:
        torch.set_num_threads(threads)
    record = {"pid": os.getpid(), "started": float(os.environ.get("DQN_PEERS_STARTED", time.time())),
              "steps": 0, "first": None, "last": None, "torch": torch.__version__}
    written = [0.0]

    def write():
        record["threads"] = torch.get_num_threads()  # as the program left it
        record["cuda"] = torch.cuda.is_available() and torch.cuda.is_initialized()
        with open(path + ".tmp", "w") as f:
            json.dump(record, f)
        os.replace(path + ".tmp", path)

    def after_step(optimizer, args, kwargs):
        now = time.time()
        record["steps"] += 1
        record["first"] = record["first"] or now
        record["last"] = now
        if now - written[0] > 1.0:
            written[0] = now
            write()

    # kept out of torch.compile (a program may compile its optimizer step): the hook runs as Python each step
    register_optimizer_step_post_hook(torch.compiler.disable(after_step))
    atexit.register(write)


# ---------------------------------------------------------------------------------------------------
# CleanRL 1.2.0 under gymnasium 1.x: runs in the peers' venv (`peers.py _child cleanrl FILE ARGS...`)
def cleanrl_compat():
    """The gymnasium-0.29 names and behaviour that CleanRL 1.2.0's dqn_atari.py uses, on gymnasium 1.x.
    Its own code stays as it is; each patch below restores one thing it relies on."""
    import ale_py
    import gymnasium as gym
    import numpy as np

    # 1. ale-py >= 0.9 registers its games only when asked (0.7/0.8 did it on import via a plugin)
    gym.register_envs(ale_py)
    # 2. renamed in gymnasium 1.0; same behaviour (84x84 gray, no channel axis)
    gym.wrappers.GrayScaleObservation = gym.wrappers.GrayscaleObservation
    # 3. renamed in 1.0; it returns a (4, 84, 84) array where 0.29 returned LazyFrames of that shape
    gym.wrappers.FrameStack = gym.wrappers.FrameStackObservation

    # 4. vector envs: gymnasium 1.x resets a finished game on the NEXT step by default (that step
    # returns the reset observation with reward 0 and ignores the action); 0.29 reset it in the same
    # step and put the last observation and info in infos["final_observation"] / infos["final_info"],
    # one entry per env. CleanRL's loop reads those, so: the same-step mode, and its infos renamed.
    def one_env(batched, i):  # the info dict of env i out of gymnasium 1.x's dict of arrays and masks
        return {key: one_env(value, i) if isinstance(value, dict) else value[i]
                for key, value in batched.items()
                if not key.startswith("_") and batched.get("_" + key, np.ones(i + 1, dtype=bool))[i]}

    class SyncVectorEnv(gym.vector.SyncVectorEnv):
        def __init__(self, env_fns, copy=True):
            super().__init__(env_fns, copy=copy, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)

        def step(self, actions):
            obs, rewards, terminations, truncations, infos = super().step(actions)
            if "final_obs" in infos:
                done = infos.pop("_final_obs")
                final_obs, final_info = infos.pop("final_obs"), infos.pop("final_info")
                infos.pop("_final_info", None)
                infos["final_observation"], infos["_final_observation"] = final_obs, done
                infos["final_info"] = np.array([one_env(final_info, i) if d else None for i, d in enumerate(done)])
                infos["_final_info"] = done
            return obs, rewards, terminations, truncations, infos

    gym.vector.SyncVectorEnv = SyncVectorEnv

    # 5. `from distutils.util import strtobool` (its flags' parser): distutils left the standard library
    # in Python 3.12
    try:
        import distutils.util  # noqa: F401
    except ImportError:
        import types

        def strtobool(value):
            value = value.lower()
            if value in ("y", "yes", "t", "true", "on", "1"):
                return 1
            if value in ("n", "no", "f", "false", "off", "0"):
                return 0
            raise ValueError(f"invalid truth value {value!r}")

        util = types.ModuleType("distutils.util")
        util.strtobool = strtobool
        sys.modules["distutils"] = types.ModuleType("distutils")
        sys.modules["distutils"].util = sys.modules["distutils.util"] = util


def run_cleanrl(script, args):
    import runpy

    cleanrl_compat()
    sys.argv = [script, *args]
    runpy.run_path(script, run_name="__main__")


def run_sb3(zoo_wheel, env_id, seed, total_timesteps, learning_starts, buffer_size):
    """SB3's DQN set up as RL-Zoo sets it up for an Atari game (rl_zoo3/exp_manager.py): one game in a
    DummyVecEnv, the entry's env_wrapper (SB3's AtariWrapper), a VecFrameStack, the entry's policy and
    DQN hyperparameters; the buffer size and learning start are the benchmark's."""
    import importlib

    import ale_py
    import gymnasium as gym
    import yaml
    from stable_baselines3 import DQN
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecFrameStack

    gym.register_envs(ale_py)
    hyperparams = zoo_atari_hyperparams(zoo_wheel, yaml)
    wrappers = hyperparams.pop("env_wrapper")
    (wrapper,) = wrappers if isinstance(wrappers, list) else [wrappers]
    module, name = wrapper.rsplit(".", 1)
    env = make_vec_env(env_id, n_envs=1, seed=seed, wrapper_class=getattr(importlib.import_module(module), name))
    env = VecFrameStack(env, n_stack=hyperparams.pop("frame_stack"))
    policy = hyperparams.pop("policy")
    del hyperparams["n_timesteps"]
    hyperparams.update(buffer_size=buffer_size, learning_starts=learning_starts)
    print("SB3 DQN:", policy, hyperparams, flush=True)
    model = DQN(policy, env, seed=seed, verbose=1, **hyperparams)
    model.learn(total_timesteps=total_timesteps)


def zoo_atari_hyperparams(zoo_wheel, yaml):
    with zipfile.ZipFile(zoo_wheel) as wheel:
        return dict(yaml.safe_load(wheel.read("rl_zoo3/hyperparams/dqn.yml"))["atari"])


# ---------------------------------------------------------------------------------------------------
# The peers' venv and the two wheels
def setup(opts):
    """Make (or reuse) the peers' venv and fetch the two wheels; return (python, cleanrl script, zoo wheel)."""
    cache = Path(opts.cache).expanduser()
    index = ["--no-index", "--find-links", str(Path(opts.wheels).expanduser().resolve())] if opts.wheels else []
    if opts.peers_python:
        python = opts.peers_python
    else:
        venv, python = cache / "venv", str(cache / "venv" / "bin" / "python")
        wanted = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
        stamp = venv / "requirements-peers.sha256"
        if not stamp.exists() or stamp.read_text() != wanted:
            print(f"making the peers' venv in {venv} (pip install -r {REQUIREMENTS.relative_to(ROOT)}) ...", flush=True)
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
            pip(python, "install", "--quiet", *index, "-r", str(REQUIREMENTS))
            stamp.write_text(wanted)
    wheels = cache / "wheels"
    found = {}
    for requirement in (CLEANRL, RL_ZOO):
        name, version = requirement.split("==")
        pattern = f"{name}-{version}-*.whl"
        if not list(wheels.glob(pattern)):
            print(f"fetching {requirement} ...", flush=True)
            pip(python, "download", "--quiet", "--no-deps", "--ignore-requires-python", *index, "-d", str(wheels), requirement)
        found[name] = next(wheels.glob(pattern))
    script = cache / "cleanrl-1.2.0" / "dqn_atari.py"  # the file as it is in the wheel
    if not script.exists():
        script.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(found["cleanrl"]) as wheel:
            script.write_bytes(wheel.read("cleanrl/dqn_atari.py"))
    return python, script, found["rl_zoo3"]


def pip(python, *args):
    done = subprocess.run([python, "-m", "pip", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode != 0:
        sys.exit(f"error: pip {args[0]} failed:\n{done.stdout[-3000:]}")


# ---------------------------------------------------------------------------------------------------
# The runs
def commands(opts, python, script, zoo_wheel):
    settings = {"env-id": opts.env_id, "seed": opts.seed, "total-timesteps": opts.total_timesteps,
                "learning-starts": opts.learning_starts, "buffer-size": opts.buffer_size}
    flags = [word for name, value in settings.items() for word in (f"--{name}", str(value))]
    programs = {}
    if opts.ours.strip():
        ours = shlex.split(opts.ours)
        ours[0] = sys.executable if ours[0] in ("python", "python3") else ours[0]
        for i, word in enumerate(ours):  # a script path: from here, else from the repository root
            if word.endswith(".py") and not Path(word).is_absolute():
                here = Path(word).resolve()
                ours[i] = str(here if here.exists() else ROOT / word)
        programs["ours"] = ours + flags
    for peer in opts.peers:
        if peer == "cleanrl":
            programs[peer] = [python, str(Path(__file__).resolve()), "_child", "cleanrl", str(script), *flags]
        elif peer == "sb3":
            programs[peer] = [python, str(Path(__file__).resolve()), "_child", "sb3", str(zoo_wheel), *map(str, settings.values())]
    return programs


def run_once(label, command, workdir, opts):
    """Run one program to its end (or for --seconds); return its figures."""
    probe_dir, run_dir = workdir / "probe", workdir / label
    probe_dir.mkdir(exist_ok=True)
    run_dir.mkdir()
    (probe_dir / "sitecustomize.py").write_text(
        "# written by benchmarks/peers.py: its probe, in the timed program's Python process\n"
        "import importlib.util, os\n"
        "spec = importlib.util.spec_from_file_location('dqn_peers_probe', os.environ['DQN_PEERS_HARNESS'])\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "module.start_probe()\n")
    record = run_dir / "probe.json"
    threads = str(opts.torch_threads)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(probe_dir), os.environ.get("PYTHONPATH")])),
               DQN_PEERS_HARNESS=str(Path(__file__).resolve()), DQN_PEERS_PROBE=str(record),
               DQN_PEERS_THREADS=threads, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads,
               DQN_PEERS_STARTED=repr(time.time()), PYTHONUNBUFFERED="1", WANDB_MODE="disabled")
    if opts.cpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    start = time.time()
    with open(workdir / f"{label}.log", "w") as log:
        log.write("+ " + shlex.join(command) + "\n")
        log.flush()
        child = subprocess.Popen(command, cwd=run_dir, env=env, stdout=log, stderr=subprocess.STDOUT)
        stopped = False
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            if opts.seconds and time.time() - start > opts.seconds:
                if not stopped:
                    child.send_signal(signal.SIGINT)  # as Ctrl-C; the probe has written its record
                    stopped = time.time()
                elif time.time() - stopped > 60:  # still not stopped: the record is at most 1 s old
                    child.kill()
            time.sleep(0.2)
        child.returncode = os.waitstatus_to_exitcode(status)
    result = {"label": label, "exit": child.returncode, "stopped": bool(stopped), "wall_s": time.time() - start,
              "peak_rss_mib": usage.ru_maxrss / 1024}  # Linux: KiB
    if record.exists():
        result.update(json.loads(record.read_text()))
    steps = result.get("steps", 0)
    if steps > 1:
        result["train_sps"] = TRAIN_FREQUENCY * (steps - 1) / (result["last"] - result["first"])
        result["warmup_s"] = result["first"] - result["started"]
    if child.returncode != 0 and not stopped:
        result["error"] = f"exit code {child.returncode}, see {workdir / (label + '.log')}"
    elif steps < 2:
        result["error"] = f"no gradient steps recorded, see {workdir / (label + '.log')}"
    return result


def table(results, labels):
    by_label = {label: [r for r in results if r["label"].split("-")[0] == label] for label in labels}

    def median(runs, key):
        values = [r[key] for r in runs if key in r]
        return statistics.median(values) if values else None

    ours_sps, ours_rss = median(by_label.get("ours", []), "train_sps"), median(by_label.get("ours", []), "peak_rss_mib")
    lines = ["| program | train SPS (median) | each repeat | grad steps | warm-up s | wall s | peak RSS MiB "
             "| train SPS ours/this | peak RSS ours/this |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for label, runs in by_label.items():
        sps, rss = median(runs, "train_sps"), median(runs, "peak_rss_mib")
        failed = "; ".join(r["error"] for r in runs if "error" in r)
        each = ", ".join(f"{r['train_sps']:.0f}" if "train_sps" in r else "failed" for r in runs)

        def fmt(value, digits=0):
            return "-" if value is None else f"{value:.{digits}f}"

        ratios = ("", "") if label == "ours" or not runs else (
            "-" if None in (ours_sps, sps) else f"{ours_sps / sps:.2f}x",
            "-" if None in (ours_rss, rss) else f"{ours_rss / rss:.2f}x")
        lines.append(f"| {NAMES[label]} | {fmt(sps)} | {each} | {fmt(median(runs, 'steps'))} | {fmt(median(runs, 'warmup_s'), 1)} "
                     f"| {fmt(median(runs, 'wall_s'))} | {fmt(rss)} | {ratios[0]} | {ratios[1]} |")
        if failed:
            lines.append(f"|   {label} failed: {failed} | | | | | | | | |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env-id", default="SpaceInvadersNoFrameskip-v4", help="the Atari game (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=1, help="(default: %(default)s)")
    parser.add_argument("--total-timesteps", type=int, default=30_000, help="environment steps of each run (default: %(default)s)")
    parser.add_argument("--learning-starts", type=int, default=5_000, help="steps before the first gradient step (default: %(default)s)")
    parser.add_argument("--buffer-size", type=int, default=100_000, help="replay memory, in transitions (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each program, interleaved (default: %(default)s)")
    parser.add_argument("--torch-threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="torch threads of every program (default: this machine's usable cores, %(default)s)")
    parser.add_argument("--seconds", type=float, default=None,
                        help="stop each run after this many seconds, as Ctrl-C does (with a large --total-timesteps)")
    parser.add_argument("--peers", default="cleanrl,sb3", help="which peers, comma-separated: cleanrl, sb3, or '' for none (default: %(default)s)")
    parser.add_argument("--ours", default=DEFAULT_OURS, help="our command, or '' for none; the settings are appended as flags (default: %(default)s)")
    parser.add_argument("--cpu", action="store_true", help="hide the GPU from every program (CUDA_VISIBLE_DEVICES=)")
    parser.add_argument("--cache", default=os.environ.get("DQN_PEERS_CACHE", "~/.cache/dqn-peers"),
                        help="the peers' venv and wheels (default: $DQN_PEERS_CACHE or %(default)s)")
    parser.add_argument("--wheels", default=os.environ.get("WHEELS") or None,
                        help="a folder of wheels to install from instead of the package index (default: $WHEELS)")
    parser.add_argument("--peers-python", default=None, help="an interpreter with requirements-peers.txt installed: no venv is made")
    parser.add_argument("--out", default=None, help="where logs and results go (default: <cache>/results/<date-time>)")
    parser.add_argument("--setup-only", action="store_true", help="make the peers' venv and fetch the two wheels, then stop")
    opts = parser.parse_args()
    opts.peers = [p for p in opts.peers.replace(" ", "").split(",") if p]
    unknown = set(opts.peers) - {"cleanrl", "sb3"}
    if unknown:
        parser.error(f"unknown peers: {', '.join(sorted(unknown))} (known: cleanrl, sb3)")
    if opts.total_timesteps <= opts.learning_starts + 2 * TRAIN_FREQUENCY:
        parser.error("--total-timesteps must be well above --learning-starts: the figures come from the gradient steps")

    python, script, zoo_wheel = setup(opts)
    if opts.setup_only:
        print(f"ready: peers' python {python}\n  CleanRL: {script}\n  RL-Zoo: {zoo_wheel}")
        return
    programs = commands(opts, python, script, zoo_wheel)
    if not programs:
        parser.error("nothing to run: --ours '' and --peers ''")
    out = Path(opts.out or Path(opts.cache).expanduser() / "results" / time.strftime("%Y%m%d-%H%M%S"))
    out.mkdir(parents=True, exist_ok=True)
    labels = list(programs)
    print(f"{len(labels)} programs x {opts.repeats} repeats, {opts.env_id}, seed {opts.seed}, {opts.total_timesteps} steps, "
          f"learning from {opts.learning_starts}, buffer {opts.buffer_size}, {opts.torch_threads} torch threads; logs in {out}", flush=True)
    results = []
    for repeat in range(opts.repeats):
        turn = repeat % len(labels)  # interleaved, and each repeat starts with another program
        for label in labels[turn:] + labels[:turn]:
            print(f"  {label} (repeat {repeat + 1}) ...", end=" ", flush=True)
            result = run_once(f"{label}-{repeat + 1}", programs[label], out, opts)
            results.append(result)
            print(result.get("error") or f"train SPS {result['train_sps']:.0f}, peak RSS {result['peak_rss_mib']:.0f} MiB", flush=True)
    text = table(results, labels)
    print("\n" + text)
    (out / "table.md").write_text(text + "\n")
    (out / "results.json").write_text(json.dumps({"settings": vars(opts), "commands": programs, "runs": results}, indent=1, default=str))
    print(f"\n(written to {out / 'table.md'})")
    if any("error" in r for r in results):
        sys.exit(1)


if __name__ == "__main__":
    if sys.argv[1:2] == ["_child"]:  # a peer, in the peers' venv: `peers.py _child cleanrl|sb3 ...`
        if sys.argv[2] == "cleanrl":
            run_cleanrl(sys.argv[3], sys.argv[4:])
        else:
            zoo, env_id, seed, total, starts, size = sys.argv[3:9]
            run_sb3(zoo, env_id, int(seed), int(total), int(starts), int(size))
    else:
        main()
