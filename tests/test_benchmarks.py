"""The benchmarks (``jax_td3.bench``, ``jax-td3 bench``): FLOP formula, the tuned PyTorch update's
correctness, a tiny run of the update suite, and the command's handling of bad input."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import jax_td3.bench
import torch_ref
from jax_td3.bench import flops
from jax_td3.bench.torch_tuned import TunedAgent
from jax_td3.cli import main
from jax_td3.config import make_config
from jax_td3.convert import make_torch_agent


def test_flops_match_a_hand_count_for_a_tiny_td3():
    # obs 3, act 1, hidden 4-5, batch 2. Sum of n_in * n_out: actor 3*4 + 4*5 + 5*1 = 37,
    # critic (3+1)*4 + 4*5 + 5*1 = 41; a matmul pass over a network costs 2 * B * sum = 4 * sum here.
    config = make_config("td3", obs_dim=3, act_dim=1, hidden=(4, 5))
    actor_pass, critic_pass = 4 * 37, 4 * 41
    critic_pass_no_first = 4 * (4 * 5 + 5 * 1)   # input gradients skip the first layer
    actor_pass_no_first = 4 * (4 * 5 + 5 * 1)
    every_update = (actor_pass                                   # target actor forward
                    + 2 * critic_pass                            # two target critics forward
                    + 2 * critic_pass                            # two critics forward
                    + 2 * critic_pass                            # their weight gradients
                    + 2 * critic_pass_no_first)                  # their input gradients
    actor_update = (actor_pass + critic_pass                     # mu(s), Q1(s, mu(s))
                    + critic_pass                                # Q1 input gradients, first layer too
                    + actor_pass + actor_pass_no_first)          # actor weight and input gradients
    assert every_update + actor_update / 2 == 1694
    assert flops.update_flops(config, batch=2) == 1694

    ddpg = make_config("ourddpg", obs_dim=3, act_dim=1, hidden=(4, 5))
    assert flops.update_flops(ddpg, batch=2) == actor_pass + 3 * critic_pass + critic_pass_no_first + actor_update


def test_flops_of_stacked_agents_scale_with_the_count():
    config = make_config("td3", obs_dim=26, act_dim=6, hidden=(256, 256))
    one = sum(flops.gemm_flops(s) * c for s, c in flops.update_gemms(config, 256).items())
    eight = sum(flops.gemm_flops(s) * c for s, c in flops.update_gemms(config, 256, agents=8).items())
    assert eight == 8 * one == 8 * flops.update_flops(config, 256)
    # The twin critics are stacked products (stack 2); the actor step's are single (stack 1, half the
    # updates). Hidden layer 256x256 at batch 100: forward and input-gradient products are (100, 256, 256).
    gemms = flops.update_gemms(config, 100)
    assert gemms[(2, 100, 256, 256)] == 3   # target critics, critics forward, critics input gradient
    assert gemms[(2, 256, 100, 256)] == 1   # critics weight gradient
    assert gemms[(1, 100, 256, 256)] == 3   # target actor; (mu forward, its input gradient, Q1 forward,
    #                                         Q1 input gradient) x 1/2


def _random_batch(generator, batch, obs_dim, act_dim):
    f64 = dict(generator=generator, dtype=torch.float64)
    return [torch.randn(batch, obs_dim, **f64), torch.rand(batch, act_dim, **f64) * 4 - 2,
            torch.randn(batch, obs_dim, **f64), torch.randn(batch, 1, **f64),
            (torch.rand(batch, 1, **f64) > 0.2).double()]


@pytest.mark.parametrize("algo", ["td3", "ourddpg"])
def test_tuned_update_equals_torch_ref_in_float64(algo):
    config = make_config(algo, obs_dim=5, act_dim=2, max_action=2.0, hidden=(16, 8), batch_size=32)
    torch.manual_seed(0)
    reference = make_torch_agent(config, torch.float64)
    tuned = TunedAgent(config, dtype=torch.float64)
    tuned.load_reference(reference)
    generator = torch.Generator().manual_seed(1)
    for _ in range(5):  # covers TD3's delayed actor step twice
        batch = _random_batch(generator, 32, 5, 2)
        noise = torch.randn(32, 2, generator=generator, dtype=torch.float64)
        reference.train(torch_ref.Batch(*batch), noise=noise)
        tuned.update(batch, noise)

    pairs = [(tuned.actor, reference.actor, [reference.actor.names]),
             (tuned.actor_target, reference.actor_target, [reference.actor.names])]
    critic_names = ([reference.critic.q1_names, reference.critic.q2_names] if algo == "td3"
                    else [reference.critic.names])
    pairs += [(tuned.critic, reference.critic, critic_names),
              (tuned.critic_target, reference.critic_target, critic_names)]
    for stacked, module, members in pairs:
        for layer, (w, b) in enumerate(zip(stacked.weights, stacked.biases)):
            for member, names in enumerate(members):
                linear = getattr(module, names[layer])
                np.testing.assert_allclose(w[member].detach().numpy(), linear.weight.detach().T.numpy(),
                                           rtol=1e-12, atol=1e-14)
                np.testing.assert_allclose(b[member, 0].detach().numpy(), linear.bias.detach().numpy(),
                                           rtol=1e-12, atol=1e-14)
    # The update moved the weights (the comparison above is not between two untouched copies).
    assert not torch.equal(tuned.actor.weights[0][0], tuned.actor_target.weights[0][0])


@pytest.mark.slow
def test_compiled_tuned_update_equals_eager_in_float64():
    config = make_config("td3", obs_dim=5, act_dim=2, hidden=(16, 8), batch_size=32)
    reference = make_torch_agent(config, torch.float64)
    eager, compiled = (TunedAgent(config, dtype=torch.float64) for _ in range(2))
    for agent in (eager, compiled):
        agent.load_reference(reference)
    torch._dynamo.reset()
    compiled.compile()
    generator = torch.Generator().manual_seed(2)
    for _ in range(4):
        batch = _random_batch(generator, 32, 5, 2)
        noise = torch.randn(32, 2, generator=generator, dtype=torch.float64)
        eager.update(batch, noise)
        compiled.update(batch, noise)
    for mine, theirs in ((compiled.actor, eager.actor), (compiled.critic_target, eager.critic_target)):
        for a, b in zip(mine.parameters(), theirs.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_tuned_sample_draws_whole_rows_of_the_device_buffer():
    config = make_config("td3", obs_dim=3, act_dim=1, batch_size=64)
    agent = TunedAgent(config, replay_capacity=10)
    rows = np.arange(10, dtype=np.float32)[:, None]
    agent.add(rows * np.ones((1, 3)), rows, rows * np.ones((1, 3)) + 100, rows + 200, rows + 300)
    (obs, action, next_obs, reward, not_done), noise = agent.sample(torch.Generator().manual_seed(0))
    index = action[:, 0]
    assert set(index.tolist()) <= set(range(10)) and len(set(index.tolist())) > 1
    torch.testing.assert_close(obs, index[:, None].expand(64, 3))
    torch.testing.assert_close(next_obs, index[:, None].expand(64, 3) + 100)
    torch.testing.assert_close(reward[:, 0], index + 200)
    torch.testing.assert_close(not_done[:, 0], index + 300)
    assert noise.shape == (64, 1)


def _tiny_run(tmp_path, impls):
    code = main(["bench", "--algos", "td3", "--hidden", "8-8", "--batch", "4", "--impls", *impls,
                 "--repetitions", "2", "--min-rep-time", "0.002", "--scan-updates", "2", "--vmap-agents", "2",
                 "--device", "cpu", "--out-dir", str(tmp_path), "--name", "tiny", "--no-progress"])
    assert code == 0
    results = json.loads((tmp_path / "tiny.json").read_text())
    assert results["machine"]["versions"]["jax"] and results["machine"]["versions"]["torch"]
    assert len(results["loadavg_before"]) == 3
    rows = {row["impl"]: row for row in results["rows"]}
    assert list(rows) == impls
    config = make_config("td3", obs_dim=26, act_dim=6, hidden=(8, 8))
    for impl, row in rows.items():
        if impl == "torch_cudagraph":
            assert row["status"] == "skipped" and "CUDA" in row["reason"]
            continue
        assert row["status"] == "ok", row
        assert len(row["per_update_s"]["reps"]) == 2
        assert row["per_update_s"]["min"] <= row["per_update_s"]["median"] <= row["per_update_s"]["max"]
        assert row["flops_per_update"] == flops.update_flops(config, 4)
        assert row["floor_fraction"] > 0 and row["updates_per_s"] > 0
    table = (tmp_path / "tiny.md").read_text()
    for impl in impls:
        assert f"| td3 | 8-8 | 4 | {impl} |" in table
    for suffix in ("updates", "floor"):
        assert (tmp_path / f"tiny-{suffix}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return rows


def test_tiny_run_writes_json_markdown_and_plots(tmp_path):
    rows = _tiny_run(tmp_path, ["torch_ref", "torch_tuned", "torch_cudagraph", "jax_jit"])
    assert "CUDA graphs need a CUDA device" in (tmp_path / "tiny.md").read_text()
    assert rows["jax_jit"]["updates_per_call"] == 1


@pytest.mark.slow
def test_tiny_run_of_every_implementation(tmp_path):
    rows = _tiny_run(tmp_path, ["torch_ref", "torch_tuned", "torch_compile", "torch_cudagraph", "jax_jit",
                                "jax_scan", "jax_vmap"])
    assert rows["jax_scan"]["updates_per_call"] == 2
    assert rows["jax_vmap"]["agents"] == 2 and rows["jax_vmap"]["updates_per_call"] == 2


def test_bad_input_is_one_line_and_exit_2(capsys):
    assert main(["bench", "--min-rep-time", "0", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "jax-td3 bench: error: --min-rep-time must be > 0"


def test_a_mode_rejects_the_suites_flags(capsys):
    # Given with a mode, a suite flag would be ignored; it is refused instead.
    assert main(["bench", "--quick", "--scan-updates", "5", "compiled", "native"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("jax-td3 bench: error: --quick, --scan-updates only apply to the update suite, "
                   "not to 'bench compiled'")


def test_a_bad_value_of_a_mode_is_named_by_its_flag(capsys, tmp_path):
    assert main(["bench", "compiled", "update-speed", "--flag-sets", "default,nope", "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("jax-td3 bench: error: unknown --flag-sets nope; choose from default, "), err
    assert list(tmp_path.iterdir()) == []


BENCH_MODULES = sorted(f"jax_td3.bench.{m.name}" for m in pkgutil.iter_modules(jax_td3.bench.__path__))


def test_importing_the_benchmarks_imports_no_environment_library():
    # Every module of the package (the accelerator machine has neither Gymnasium nor PyBullet).
    assert {"jax_td3.bench.suite", "jax_td3.bench.implementations", "jax_td3.bench.compiled",
            "jax_td3.bench.soak", "jax_td3.bench.e2e"} <= set(BENCH_MODULES)
    code = (f"import sys, jax_td3.bench, jax_td3.cli.bench, {', '.join(BENCH_MODULES)}; "
            "print(sorted(m for m in ('gymnasium', 'pybullet', 'pybullet_envs_gymnasium') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_command_does_not_depend_on_the_repository(tmp_path):
    # From another directory: the help needs nothing from the checkout, and the default output
    # directory is benchmarks/results under the current directory, not inside the package.
    out = subprocess.run([sys.executable, "-m", "jax_td3.cli", "bench", "--help"], capture_output=True, text=True,
                         cwd=tmp_path, check=True)
    assert "--e2e-only" in out.stdout and "compiled" in out.stdout
    assert "benchmarks/results in the current directory" in " ".join(out.stdout.split())
    assert list(tmp_path.iterdir()) == []


def _failing_grid(tmp_path, hidden, impl="jax_jit"):
    # 9999999-9999999 is refused before anything is built (its train state alone is thousands of TiB).
    return main(["bench", "--algos", "td3", "--hidden", *hidden, "--batch", "2", "--impls", impl,
                 "--repetitions", "1", "--min-rep-time", "0.002", "--device", "cpu", "--out-dir", str(tmp_path),
                 "--name", "bad", "--no-progress"])


def test_a_grid_whose_every_cell_fails_exits_1_naming_them(tmp_path, capsys, recwarn):
    assert _failing_grid(tmp_path, ["9999999-9999999"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("jax-td3 bench: error: every cell failed (1): td3 9999999-9999999 b2 jax_jit; "), err
    assert "refused before running" in err and "TiB" in err
    # The results are still written; no empty plots (and no legend warning) of a grid that measured nothing.
    rows = json.loads((tmp_path / "bad.json").read_text())["rows"]
    assert [row["status"] for row in rows] == ["failed"]
    assert "failed: refused before running" in (tmp_path / "bad.md").read_text()
    assert not list(tmp_path.glob("*.png"))
    assert not [w for w in recwarn if "legend" in str(w.message)]


def test_a_partly_failed_grid_lists_the_failed_cells_and_writes_the_rest(tmp_path, capsys, recwarn):
    assert _failing_grid(tmp_path, ["8-8", "9999999-9999999"], impl="torch_ref") == 0  # torch_ref: no compiling
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [f"jax-td3 bench: 1 of 2 cells failed: td3 9999999-9999999 b2 torch_ref "
                                        f"(reasons in {tmp_path / 'bad.md'})"]
    rows = json.loads((tmp_path / "bad.json").read_text())["rows"]
    assert [row["status"] for row in rows] == ["ok", "failed"]
    assert (tmp_path / "bad-updates.png").is_file()
    assert not [w for w in recwarn if "legend" in str(w.message)]
