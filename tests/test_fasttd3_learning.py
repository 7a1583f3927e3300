"""``jax-td3 train --preset fasttd3-pendulum`` learns Pendulum (slow, opt in with ``pytest -m slow``).

The final evaluation (10 episodes after 20,000 steps) must be -250 or better on every one of seeds 0-4 with the
JAX backend and seeds 0-2 with the torch backend. A run is deterministic on one processor, but another
processor rounds differently and draws another trajectory; the measured margins are below.

Measured on a 2-core x86-64 machine (AVX2, no AVX-512), heavily loaded by other jobs (load 6-10): final
evaluations with the JAX backend -180.9, -158.2, -191.1, -120.3, -132.2 (seeds 0-4; 124-194 s of training a
seed), with the torch backend -175.5, -157.9, -188.3 (seeds 0-2; 449-467 s a seed).
"""

import json

import pytest

from jax_td3.cli import main

pytestmark = pytest.mark.slow

THRESHOLD = -250.0


@pytest.mark.parametrize("backend, seeds", [("jax", range(5)), ("torch", range(3))])
def test_fasttd3_pendulum_preset_reaches_minus_250_on_every_seed(backend, seeds, tmp_path):
    finals = {}
    for seed in seeds:
        out = tmp_path / f"{backend}-seed{seed}"
        assert main(["train", "--preset", "fasttd3-pendulum", "--backend", backend, "--seed", str(seed),
                     "--out", str(out), "--no-progress"]) == 0
        summary = json.loads((out / "summary.json").read_text())
        assert summary["env_steps"] == 20_000 and summary["algo"] == "fasttd3"
        finals[seed] = summary["final_eval_return"]
    assert all(final >= THRESHOLD for final in finals.values()), finals
