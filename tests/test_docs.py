"""The docs stay true to the tree: docs/design.md's map lists every file of the repository and
nothing that is gone; README's Quick start is two commands and CI runs its test command verbatim."""
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def tracked_files():
    try:
        listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                                check=True, timeout=60).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout (e.g. an sdist): no list of the tree's files")
    return [name for name in listed if (ROOT / name).exists()]


def map_entries():
    """The first word of each line of design.md's map (the first code block)."""
    text = (ROOT / "docs" / "design.md").read_text()
    block = re.search(r"^## The map\n.*?^```\n(.*?)^```", text, re.M | re.S).group(1)
    return [line.split()[0] for line in block.splitlines() if line.strip()]


def test_design_map_lists_every_file_and_no_stale_one():
    entries = map_entries()
    files = set(entries)
    # Committed benchmark reports are listed as their folder.
    missing = [name for name in tracked_files()
               if name not in files and not name.startswith("benchmarks/results/")]
    assert not missing, f"docs/design.md's map does not list {missing}"
    stale = [entry for entry in entries if not (ROOT / entry).exists()]
    assert not stale, f"docs/design.md's map lists what does not exist: {stale}"


def quick_start_commands():
    readme = (ROOT / "README.md").read_text()
    section = re.search(r"^## Quick start\n(.*?)^## ", readme, re.M | re.S).group(1)
    block = re.search(r"^```bash\n(.*?)^```", section, re.M | re.S).group(1)
    return [line.split("#")[0].strip() for line in block.splitlines() if line.split("#")[0].strip()]


def test_quick_start_is_two_commands_and_ci_runs_the_test_one():
    commands = quick_start_commands()
    assert commands == ["make bench", "make test"]
    ci = (ROOT / ".ci" / "run").read_text()
    ci_lines = [line.strip() for line in ci.splitlines()]
    assert "make test" in ci_lines
    # CI tests the install users get: it sets no variable of its own.
    assert not re.search(r"^\s*export\s", ci, re.M), "CI exports a variable README does not set"
