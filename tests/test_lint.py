"""ruff (pycodestyle, pyflakes, import order; configured in pyproject.toml) finds nothing in the package,
the reference, the benchmark scripts, the tests and the parity tests. ruff comes with the ``test`` extra, at
the version pyproject.toml pins."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHECKED = ["jax_td3", "torch_ref", "benchmarks", "tests", "parity_tests"]


def test_ruff_is_clean_on_the_package_the_reference_the_benchmarks_and_the_tests():
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", *CHECKED],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
