"""The documentation: the site builds with strict warnings, every example runs and prints what the text
says, the README stays a front door, and the version is one and the same everywhere.

The examples run at a small size (``tests/docs_examples.py`` says how a page marks its size substitutions,
the output it claims, and the few blocks that cannot run here, with the reason); all pages run in one
process so that JAX and PyTorch are imported once for the Python examples.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
PAGES = ["README.md"] + sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md"))


def _env() -> dict:
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def test_site_builds_with_strict_warnings(tmp_path):
    """A broken link, a missing anchor or an API reference to a name that does not exist fails the build."""
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                           str(REPO / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")],
                          cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    for name in ("jax_td3.update.update", "jax_td3.run.training.train", "jax_td3.config.TD3Config",
                 "jax_td3.parity.update_level.run_parity", "torch_ref.td3.TD3"):
        assert f'id="{name}"' in api, f"{name} is missing from the API reference"


def test_every_example_runs_and_prints_what_the_text_says(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "tests" / "docs_examples.py"), "--workdir", str(tmp_path),
                           *PAGES], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=1800)
    report = done.stdout + done.stderr
    assert done.returncode == 0, report
    assert "ok   README.md" in report, report


def test_readme_is_a_front_door_that_links_every_page():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    for page in PAGES[1:]:
        assert f"]({page})" in readme, f"README.md does not link {page}"


def _changelog_release() -> str:
    """The newest released version that CHANGELOG.md names (the first heading after Unreleased)."""
    versions = re.findall(r"^## \[(\d+\.\d+\.\d+)\]", (REPO / "CHANGELOG.md").read_text(), flags=re.MULTILINE)
    assert versions, "CHANGELOG.md names no release"
    return versions[0]


def test_version_is_the_changelogs_newest_release():
    done = subprocess.run([sys.executable, "-m", "jax_td3.cli", "--version"], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == _changelog_release()


def test_checkpoints_record_the_version():
    from jax_td3 import __version__
    from jax_td3.run.checkpoint import decode, encode

    metadata, contents = decode(encode({"x": np.arange(3.0)}, {"step": 7}))
    assert metadata["jax_td3_version"] == __version__ and metadata["step"] == 7
    np.testing.assert_array_equal(contents["x"], np.arange(3.0))


def test_no_instruction_signals_processes_by_name():
    """Signalling by a name pattern reaches every matching process of everyone on the machine."""
    pattern = re.compile(r"\b(p" + r"kill|kill" + r"all)\b")
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True).stdout.split()
    if not tracked:  # not a git checkout: the files on disk
        tracked = [str(p.relative_to(REPO)) for p in REPO.rglob("*") if p.is_file() and ".git" not in p.parts]
    offenders = []
    for name in tracked:
        if name.endswith((".md", ".py", ".sh", ".toml", ".yml", ".txt")) or "/" not in name and "." not in name:
            text = (REPO / name).read_text(errors="replace") if (REPO / name).is_file() else ""
            offenders += [f"{name}: {line.strip()}" for line in text.splitlines() if pattern.search(line)]
    assert not offenders, "\n".join(offenders)
