"""benchmarks/gpu_check.sh --smoke: every step of the GPU check, tiny and on the CPU, so the script
cannot rot while no GPU is at hand."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_smoke_runs_every_step_and_records_them(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--smoke", "--out-dir", str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    log = (tmp_path / "gpu-cpu-smoke.log").read_text() if (tmp_path / "gpu-cpu-smoke.log").exists() else ""
    assert done.returncode == 0, done.stdout + done.stderr + log[-3000:]
    result = json.loads((tmp_path / "gpu-cpu-smoke.json").read_text())
    statuses = {s["step"]: s["status"] for s in result["steps"]}
    assert list(statuses) == ["parity", "bench", "fasttd3", "seeds", "brax", "gym", "playground"]
    assert statuses["playground"].startswith("skipped: smoke"), statuses
    for step in ("parity", "bench", "fasttd3", "seeds", "gym"):
        assert statuses[step] == "passed", (step, statuses)
    # Without Brax the step says so; with it, it must pass.
    assert statuses["brax"] == "passed" or statuses["brax"].startswith("skipped: Brax is not installed"), statuses
    assert result["smoke"] and "cpu" in result["jax_devices"][0].lower()
    bench = json.loads((tmp_path / "gpu-cpu-smoke-bench.json").read_text())
    measured = {row["impl"] for row in bench["rows"] if row["status"] == "ok" and row["updates_per_s"] > 0}
    assert measured == {"jax_jit", "jax_scan", "torch_tuned"}, [(r["impl"], r["status"]) for r in bench["rows"]]
    # FastTD3: the fast PyTorch update, and the JAX update where this checkout has it (else its row says why not).
    fasttd3 = {row["impl"]: row for row in
               json.loads((tmp_path / "gpu-cpu-smoke-fasttd3.json").read_text())["rows"]}
    assert fasttd3["torch_tuned"]["status"] == "ok" and fasttd3["torch_tuned"]["updates_per_s"] > 0
    if importlib.util.find_spec("jax_td3.fasttd3.update") is not None:
        assert fasttd3["jax_jit"]["status"] == "ok" and fasttd3["jax_jit"]["updates_per_s"] > 0
    else:
        assert fasttd3["jax_jit"]["status"] == "skipped" and "jax_td3.fasttd3.update" in fasttd3["jax_jit"]["reason"]
    assert result["gym_run"]["env_steps"] == 400 and result["gym_run"]["updates"] == 200
    assert "| parity | passed |" in (tmp_path / "gpu-cpu-smoke.md").read_text()
