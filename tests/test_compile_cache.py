"""The on-disk cache of compiled programs (``jax_td3/compile_cache.py``): where it lives, and that a second run of
a configuration loads every program instead of compiling it and gives the same result, bit for bit."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import jaxlib

from jax_td3.compile_cache import ENV_VAR, cache_dir


def test_where_the_cache_lives(monkeypatch, tmp_path):
    for off in ("off", "0", "OFF"):
        monkeypatch.setenv(ENV_VAR, off)
        assert cache_dir() is None
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "mine"))
    chosen = cache_dir()
    assert chosen.parent == tmp_path / "mine" and chosen.name.startswith(f"jaxlib-{jaxlib.__version__}-")
    monkeypatch.delenv(ENV_VAR)
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "jax's"))
    assert cache_dir() == tmp_path / "jax's"        # the user's JAX setting, as it is
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir().parent == tmp_path / "xdg" / "jax-td3" / "xla"
    assert cache_dir().name == chosen.name          # one subdirectory per jaxlib and processor


def _train(out: Path, cache: str, seed: int = 0) -> dict:
    command = [sys.executable, "-m", "jax_td3.cli", "train", "--env", "Pendulum-v1", "--hidden", "8,8",
               "--seed", str(seed), "--batch-size", "16", "--total-steps", "300", "--learning-starts", "100",
               "--updates-per-call", "50", "--eval-every", "300", "--eval-episodes", "1", "--dtype", "float64",
               "--no-progress", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, ENV_VAR: cache}, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads((out / "summary.json").read_text())


def test_a_second_run_loads_its_programs_and_learns_the_same(tmp_path):
    cache = tmp_path / "cache"
    first = _train(tmp_path / "first", str(cache))
    entries = sorted(p.name for p in cache.rglob("*-cache"))
    assert any(name.startswith("jit_multi_update-") for name in entries), entries
    assert any(name.startswith("jit_initial-") for name in entries), entries
    second = _train(tmp_path / "second", str(cache))
    assert sorted(p.name for p in cache.rglob("*-cache")) == entries   # nothing compiled: every program loaded
    other_seed = _train(tmp_path / "seed1", str(cache), seed=1)
    assert sorted(p.name for p in cache.rglob("*-cache")) == entries   # the seed is data, not part of a program
    assert other_seed["final_eval_return"] != first["final_eval_return"]
    uncached = _train(tmp_path / "uncached", "off")
    for summary in (second, uncached):
        assert summary["final_eval_return"] == first["final_eval_return"]
    for run in ("second", "uncached"):
        assert _learned(tmp_path / run) == _learned(tmp_path / "first")


def _learned(run: Path) -> list[list[dict]]:
    """Every row of metrics.csv and episodes.csv without the wall-clock columns."""
    tables = []
    for name in ("metrics.csv", "episodes.csv"):
        with open(run / name, newline="") as f:
            rows = list(csv.DictReader(f))
        tables.append([{k: v for k, v in row.items() if k not in ("wall_time", "steps_per_second")} for row in rows])
    assert tables[0] and tables[1]
    return tables
