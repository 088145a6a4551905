"""The repository's documents against the repository: the README stays a front door (at most 250 lines)
whose install and test commands are the CI's and whose excerpt of shapo_gradient is the code's; every
relative link of every Markdown document resolves inside the checkout; nothing points outside it."""

import re
import subprocess

from conftest import ROOT

LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def markdown_files():
    tracked = subprocess.run(["git", "ls-files", "*.md"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    return [ROOT / name for name in tracked] or sorted(ROOT.glob("**/*.md"))


def test_readme_is_a_front_door_with_the_ci_commands():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert len(readme.splitlines()) <= 250
    install = "pip install -r requirements.txt && pip install --no-deps safety-gymnasium==1.0.0"
    assert install in readme and install in ci
    for command in (
        "pip install -r requirements-track.txt",
        "ruff format --check .",
        "ruff check .",
        "python -m pytest -q",
    ):
        assert command in readme and command in ci


def test_readme_excerpt_of_shapo_gradient_is_the_code():
    """Each line of the README's Python excerpt (comments aside) is a line of shapo_gradient in both SHAPO scripts."""
    readme = (ROOT / "README.md").read_text()
    (excerpt,) = [block for block in re.findall(r"```python\n(.*?)```", readme, flags=re.S) if "flat_grad" in block]
    lines = [line.split("  #")[0].strip() for line in excerpt.splitlines() if line.strip()]
    assert len(lines) >= 8
    for script in ("trpo_lag_shapo.py", "ppo_lag_shapo.py"):
        source = (ROOT / script).read_text()
        body = source[source.index("def shapo_gradient(") : source.index("def pessimism_radius(")]
        code = {line.strip() for line in body.splitlines()}
        missing = [line for line in lines if line not in code]
        assert not missing, f"{script}: {missing}"


def test_every_relative_link_resolves_inside_the_checkout():
    broken = []
    for path in markdown_files():
        for target in LINK.findall(path.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            resolved = (path.parent / target).resolve()
            if not resolved.exists() or ROOT not in (resolved, *resolved.parents):
                broken.append(f"{path.relative_to(ROOT)}: {target}")
    assert not broken, broken


def test_nothing_refers_to_a_file_outside_the_repository():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    texts = [
        name
        for name in tracked
        if name.endswith((".py", ".md", ".sh", ".txt", ".cff")) and name != "tests/test_readme.py"
    ]
    assert texts, "git ls-files found nothing"
    outside = [name for name in texts if re.search(r"\.\./shared|SPEC\.md|SPEC §", (ROOT / name).read_text())]
    assert not outside, outside
    assert (ROOT / "LICENSE").read_text().startswith("MIT License") and (ROOT / "CITATION.cff").exists()
