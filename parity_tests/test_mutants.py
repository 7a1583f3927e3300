"""The cross-checker finds the catalogue's bugs where they first act, and stays quiet on correct code."""

from __future__ import annotations

import ast
import pathlib

import pytest

import torch_ref
from jax_td3.adapters.fasttd3_torch_ref import FastTD3TorchRefAdapter
from jax_td3.adapters.torch_ref import TorchRefAdapter, make_agent
from jax_td3.config import make_config
from jax_td3.convert import make_fasttd3_agent
from jax_td3.errors import ConfigError
from jax_td3.parity import compare_adapters, mutants, run_parity

# The catalogue's tests run at these settings; the false-alarm sweep below uses none of them.
CATALOGUE_CONFIG = make_config("td3", obs_dim=3, act_dim=2, hidden=(16, 16), batch_size=32)
# FastTD3's bugs: small networks, 11 atoms on +-5, n-step windows of up to 3 steps.
FASTTD3_CONFIG = make_config("fasttd3", obs_dim=3, act_dim=2, hidden=(16, 16), critic_hidden=(16, 16),
                             num_atoms=11, v_min=-5.0, v_max=5.0, n_step=3, batch_size=32)
CONFIGS = {"td3": CATALOGUE_CONFIG, "fasttd3": FASTTD3_CONFIG}
CATALOGUE_SEED = 3
UPDATES = 6
UPDATE_LEVEL = [m.name for m in mutants.CATALOGUE if m.level == "update"]


def test_the_catalogue_covers_the_known_bugs():
    assert len(mutants.CATALOGUE) >= 15
    assert len(mutants.MUTANTS) == len(mutants.CATALOGUE)   # names unique
    for mutant in mutants.CATALOGUE:
        assert mutant.origin and "\n" not in mutant.origin, mutant.name
        assert mutant.level in ("update", "run")
        assert (mutant.agent_class is None) == (mutant.level == "run"), mutant.name


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_hooked_reference_is_the_reference_bit_for_bit(dtype):
    """With no hook changed, the catalogue's base class computes exactly what torch_ref.TD3 computes."""
    config = CATALOGUE_CONFIG
    hooked = make_agent(config, dtype)
    hooked.__class__ = mutants.HookedTD3
    report = compare_adapters(TorchRefAdapter(config, dtype), TorchRefAdapter(config, dtype, agent=hooked), config,
                              dtype=dtype, updates=UPDATES, seed=CATALOGUE_SEED, tol=0.0, resync=False)
    assert report.passed, report.table()
    assert all(stats.max_abs == 0.0 for stats in report.quantities.values())


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_hooked_fasttd3_reference_is_the_reference_bit_for_bit(dtype):
    """With no hook changed, HookedFastTD3 computes exactly what torch_ref.FastTD3 computes."""
    config = FASTTD3_CONFIG
    hooked = make_fasttd3_agent(config, dtype)
    hooked.__class__ = mutants.HookedFastTD3
    reference = FastTD3TorchRefAdapter(config, dtype)
    report = compare_adapters(reference, FastTD3TorchRefAdapter(config, dtype, agent=hooked), config, dtype=dtype,
                              updates=UPDATES, seed=CATALOGUE_SEED, tol=0.0, resync=False)
    assert report.passed, report.table()
    assert all(stats.max_abs == 0.0 for stats in report.quantities.values())


def test_the_fasttd3_bugs_override_only_the_references_named_steps():
    """No copy of the reference's update: each FastTD3 bug replaces one of torch_ref.FastTD3's own steps."""
    steps = {"bootstrap_discount", "target_projection", "cdq_choice"}
    assert steps <= set(vars(torch_ref.FastTD3))
    assert set(vars(mutants.HookedFastTD3)) & set(vars(torch_ref.FastTD3)) == {"__doc__", "__module__"}
    for mutant in (m for m in mutants.CATALOGUE if m.algo == "fasttd3"):
        own = {name for name in vars(mutant.agent_class) if not name.startswith("__")}
        assert len(own) == 1 and own <= steps, (mutant.name, own)


def test_the_catalogue_has_fasttd3_bugs_and_keeps_algorithms_apart():
    fasttd3 = [m for m in mutants.CATALOGUE if m.algo == "fasttd3"]
    assert len(fasttd3) >= 3
    assert all(issubclass(m.agent_class, mutants.HookedFastTD3) for m in fasttd3)
    assert all(m.agent_class is None or issubclass(m.agent_class, mutants.HookedTD3)
               for m in mutants.CATALOGUE if m.algo == "td3")
    with pytest.raises(ConfigError, match="fasttd3"):
        fasttd3[0].agent(CATALOGUE_CONFIG)
    with pytest.raises(ConfigError, match="td3"):
        mutants.get("max-twin-target").agent(FASTTD3_CONFIG)


