"""Without PyTorch (the torch extra): JAX training, evaluation of a JAX checkpoint and the compiled loop
work, and what needs PyTorch says so in one line.

The commands run in a subprocess where ``import torch`` raises ModuleNotFoundError, as in an environment
where it was never installed: a ``sitecustomize`` on PYTHONPATH puts a finder that refuses ``torch`` in
front of ``sys.meta_path``. One process runs every command, so JAX is imported once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

NO_TORCH = '''
import sys


class _NoTorch:
    """Refuses torch and its submodules, as if PyTorch were not installed."""

    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _NoTorch())
'''

# Each command's exit status and stderr lines, as JSON on the last stdout line.
COMMANDS = '''
import contextlib, io, json, sys
from jax_td3.cli import main

out = sys.argv[1]
small = ["--total-steps", "300", "--learning-starts", "100", "--eval-every", "300", "--eval-episodes", "1",
         "--hidden", "16,16", "--batch-size", "32", "--no-progress"]
commands = {
    "train": ["train", "--env", "Pendulum-v1", *small, "--out", out + "/run"],
    "eval": ["eval", out + "/run", "--episodes", "1"],
    "compiled": ["train", "--compiled", "--env", "Pendulum-v1", *small, "--out", out + "/compiled"],
    "backend_torch": ["train", "--env", "Pendulum-v1", "--backend", "torch", *small, "--out", out + "/torch"],
    "eval_torch": ["eval", out + "/run", "--episodes", "1", "--backend", "torch"],
    "export": ["export", out + "/run", "--to", "torch", out + "/agent.pt"],
    "parity": ["parity", "--updates", "2"],
    "bench": ["bench", "--algos", "td3", "--hidden", "8-8", "--batch", "4", "--impls", "torch_ref",
              "--repetitions", "1", "--min-rep-time", "0.001", "--no-plots", "--no-progress",
              "--out-dir", out + "/bench", "--name", "tiny"],
}
results = {}
for name, argv in commands.items():
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    results[name] = [code, [line for line in err.getvalue().splitlines() if line.strip()]]
print(json.dumps(results))
'''

INSTALL = "PyTorch is not installed: pip install 'jax-td3[torch]'"


@pytest.fixture(scope="module")
def without_torch(tmp_path_factory):
    """(results of COMMANDS, their output directory), run where torch cannot be imported."""
    blocker = tmp_path_factory.mktemp("no_torch")
    (blocker / "sitecustomize.py").write_text(NO_TORCH)
    out = tmp_path_factory.mktemp("runs")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), str(REPO), os.environ.get("PYTHONPATH", "")])}
    probe = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True, text=True, env=env)
    assert probe.returncode != 0 and "No module named 'torch'" in probe.stderr   # the blocker works
    done = subprocess.run([sys.executable, "-c", COMMANDS, str(out)], capture_output=True, text=True, env=env,
                          cwd=out)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), out


def test_jax_training_evaluation_and_the_compiled_loop_run_without_torch(without_torch):
    results, out = without_torch
    for name in ("train", "eval", "compiled"):
        assert results[name][0] == 0, (name, results[name][1][-5:])
    for run in ("run", "compiled"):
        summary = json.loads((out / run / "summary.json").read_text())
        assert summary["env_steps"] == 300 and summary["updates"] == 200


@pytest.mark.parametrize("name, needed_by", [
    ("backend_torch", "--backend torch"),
    ("eval_torch", "--backend torch"),
    ("export", "export --to torch"),
    ("parity", "parity against the PyTorch reference"),
])
def test_what_needs_torch_says_so_in_one_line(without_torch, name, needed_by):
    results, out = without_torch
    code, stderr = results[name]
    command = name.split("_")[0].replace("backend", "train")
    assert code == 2 and stderr == [f"jax-td3 {command}: error: {INSTALL} (needed by {needed_by})"], stderr
    assert not (out / "torch").exists() and not (out / "agent.pt").exists()   # refused before writing


def test_bench_skips_the_pytorch_rows_naming_the_extra(without_torch):
    results, out = without_torch
    code, stderr = results["bench"]
    assert code == 1 and len(stderr) == 1 and INSTALL in stderr[0], stderr   # nothing measured: exit 1
    rows = json.loads((out / "bench" / "tiny.json").read_text())["rows"]
    assert [(row["impl"], row["status"]) for row in rows] == [("torch_ref", "skipped")]
    assert rows[0]["reason"].startswith(INSTALL)
