"""What the numbers were measured on: processor, accelerator, threads, library versions, load."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

VERSIONS_OF = ("jax", "jaxlib", "flax", "optax", "torch", "numpy", "jax-td3")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (other jobs on a shared machine show here)."""
    return [round(x, 2) for x in os.getloadavg()]


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info(torch_device: str | None = None, frameworks: bool = True) -> dict:
    """The machine, its load and the library versions; with ``frameworks``, also what JAX and PyTorch see.

    ``frameworks=False`` imports neither JAX nor PyTorch (versions come from the package
    metadata): a parent process that only watches training subprocesses must not take the
    accelerator (JAX preallocates most of a GPU's memory when its backend starts).
    """
    info: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average": load_average(),
        "nice": os.getpriority(os.PRIO_PROCESS, 0),  # scheduling priority of the benchmark process
        "thread_env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "XLA_FLAGS")
                       if k in os.environ},
        "versions": {name: _version(name) for name in VERSIONS_OF},
        "git_commit": _git_commit(),
    }
    if not frameworks:
        return info
    import jax

    from jax_td3.bench import torch_if_installed

    torch = torch_if_installed()   # None without PyTorch: its fields are None
    gpu = None
    if torch is not None and torch.cuda.is_available():
        gpu = {"name": torch.cuda.get_device_name(0), "cuda": torch.version.cuda,
               "memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)}
    info.update({
        "torch_threads": torch.get_num_threads() if torch is not None else None,
        "torch_interop_threads": torch.get_num_interop_threads() if torch is not None else None,
        "jax_backend": jax.default_backend(),
        "jax_devices": [str(d) for d in jax.devices()],
        "torch_device": torch_device,
        "gpu": gpu,
    })
    return info
