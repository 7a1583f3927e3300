"""mypy (configured in pyproject.toml: which modules must be fully annotated, which third-party packages
have no types) finds nothing in the package and the reference. mypy comes with the ``test`` extra, at
the version pyproject.toml pins; without it the check is skipped, saying so."""

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None,
                    reason="mypy is not installed (pip install 'jax-td3[test]')")
def test_mypy_is_clean_on_the_package_and_the_reference():
    # The files and settings are pyproject.toml's; mypy keeps its incremental cache in .mypy_cache.
    done = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          check=False)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]


def _stub_exports() -> dict[str, str]:
    """``{name: module}`` that jax_td3/__init__.pyi re-exports."""
    tree = ast.parse((ROOT / "jax_td3" / "__init__.pyi").read_text())
    return {alias.asname or alias.name: node.module for node in tree.body if isinstance(node, ast.ImportFrom)
            for alias in node.names}


def _lazy_modules() -> dict[str, tuple[str, ...]]:
    """``_EXPORTS`` of jax_td3/__init__.py ({module: names}), read from its source."""
    for node in ast.parse((ROOT / "jax_td3" / "__init__.py").read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_EXPORTS" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError("jax_td3/__init__.py has no _EXPORTS")


def test_the_type_stub_of_the_package_names_what_it_loads():
    # __init__.pyi is what type checkers see of the lazily loaded top level; it must not drift from it.
    lazy = {name: module for module, names in _lazy_modules().items() for name in names}
    assert _stub_exports() == lazy
