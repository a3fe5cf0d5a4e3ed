"""Helpers shared by the test files (pytest puts tests/ on sys.path)."""

import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub


def live_processes_in_group(pgid):
    """The live (not zombie) processes of a process group, read from /proc."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(stat.parent.name))
    return alive


def processes_left_in_group(pgid, timeout=10):
    """The processes of a group still alive after giving them `timeout` seconds to exit."""
    deadline = time.time() + timeout
    while live_processes_in_group(pgid) and time.time() < deadline:
        time.sleep(0.2)
    return live_processes_in_group(pgid)


def last_line_of_the_run(out, run_dir: Path) -> str:
    """The line an Atari run ends with, naming its folder and what is in it (checked here: its events)."""
    last = out.strip().splitlines()[-1]
    assert last.startswith(f"run folder runs/{run_dir.name}: TensorBoard events"), out
    assert list(run_dir.glob("events.out.tfevents.*")), f"no TensorBoard events in {run_dir}"
    return last


def serve_as_hub_repo(monkeypatch, folder: Path) -> list:
    """Make huggingface_hub serve `folder` as every repo (no network); returns the calls it received."""
    calls = []

    def model_info(self, repo_id, **kwargs):  # the scripts list a repo's files with it: one request, no retries
        calls.append(("list", repo_id))
        return SimpleNamespace(siblings=[SimpleNamespace(rfilename=p.name) for p in sorted(folder.iterdir())])

    def hf_hub_download(repo_id, filename, **kwargs):
        calls.append(("download", repo_id, filename))
        return str(folder / filename)

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", model_info)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    return calls


def ctrl_c_a_run(script, cwd, env):
    """Start a long run of `script` in a process group of its own, Ctrl-C the group once it has learned for a
    few seconds; returns (exit code, stdout, stderr, the processes left in the group after 10 s, the run folder)."""
    out_file, err_file = open(cwd / "stdout.txt", "w"), open(cwd / "stderr.txt", "w")
    args = ["--total-timesteps", "10000000", "--buffer-size", "1000", "--learning-starts", "100", "--batch-size", "8"]
    proc = subprocess.Popen([sys.executable, str(script), *args], cwd=cwd, env=env, stdout=out_file, stderr=err_file,
                            start_new_session=True)  # fmt: skip
    try:
        deadline = time.time() + 120
        while not list(cwd.glob("runs/*/events.out.tfevents.*")):
            assert proc.poll() is None, (cwd / "stderr.txt").read_text()
            assert time.time() < deadline, "the run never started"
            time.sleep(0.2)
        # stdout is a file, as under nohup: the first progress line comes at step 1,000 all the same
        while "global_step=" not in (cwd / "stdout.txt").read_text():
            assert proc.poll() is None, (cwd / "stderr.txt").read_text()
            assert time.time() < deadline, "no progress line in 120 s"
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)
        returncode = proc.wait(timeout=120)
        orphans = processes_left_in_group(proc.pid)
    finally:
        if proc.poll() is None or live_processes_in_group(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        out_file.close()
        err_file.close()
    stdout, stderr = (cwd / "stdout.txt").read_text(), (cwd / "stderr.txt").read_text()
    assert "Traceback" not in stderr and returncode == 0, stderr
    steps = [int(s.replace(",", "")) for s in re.findall(r"at step ([\d,]+)", stdout)]
    assert steps and steps[0] > 0, f"no training step before Ctrl-C:\n{stdout}"
    first = int(re.search(r"global_step=([\d,]+)", stdout).group(1).replace(",", ""))
    assert first == 1000, f"the first progress line came at step {first:,}"
    assert not orphans, f"processes left behind: {orphans}"
    (run_dir,) = (cwd / "runs").iterdir()
    return stdout, run_dir


def load_benchmark(name):
    """benchmarks/<name>.py as a module (benchmarks/ is a folder of programs, not a package)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parent.parent / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
