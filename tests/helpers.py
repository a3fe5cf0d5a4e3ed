"""Helpers shared by the test files (pytest puts tests/ on sys.path)."""

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