def test_the_fasttd3_bugs_act_where_the_catalogue_says():
    """The data-dependent updates are the draws' own: with n_step 1 no window is longer than one step (the
    catalogue's setting raises it), and a clamped target lands on an atom in the first batch."""
    one_step = FASTTD3_CONFIG.replace(n_step=1)
    discount = mutants.get("fasttd3-one-step-discount")
    assert discount.config(one_step).n_step == 3
    with pytest.raises(ValueError, match="never holds"):
        mutants.first_update_where(one_step, 0, lambda batch, noise: bool((batch[6] != one_step.gamma).any()),
                                   limit=50)
    assert mutants.get("fasttd3-projection-on-atom-lost").expect(FASTTD3_CONFIG, CATALOGUE_SEED) == ("projected", 1)
    softmax = mutants.get("fasttd3-softmax-over-batch")
    assert [softmax.expect(FASTTD3_CONFIG, CATALOGUE_SEED, dtype) for dtype in ("float64", "float32")] == [
        ("projected", 1), ("projected", 1)]


def test_the_parity_command_runs_a_fasttd3_mutant_and_refuses_the_other_algorithm(capsys):
    import json

    from jax_td3.cli import main

    for args in (["--mutant", "fasttd3-cdq-per-batch"], ["--algo", "fasttd3", "--mutant", "max-twin-target"]):
        assert main(["parity", *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--algo" in err[0], err
    code = main(["parity", "--algo", "fasttd3", "--mutant", "fasttd3-cdq-per-batch", "--obs-dim", "3", "--act-dim",
                 "2", "--hidden", "16,16", "--critic-hidden", "16,16", "--num-atoms", "11", "--v-min", "-5",
                 "--v-max", "5", "--batch-size", "32", "--seed", str(CATALOGUE_SEED), "--dtype", "float32", "--json"])
    document = json.loads(capsys.readouterr().out)
    assert code == 1 and document["mutant"] == "fasttd3-cdq-per-batch"
    assert document["first_divergence"]["quantity"] == document["expected"]["quantity"] == "cdq_choice"
    assert document["first_divergence"]["update"] == document["expected"]["update"] == 2


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", UPDATE_LEVEL)
def test_each_bug_is_found_where_it_first_acts(name, dtype):
    mutant = mutants.get(name)
    config = CONFIGS[mutant.algo]
    expected = mutant.expect(config, CATALOGUE_SEED, dtype)
    if expected is None:
        pytest.skip(f"{name} is too small for float32's tolerances (float64 finds it)")
    quantity, update = expected
    report = mutants.mutant_parity(name, config, dtype=dtype, updates=max(UPDATES, update),
                                   seed=CATALOGUE_SEED)
    assert not report.passed
    first = report.first_divergence
    assert (first.quantity, first.update) == (quantity, update), report.table()


def test_a_data_dependent_bug_is_found_at_the_update_its_data_arrives():
    """done-mask-ignored acts at the first batch holding a terminal transition: with batch 4, not update 1."""
    config = CATALOGUE_CONFIG.replace(batch_size=4)
    quantity, update = mutants.get("done-mask-ignored").expect(config, seed=0)
    assert update > 1
    report = mutants.mutant_parity("done-mask-ignored", config, updates=update + 2, seed=0)
    assert (report.first_divergence.quantity, report.first_divergence.update) == (quantity, update)


# Seeds and sizes the catalogue never used: 4 network/batch/box shapes x 5 seeds in float64, and 2 x 2 in
# float32 (each shape compiles once; the seeds then cost a fraction of a second each).
SWEEP_SHAPES = [dict(obs_dim=5, act_dim=1, hidden=(8, 8), batch_size=8),
                dict(obs_dim=2, act_dim=3, hidden=(12, 12), batch_size=16, action_low=(-1.0, 0.0, -2.0),
                     action_high=(1.0, 3.0, 0.5)),
                dict(obs_dim=4, act_dim=2, hidden=(24, 8, 12), batch_size=24),
                dict(obs_dim=7, act_dim=2, hidden=(20,), batch_size=12, max_action=2.5)]


@pytest.mark.parametrize("shape", range(len(SWEEP_SHAPES)))
def test_no_false_alarm_on_correct_pairs_float64(shape):
    config = make_config("td3", **SWEEP_SHAPES[shape])
    for seed in range(100 + 10 * shape, 105 + 10 * shape):
        report = run_parity(config, dtype="float64", updates=10, seed=seed)
        assert report.passed, (seed, report.table())


@pytest.mark.parametrize("shape", [0, 2])
def test_no_false_alarm_on_correct_pairs_float32(shape):
    config = make_config("td3", **SWEEP_SHAPES[shape])
    for seed in (201 + shape, 211 + shape):
        report = run_parity(config, dtype="float32", updates=10, seed=seed)
        assert report.passed, (seed, report.table())


def test_no_product_code_imports_the_catalogue():
    """Only the parity command (and the whole-run mode it drives) may reach jax_td3/parity/mutants.py."""
    root = pathlib.Path(mutants.__file__).parents[1]
    allowed = {"cli/parity.py", "parity/run_level.py", "parity/mutants.py"}
    for path in root.rglob("*.py"):
        relative = path.relative_to(root).as_posix()
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            if any(n.endswith("parity.mutants") for n in names):
                assert relative in allowed, relative


def test_the_documentation_table_lists_every_bug():
    doc = (pathlib.Path(__file__).parents[1] / "docs" / "cross-checking.md").read_text()
    table = doc.split("## What the checker finds", 1)[1].split("\n## ", 1)[0]
    for mutant in mutants.CATALOGUE:
        assert f"| `{mutant.name}` |" in table, mutant.name
