"""The docs cannot drift from the code: every relative link in README.md and docs/ resolves (files and
#anchors), and every --flag written next to a script's name is a flag of that script."""

import dataclasses
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SCRIPTS = ["dqn_frozenlake_tabular.py", "dqn_atari.py", "ddqn_atari.py", "dqn_atari_fast.py", "tune.py", "watch.py", "push_to_hub.py"]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FLAG = re.compile(r"(?<![\w-])--([a-z][a-z0-9-]*)")
SCRIPT_NAME = re.compile(r"(?<![\w/.-])(" + "|".join(re.escape(s) for s in SCRIPTS) + r")(?![\w-])")


def anchors(page):
    """GitHub's anchors for a page's headings: lower case, punctuation dropped, spaces to dashes."""
    headings = [line.lstrip("#").strip() for line in page.read_text().splitlines() if re.match(r"#{1,6} ", line)]
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def logical_lines(page):
    """The page's lines, with shell continuations (a trailing backslash) joined to the next line."""
    return page.read_text().replace("\\\n", " ").splitlines()


def script_flags(script):
    """Every flag the script's tyro Args dataclass accepts (and --help)."""
    if not (ROOT / script).exists():
        return None
    args = importlib.import_module(script.removesuffix(".py")).Args
    names = {"help"}
    for field in dataclasses.fields(args):
        flag = field.name.replace("_", "-")
        names |= {flag, f"no-{flag}"} if field.type in (bool, "bool") else {flag}
    return names


def flags_by_script(line):
    """(script, flag) for each --flag on a line after a script's name. tune.py's line gives the flags
    before a lone `--` to tune.py and those after it to the script it tunes; a command of another
    program (`python benchmarks/x.py dqn_atari.py --folder F`) gives none: a script is its argument."""
    program = re.search(r"\bpython3? (\S+)", line)
    if program and program.group(1) not in SCRIPTS:
        return []
    found = []
    names = list(SCRIPT_NAME.finditer(line))
    if names and names[0].group(1) == "tune.py" and " -- " in line:
        head, tail = line.split(" -- ", 1)
        tuned = [m.group(1) for m in SCRIPT_NAME.finditer(head) if m.group(1) != "tune.py"]
        found += [("tune.py", flag) for flag in FLAG.findall(head[names[0].end() :])]
        found += [(tuned[0], flag) for flag in FLAG.findall(tail)] if tuned else []
        return found
    for i, match in enumerate(names):
        end = names[i + 1].start() if i + 1 < len(names) else len(line)
        found += [(match.group(1), flag) for flag in FLAG.findall(line[match.end() : end])]
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(page):
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(target)
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(target)
    assert not broken, f"{page.name}: links that lead nowhere: {broken}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_flag_next_to_a_script_exists(page):
    known = {script: script_flags(script) for script in SCRIPTS}
    unknown = sorted(
        {f"{script} --{flag}" for line in logical_lines(page) for script, flag in flags_by_script(line) if known[script] is not None and flag not in known[script]}
    )
    assert not unknown, f"{page.name} names flags its scripts do not have: {unknown}"


def test_the_checks_catch_a_wrong_flag_and_a_broken_link(tmp_path):
    """The two checks above, on a page written to fail them."""
    assert flags_by_script("python dqn_atari.py --env-id X --no-such-flag 1") == [("dqn_atari.py", "env-id"), ("dqn_atari.py", "no-such-flag")]
    assert flags_by_script("python benchmarks/checkpoint_cost.py dqn_atari.py --folder F") == []
    assert "no-such-flag" not in script_flags("dqn_atari.py") and "no-cuda" in script_flags("dqn_atari.py")
    tuned = flags_by_script("python tune.py dqn_frozenlake_tabular.py --param gamma=0.8:0.99 --n-trials 3 -- --is-slippery")
    assert tuned == [("tune.py", "param"), ("tune.py", "n-trials"), ("dqn_frozenlake_tabular.py", "is-slippery")]
    page = tmp_path / "page.md"
    page.write_text("# A title\n[ok](#a-title) [missing](nowhere.md) [bad anchor](#no-title)\n")
    assert anchors(page) == {"a-title"}
    with pytest.raises(AssertionError, match=r"nowhere\.md.*#no-title"):
        test_every_relative_link_resolves(page)
