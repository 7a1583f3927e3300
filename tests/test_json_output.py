"""Every command's --json prints exactly one JSON document on standard output, PyBullet environments included.

PyBullet's C code prints ``argv[0]=`` on standard output whenever an environment connects; the
commands send that (and any other library chatter) to standard error while they work. Each
command runs in its own process here, since the chatter is written below Python, on descriptor 1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("pybullet_envs_gymnasium", reason="the PyBullet environments (pip install 'jax-td3[envs]')")

ENV = "HalfCheetahBulletEnv-v0"
TINY = ["--hidden", "8,8", "--batch-size", "8"]


def jax_td3(*args, cwd) -> subprocess.CompletedProcess:
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "jax_td3.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env=environment, timeout=600)


def parsed(result: subprocess.CompletedProcess):
    """The whole of standard output as one JSON document (json.loads refuses anything before or after it)."""
    try:
        return json.loads(result.stdout)
    except json.JSONDecodeError as err:
        raise AssertionError(f"stdout is not one JSON document ({err}):\n{result.stdout[:500]}\n"
                             f"stderr:\n{result.stderr[-1500:]}") from None


@pytest.fixture(scope="module")
def pybullet_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pybullet") / "run"
    result = jax_td3("train", "--env", ENV, "--total-steps", "30", "--learning-starts", "10", *TINY,
                     "--eval-every", "30", "--eval-episodes", "1", "--no-progress", "--out", str(out), cwd=out.parent)
    assert result.returncode == 0, result.stderr[-2000:]
    return out


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_eval_json_on_pybullet(pybullet_run, backend):
    result = jax_td3("eval", str(pybullet_run), "--episodes", "1", "--backend", backend, "--json",
                     cwd=pybullet_run.parent)
    assert result.returncode == 0, result.stderr[-2000:]
    document = parsed(result)
    assert document["env"] == ENV and len(document["returns"]) == 1
    assert "argv[0]=" in result.stderr   # the chatter still exists; it went to stderr


def test_parity_run_json_on_pybullet(tmp_path):
    result = jax_td3("parity", "--run", "--env", ENV, "--total-steps", "15", "--learning-starts", "10", *TINY,
                     "--eval-every", "15", "--eval-episodes", "1", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    document = parsed(result)
    assert (document["mode"], document["env"], document["passed"], document["verdict"]) == ("run", ENV, True, None)


def test_parity_mutant_json(tmp_path):
    result = jax_td3("parity", "--mutant", "list", "--json", cwd=tmp_path)
    assert result.returncode == 0 and len(parsed(result)) >= 15
    result = jax_td3("parity", "--mutant", "polyak-swapped", *TINY, "--json", cwd=tmp_path)
    document = parsed(result)
    assert result.returncode == 1 and document["mutant"] == "polyak-swapped"
    assert document["first_divergence"]["quantity"] == document["expected"]["quantity"] == "critic_target.l1.weight"
    assert document["first_divergence"]["update"] == document["expected"]["update"] == 2
