"""Soak (opt in: ``pytest -m soak``, ~5-10 min on 2 CPU cores; run it under the heavy-job lock):
200,000 steps of ``train --compiled`` and 50,000 steps of the Gymnasium loop, each in a
subprocess whose RSS is sampled from /proc; memory must not grow beyond the replay rows
written plus a fixed slack (the bound and its reasons: ``jax_td3/bench/soak.py``; the same
cases as a command: ``jax-td3 bench soak``)."""

import math

import pytest

from jax_td3.bench.soak import CASES, run_case

pytestmark = pytest.mark.soak


@pytest.mark.parametrize("name", ["compiled", "gymnasium"])
def test_memory_stays_flat_over_a_long_run(tmp_path, name):
    case = CASES[name]
    result = run_case(case, tmp_path / name)
    assert result["returncode"] == 0, result["output_tail"]
    assert set(result["rss_mib_at_each_evaluation"]) == set(range(0, case.total_steps + 1, case.eval_every))
    assert math.isfinite(result["final_eval_return"])
    assert result["summary"]["env_steps"] == case.total_steps
    assert result["growth_mib"] <= result["growth_limit_mib"], result
    assert result["peak_growth_mib"] <= result["growth_limit_mib"], result
    assert result["rss_slope_kib_per_1000_steps"] <= result["slope_limit_kib_per_1000_steps"], result
