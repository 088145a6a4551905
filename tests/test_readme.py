"""README.md renders the diff of each vanilla/SHAPO pair; it must be the diff of the files as they
are. Refresh the README's blocks with `python tests/test_readme.py`."""

import difflib
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAIRS = (("trpo_lag.py", "trpo_lag_shapo.py"), ("ppo_lag.py", "ppo_lag_shapo.py"))


def rendered_diff(vanilla: str, shapo: str) -> str:
    a = (ROOT / vanilla).read_text().splitlines(keepends=True)
    b = (ROOT / shapo).read_text().splitlines(keepends=True)
    return "".join(difflib.unified_diff(a, b, vanilla, shapo, n=1))


def block(vanilla: str, shapo: str) -> str:
    return f"<!-- diff {vanilla} {shapo} -->\n```diff\n{rendered_diff(vanilla, shapo)}```\n<!-- end diff -->"


PATTERN = r"<!-- diff (\S+) (\S+) -->\n```diff\n.*?```\n<!-- end diff -->"


def test_readme_renders_the_current_diffs():
    readme = (ROOT / "README.md").read_text()
    found = re.findall(PATTERN, readme, flags=re.S)
    assert [(m.group(1), m.group(2)) for m in re.finditer(PATTERN, readme, flags=re.S)] == list(PAIRS)
    for vanilla, shapo in PAIRS:
        assert block(vanilla, shapo) in readme, f"stale diff of {shapo}: run python tests/test_readme.py"
    assert len(found) == len(PAIRS)


def test_readme_commands_are_the_ci_commands():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    install = "pip install -r requirements.txt && pip install --no-deps safety-gymnasium==1.0.0"
    assert install in readme and install in ci
    assert "python -m pytest -q" in readme and "python -m pytest -q" in ci


if __name__ == "__main__":
    path = ROOT / "README.md"
    text = path.read_text()
    for vanilla, shapo in PAIRS:
        text = re.sub(
            rf"<!-- diff {re.escape(vanilla)} {re.escape(shapo)} -->\n```diff\n.*?```\n<!-- end diff -->",
            lambda _, vanilla=vanilla, shapo=shapo: block(vanilla, shapo), text, flags=re.S,
        )
    path.write_text(text)
    sys.exit(0)
