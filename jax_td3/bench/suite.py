"""The update suite: its settings, the grid loop, and the files a run writes (JSON, Markdown, plots).

``run_suite`` times every (algorithm, hidden sizes, batch, implementation) cell of a
``SuiteSettings`` grid and, if asked, the end-to-end training runs (``e2e``). The JSON is
rewritten after every cell, so an interrupted run keeps everything measured so far.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from jax_td3.bench import torch_if_installed
from jax_td3.errors import ConfigError, require_torch
from jax_td3.run.checks import format_bytes

if TYPE_CHECKING:
    from jax_td3.config import TD3Config

DEFAULT_ALGOS = ("td3", "ourddpg")   # OurDDPG is the DDPG the suite times (TD3's networks, one critic)
ALGOS = (*DEFAULT_ALGOS, "fasttd3")    # FastTD3 only when asked for (--algos fasttd3): its cells are big
GRIDS = ("default", "quick", "full")
FULL_HIDDEN = ((64, 64), (256, 256), (400, 300), (1024, 1024))
FULL_BATCH = (100, 256, 1024, 4096)
DEFAULT_HIDDEN = ((256, 256),)    # the default and quick grids
DEFAULT_BATCH = (100, 256)
DEVICES = ("auto", "cpu", "cuda")
# HalfCheetahBulletEnv-v0's observation and action sizes.
OBS_DIM, ACT_DIM = 26, 6
# FastTD3: a humanoid's sizes (DeepMind Control humanoid: 67 observations, 21 actions). Its hidden sizes
# are the critic's; the actor's are half of each (FastTD3's 1024-512-256 critic, 512-256-128 actor).
FASTTD3_OBS_DIM, FASTTD3_ACT_DIM = 67, 21
FASTTD3_HIDDEN = ((1024, 512, 256),)
FASTTD3_BATCH = (4096, 32768)      # the grid of a FastTD3-only run (FastTD3's default batch is 32,768)
CALL_BUDGET_S = 1.0


@dataclasses.dataclass(frozen=True)
class SuiteSettings:
    """What the suite times; None means the grid's default (``record`` fills it in)."""

    grid: str = "default"
    """"default": td3 and ourddpg, 256-256 x batch 100, 256, 5 repetitions of >= 0.3 s;
    "quick": td3 only, 3 repetitions of >= 0.1 s; "full": 4 hidden sizes x 4 batch sizes."""
    algos: tuple[str, ...] | None = None
    """None: td3 and ourddpg (quick: td3). With fasttd3 alone, hidden and batch default to FastTD3's
    (critic 1024-512-256, batch 4096 and 32768)."""
    hidden: tuple[tuple[int, ...], ...] | None = None
    batch: tuple[int, ...] | None = None
    impls: tuple[str, ...] | None = None
    """Implementations to time (``implementations.IMPLEMENTATIONS``); None: all of them."""
    repetitions: int | None = None
    min_rep_time: float | None = None
    """Seconds each repetition lasts at least."""
    scan_updates: int = 100
    """K of jax_scan (fewer in big cells: about ``CALL_BUDGET_S`` per call)."""
    vmap_agents: int = 8
    """N of jax_vmap (fewer in big cells)."""
    device: str = "auto"
    """PyTorch's device; "auto": cuda when PyTorch sees one. JAX uses its default backend."""
    torch_threads: int | None = None
    """PyTorch intra-op threads (None: PyTorch's default, one per core)."""
    seed: int = 0

    def record(self) -> dict:
        """The grid with its defaults filled in and the device resolved, as the results' ``settings``.

        Raises ConfigError naming the first setting out of range.
        """
        from jax_td3.bench.implementations import IMPLEMENTATIONS

        checks = [
            (self.grid in GRIDS, f"unknown `grid` {self.grid!r}; choose from {', '.join(GRIDS)}"),
            (self.device in DEVICES, f"unknown `device` {self.device!r}; choose from {', '.join(DEVICES)}"),
            (not set(self.algos or ()) - set(ALGOS), f"`algos` must be among {', '.join(ALGOS)}"),
            (not set(self.impls or ()) - set(IMPLEMENTATIONS), f"`impls` must be among {', '.join(IMPLEMENTATIONS)}"),
            (all(h and min(h) > 0 for h in self.hidden or ()), "`hidden` sizes must be positive"),
            (all(b > 0 for b in self.batch or ()), "`batch` sizes must be positive"),
            (self.repetitions is None or self.repetitions > 0, "`repetitions` must be > 0"),
            (self.min_rep_time is None or self.min_rep_time > 0, "`min_rep_time` must be > 0"),
            (self.scan_updates > 0, "`scan_updates` must be > 0"),
            (self.vmap_agents > 0, "`vmap_agents` must be > 0"),
            (self.torch_threads is None or self.torch_threads > 0, "`torch_threads` must be > 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        quick, full = self.grid == "quick", self.grid == "full"
        fasttd3_only = self.algos is not None and set(self.algos) == {"fasttd3"}
        default_hidden = FASTTD3_HIDDEN if fasttd3_only else FULL_HIDDEN if full else DEFAULT_HIDDEN
        default_batch = FASTTD3_BATCH if fasttd3_only else FULL_BATCH if full else DEFAULT_BATCH
        return {
            "grid": self.grid,
            "algos": list(self.algos or (("td3",) if quick else DEFAULT_ALGOS)),
            "hidden": [list(h) for h in (self.hidden or default_hidden)],
            "batch": list(self.batch or default_batch),
            "impls": list(self.impls or IMPLEMENTATIONS),
            "repetitions": self.repetitions or (3 if quick else 5),
            "min_rep_s": self.min_rep_time or (0.1 if quick else 0.3),
            "scan_updates": self.scan_updates,
            "vmap_agents": self.vmap_agents,
            "torch_device": _torch_device(self.device),
            "obs_dim": OBS_DIM,
            "act_dim": ACT_DIM,
            "fasttd3_obs_dim": FASTTD3_OBS_DIM,
            "fasttd3_act_dim": FASTTD3_ACT_DIM,
            "dtype": "float32",
            "seed": self.seed,
        }


def _torch_device(device: str) -> str:
    if device == "cuda":
        if not require_torch("`device` cuda (PyTorch's device)").cuda.is_available():
            raise ConfigError("`device` cuda but PyTorch sees no CUDA device")
        return device
    if device == "auto":
        torch = torch_if_installed()
        return "cuda" if torch is not None and torch.cuda.is_available() else "cpu"
    return device


def cell_config(algo: str, hidden: tuple[int, ...], batch: int) -> TD3Config:
    """The config one cell times: TD3/OurDDPG at HalfCheetah's sizes; FastTD3 at a humanoid's, with
    ``hidden`` its critic's sizes and half of each its actor's."""
    from jax_td3.config import FastTD3Config, make_config

    if algo == "fasttd3":
        return FastTD3Config(obs_dim=FASTTD3_OBS_DIM, act_dim=FASTTD3_ACT_DIM, action_low=(-1.0,) * FASTTD3_ACT_DIM,
                             action_high=(1.0,) * FASTTD3_ACT_DIM, hidden=tuple(max(1, h // 2) for h in hidden),
                             critic_hidden=hidden, batch_size=batch).validate()
    return make_config(algo, obs_dim=OBS_DIM, act_dim=ACT_DIM, max_action=1.0, hidden=hidden, batch_size=batch)


def state_bytes(config: TD3Config, agents: int = 1) -> int:
    """A lower bound of one cell's memory: its float32 train state (actor and critics, their targets,
    Adam's two moments of each), ``agents`` times. Replay data, activations and compiled code come on top."""
    from jax_td3.run.checks import train_state_bytes

    if config.algo == "fasttd3":   # counted from the layer sizes: actor x 3, critics x 4 (no actor target)
        from jax_td3.bench.flops import layer_sizes

        actor, critic = layer_sizes(config)
        count = lambda layers: sum(n_in * n_out + n_out for n_in, n_out in layers)
        return agents * 4 * (3 * count(actor) + 4 * config.num_critics * count(critic))
    return agents * train_state_bytes(config, np.float32)


def memory_limit(torch_device: str) -> tuple[int, str] | None:
    """(bytes, what) of the memory a cell lives in: the host's RAM, or the GPU's when JAX or PyTorch
    runs on one, whichever is smaller; None when it cannot be told."""
    import os

    import jax

    limits = []
    try:
        limits.append((os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "memory"))
    except (AttributeError, ValueError, OSError):
        pass
    if torch_device == "cuda" or jax.default_backend() == "gpu":
        try:
            import torch

            if torch.cuda.is_available():
                limits.append((torch.cuda.get_device_properties(0).total_memory, "GPU memory"))
        except Exception:  # noqa: BLE001 - the GPU's size is a refinement, not a requirement
            pass
    return min(limits) if limits else None


def cell_name(row: dict) -> str:
    """How a summary names a row: "td3 256-256 b100 jax_jit" (+ " bf16"), or an end-to-end run's name."""
    if "impl" not in row:
        return str(row.get("name", "?"))
    bf16 = " bf16" if row.get("matmul_dtype") == "bfloat16" else ""
    return f"{row['algo']} {'-'.join(map(str, row['hidden']))} b{row['batch']} {row['impl']}{bf16}"


def outcome(results: dict) -> dict:
    """What a run came to: ``{"ok": [...], "failed": [...], "skipped": [...]}``, each a list of rows
    (grid cells, then end-to-end runs). A run whose every row failed or was skipped measured nothing."""
    rows = list(results.get("rows") or []) + list(results.get("e2e") or [])
    return {status: [r for r in rows if r.get("status") == status] for status in ("ok", "failed", "skipped")}


def _one_line(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}".strip().splitlines()
    return text[0][:300] if text else type(err).__name__


def run_grid(settings: dict, progress: bool,
             on_row: Callable[[list[dict], list[dict], float | None], None] | None = None,
             ) -> tuple[list[dict], list[dict], float | None]:
    """Time every (algo, hidden, batch, impl) of ``settings`` (a ``SuiteSettings.record()``);
    returns (rows, matmul table, square-1024 matmul FLOP/s; None when no cell was built)."""
    import jax
    from tqdm import tqdm

    from jax_td3.bench import flops
    from jax_td3.bench.implementations import build
    from jax_td3.bench.matmul_rate import MatmulRates, peak_rate
    from jax_td3.bench.replay_data import random_nstep_transitions, random_transitions
    from jax_td3.bench.runner import Setup, Unavailable
    from jax_td3.bench.timing import time_calls

    # float32 rows and floors are true float32 (NVIDIA GPUs would otherwise use TF32 in both frameworks);
    # bf16 rows override this locally.
    jax.config.update("jax_default_matmul_precision", "float32")
    torch = torch_if_installed()
    if torch is not None:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    rates = MatmulRates(settings["torch_device"], target_s=min(0.02, settings["min_rep_s"] / 5))
    peak = None   # measured at the first cell that is built (a grid of refused cells needs none)
    on_gpu = settings["torch_device"] == "cuda" or jax.default_backend() == "gpu"
    variants = [False, True] if on_gpu else [False]   # bf16 matmul rows only on GPU
    cells = [(algo, tuple(hidden), batch, impl, bf16)
             for algo in settings["algos"] for hidden in settings["hidden"] for batch in settings["batch"]
             for impl in settings["impls"] for bf16 in variants
             if not (bf16 and impl == "torch_ref")]
    rows = []
    data_cache = {}
    limit = memory_limit(settings["torch_device"])
    bar = tqdm(cells, desc="bench", disable=not progress, dynamic_ncols=True)
    for algo, hidden, batch, impl, bf16 in bar:
        bar.set_postfix_str(f"{algo} {'-'.join(map(str, hidden))} b{batch} {impl}{' bf16' if bf16 else ''}")
        config = cell_config(algo, hidden, batch)
        row = {"algo": algo, "hidden": list(hidden), "batch": batch, "impl": impl,
               "matmul_dtype": "bfloat16" if bf16 else "float32"}
        need = state_bytes(config, settings["vmap_agents"] if impl == "jax_vmap" else 1)
        if limit is not None and need > limit[0]:
            # Refused before building: allocating it would fail anyway, after seconds of swapping or worse.
            row.update(status="failed", reason=f"refused before running: the train state alone needs "
                                               f"{format_bytes(need)}, more than this machine's "
                                               f"{format_bytes(limit[0])} of {limit[1]}")
            rows.append(row)
            if on_row is not None:
                on_row(rows, rates.table(), peak)
            continue
        if peak is None:
            peak = peak_rate()
        # K and N shrink for big cells so that one call stays around CALL_BUDGET_S at the peak rate.
        updates_in_budget = int(CALL_BUDGET_S * peak / flops.update_flops(config, batch))
        setup = Setup(torch_device=settings["torch_device"],
                      scan_updates=max(2, min(settings["scan_updates"], updates_in_budget)),
                      vmap_agents=max(2, min(settings["vmap_agents"], updates_in_budget)),
                      bf16=bf16, seed=settings["seed"])
        if algo not in data_cache:
            transitions = random_nstep_transitions if algo == "fasttd3" else random_transitions
            data_cache[algo] = transitions(config, setup.replay_size, settings["seed"])
        try:
            runner = build(impl, config, setup, data_cache[algo])
            timing = time_calls(runner.call, runner.sync, runner.updates_per_call,
                                settings["repetitions"], settings["min_rep_s"])
        except Unavailable as err:
            row.update(status="skipped", reason=str(err))
        except Exception as err:  # noqa: BLE001 - a path that fails here is reported, not fatal
            row.update(status="failed", reason=_one_line(err))
        else:
            update_flops = flops.update_flops(config, batch)
            # The floor of the products as this runner batches them (N vmapped agents: stacked).
            floor = rates.floor(flops.update_gemms(config, batch, runner.agents))
            # FastTD3's counted element-wise work is charged at the update's matmul rate.
            floor["floor_s"] = (floor["floor_s"] / runner.agents
                                + flops.elementwise_flops(config, batch) / floor["matmul_rate_flops_per_s"])
            median = timing.median_s
            row.update(status="ok", notes=runner.notes, agents=runner.agents,
                       updates_per_call=timing.updates_per_call, calls_per_rep=timing.calls_per_rep,
                       per_update_s=timing.summary(), updates_per_s=1.0 / median,
                       first_call_s=timing.first_call_s, compile_s=timing.compile_s,
                       flops_per_update=update_flops, achieved_flops_per_s=update_flops / median,
                       floor_s_per_update=floor["floor_s"],
                       floor_rate_flops_per_s=floor["matmul_rate_flops_per_s"],
                       floor_fraction=floor["floor_s"] / median)
        rows.append(row)
        if on_row is not None:
            on_row(rows, rates.table(), peak)
    return rows, rates.table(), peak


def write_report(results: dict, stem: Path, plots: bool = True,
                 announce: Callable[[str], None] | None = None) -> list[Path]:
    """STEM.md (update table, end-to-end table) and, with ``plots``, the two PNGs; returns the paths."""
    from jax_td3.bench import e2e, report

    stem = Path(stem)
    text = report.markdown(results)
    if results.get("e2e"):
        text += "\n" + e2e.markdown(results["e2e"])
    stem.with_suffix(".md").write_text(text)
    written = [stem.with_suffix(".md")]
    # No plots of a grid that measured nothing (they would be empty axes).
    if plots and any(row["status"] == "ok" for row in results["rows"]):
        try:
            written += report.plot(results, stem)
        except ImportError:
            if announce is not None:
                announce("no plots: matplotlib is not installed (pip install 'jax-td3[logging]')")
    return written


def run_suite(settings: SuiteSettings, out_dir: Path, name: str | None = None, *, updates: bool = True,
              e2e_steps: int | None = None, plots: bool = True, progress: bool = True, command: str = "",
              announce: Callable[[str], None] | None = None) -> tuple[dict, list[Path]]:
    """Time the update grid (``updates``) and the end-to-end runs (``e2e_steps`` steps each, when given).

    Writes OUT_DIR/NAME.json after every cell, then NAME.md and the plots; returns the results
    and the paths written. NAME defaults to DEVICE-GRID-TIMESTAMP. A KeyboardInterrupt ends
    the measuring early: what was measured is written and ``results["interrupted"]`` is True.
    A cell that fails is recorded (status "failed", with the reason) and the grid goes on;
    ``outcome(results)`` sorts the rows into measured, failed and skipped. A cell whose train
    state alone would not fit in the machine's memory is refused (failed) without being built.
    """
    from jax_td3.bench import report
    from jax_td3.bench.implementations import IMPLEMENTATIONS
    from jax_td3.bench.machine import load_average, machine_info

    record = settings.record()
    if e2e_steps is not None and e2e_steps <= 0:
        raise ConfigError("`e2e_steps` must be > 0")
    if settings.torch_threads:
        require_torch("`torch_threads`").set_num_threads(settings.torch_threads)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    device_name = "gpu" if record["torch_device"] == "cuda" else "cpu"
    name = name or f"{device_name}-{record['grid']}-{stamp}"
    stem = Path(out_dir) / name
    results: dict[str, Any] = {
        "run_name": name,
        "created_utc": stamp,
        "command": command,
        "machine": machine_info(record["torch_device"]),
        "settings": record,
        "implementations": {impl: IMPLEMENTATIONS[impl] for impl in record["impls"]},
        "loadavg_before": load_average(),
        "loadavg_after": None,
        "rows": [],
        "matmul_shapes": [],
        "peak_matmul_flops_per_s": None,
        "e2e": [],
    }
    start = time.perf_counter()

    def save(rows: list[dict], matmul_table: list[dict], peak: float | None) -> None:
        # Saved after every cell: an interrupted run keeps everything measured so far.
        results["rows"], results["matmul_shapes"] = rows, matmul_table
        results["peak_matmul_flops_per_s"] = peak  # square 1024 float32, for reference
        results["loadavg_after"] = load_average()
        results["wall_s"] = round(time.perf_counter() - start, 1)
        report.write_json(results, stem.with_suffix(".json"))

    interrupted = False
    try:
        if updates:
            run_grid(record, progress, on_row=save)
        if e2e_steps is not None:
            from jax_td3.bench import e2e

            def save_e2e(e2e_rows: list[dict]) -> None:
                results["e2e"] = e2e_rows
                save(results["rows"], results["matmul_shapes"], results["peak_matmul_flops_per_s"])
            e2e.run_all(e2e_steps, settings.seed, progress=progress, on_row=save_e2e)
    except KeyboardInterrupt:
        interrupted = True  # write the table and plots of what was measured
    results["interrupted"] = interrupted
    save(results["rows"], results["matmul_shapes"], results["peak_matmul_flops_per_s"])
    written = [stem.with_suffix(".json"), *write_report(results, stem, plots=plots, announce=announce)]
    return results, written
