"""Checks a run makes before it builds anything, so that bad input fails at once in one line.

``ensure_writable_dir`` checks that the run directory can be created and written.
``check_run_memory`` / ``check_compiled_memory`` estimate what a run allocates (networks,
target copies and Adam moments; replay buffers) and raise ``ConfigError`` when it exceeds
the memory there is, instead of a numpy ``MemoryError`` traceback, an out-of-memory kill
or a machine that swaps for minutes. The estimates are pure functions of the sizes
(``train_state_bytes``, ``replay_bytes``, ``host_loop_needs``, ``refuse_if_too_big``) or, for a
compiled run, of the shapes of what it allocates (``compiled_loop_needs``, from ``jax.eval_shape`` of
the functions that allocate), so tests can give them sizes; only ``available_*`` look at the machine.

The replay buffer is allocated with ``np.zeros`` (pages are only touched as transitions
are written), so numpy may not fail at once for a buffer that cannot fit: this check is
what refuses it.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import DTypeLike

from jax_td3.errors import ConfigError

if TYPE_CHECKING:
    import jax

    from jax_td3.config import TD3Config
    from jax_td3.settings import TrainSettings

GiB = 1024 ** 3


# -- the run directory ------------------------------------------------------------------------

def ensure_writable_dir(path: str | os.PathLike[str], setting: str = "out", what: str = "the run directory") -> Path:
    """Check that directory ``path`` can be created (if missing) and written; ConfigError naming the
    ``setting`` that gave it if not.

    Leaves the file system as it found it: directories made for the check are removed again
    (the run makes them when it writes its first file).
    """
    path = Path(path)
    created: list[Path] = []
    probe = path
    while not probe.exists() and probe != probe.parent:
        created.append(probe)
        probe = probe.parent
    try:
        if path.exists() and not path.is_dir():
            raise ConfigError(f"`{setting}` {path} is a file, not a directory")
        for attempt in range(3):
            try:
                path.mkdir(parents=True, exist_ok=True)
                with tempfile.TemporaryFile(dir=path, prefix=".write-check-"):
                    pass
                break
            except FileNotFoundError:
                # Another process checking the same new directory (the processes of one `--num-processes`
                # run) removed it between our mkdir and our file: check again.
                if attempt == 2:
                    raise ConfigError(f"cannot write {what} `{setting}` {path}: No such file or directory") from None
            except OSError as err:
                reason = err.strerror or type(err).__name__
                raise ConfigError(f"cannot write {what} `{setting}` {path}: {reason}") from None
    finally:
        for directory in created:  # deepest first
            try:
                directory.rmdir()
            except OSError:
                break
    return path


def ensure_writable_file(path: str | os.PathLike[str], setting: str) -> Path:
    """Check, before long work, that file ``path`` can be written (its directory exists and takes a
    new file; an existing file is left as it is); ConfigError naming ``setting`` if not."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"`{setting}` {path} is a directory; give a file name")
    if not path.parent.is_dir():
        raise ConfigError(f"cannot write `{setting}` {path}: directory {path.parent} does not exist")
    try:
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".check"):
            pass
    except OSError as err:
        raise ConfigError(f"cannot write `{setting}` {path}: {err.strerror or type(err).__name__}") from None
    return path


# -- seeds --------------------------------------------------------------------------------------

# The compiled loop holds seeds as int32 and adds offsets to them (agent i gets `seed` + i, its
# evaluation environments `seed` + i + exploration.EVAL_SEED_OFFSET); settings.SEED_LIMIT keeps
# a single run's seed below 2**31 - 1000. Here: the last agent's seed must stay below it too.
def check_compiled_seeds(seed: int, num_seeds: int) -> None:
    from jax_td3.settings import SEED_LIMIT

    if seed + num_seeds - 1 >= SEED_LIMIT:
        raise ConfigError(f"`seed` + `num_seeds` - 1 must be below 2**31 - 1000 (the compiled loop's seeds "
                          f"are int32), got {seed} + {num_seeds} - 1")


# -- memory ----------------------------------------------------------------------------------

def train_state_bytes(config: TD3Config, dtype: DTypeLike) -> int:
    """Exact bytes of one agent's train state (actor and critics, their targets, both Adam moments,
    the counters), counted from shapes alone: nothing is allocated."""
    import jax
    import jax.numpy as jnp

    from jax_td3.backends.base import initial_train_state

    itemsize = np.dtype(dtype).itemsize
    shapes = jax.eval_shape(lambda: initial_train_state(config, jax.random.PRNGKey(0), jnp.float32))
    total = 0
    for leaf in jax.tree_util.tree_leaves(shapes):
        size = int(np.prod(leaf.shape, dtype=np.int64))
        # Floating leaves take ``dtype`` (counted here so that float64 needs no x64 mode switched on).
        total += size * (itemsize if jnp.issubdtype(leaf.dtype, jnp.floating) else leaf.dtype.itemsize)
    return total


def replay_bytes(capacity: int, obs_dim: int, act_dim: int, dtype: DTypeLike) -> int:
    """Bytes of a replay buffer: ``capacity`` x (obs, next_obs, action, reward, not_done)."""
    return int(capacity) * (2 * obs_dim + act_dim + 2) * np.dtype(dtype).itemsize


def format_bytes(n: int) -> str:
    """``n`` bytes in TiB (from 1 TiB), else GiB, MiB or KiB, one decimal (the largest unit that shows
    at least 0.1)."""
    if n >= 1024 ** 4:
        return f"{n / 1024 ** 4:,.1f} TiB"
    for unit, size in (("GiB", GiB), ("MiB", 1024 ** 2)):
        if n >= size // 20:
            return f"{n / size:,.1f} {unit}"
    return f"{n / 1024:,.1f} KiB"


@dataclasses.dataclass(frozen=True)
class Need:
    """Bytes a run needs in one memory, by part: ``((description, bytes), ...)``; a description
    has ``{}`` where the size goes."""

    parts: tuple[tuple[str, int], ...]

    @property
    def total(self) -> int:
        return sum(size for _, size in self.parts)

    def __add__(self, other: Need) -> Need:
        return Need(self.parts + other.parts)

    def describe(self) -> str:
        return "; ".join(text.format(format_bytes(size)) for text, size in self.parts if size)


def host_loop_needs(config: TD3Config, settings: TrainSettings, *, device_is_host: bool) -> tuple[Need, Need]:
    """(host, device) needs of a Gymnasium-loop run. With ``device_is_host`` (JAX on the CPU)
    the device part is counted in the host's and the device need is empty."""
    dtype = settings.dtype
    state = train_state_bytes(config, dtype)
    replay = replay_bytes(settings.buffer_size, config.obs_dim, config.act_dim, dtype)
    host = [(f"replay buffer {{}} at `buffer_size` {settings.buffer_size:,}", replay)]
    device = [("networks and Adam {}", state)]
    if settings.backend == "torch":  # the PyTorch learner keeps its own copy on the host
        host.append(("PyTorch networks and Adam {}", state))
    if settings.updates_per_call > 1:  # jax_backend.load_replay: a device copy of the ring
        device.append((f"device replay copy {{}} (`updates_per_call` {settings.updates_per_call})", replay))
    if device_is_host:
        return Need(tuple(host + device)), Need(())
    return Need(tuple(host)), Need(tuple(device))


def tree_bytes(tree: Any) -> int:
    """Bytes of the arrays (or ``jax.ShapeDtypeStruct``s) of ``tree``; a PRNG key counts its key data."""
    import jax

    return sum(int(np.prod(x.shape, dtype=np.int64)) * x.dtype.itemsize for x in jax.tree_util.tree_leaves(tree))


def compiled_loop_needs(agents: Any, draws: Any) -> Need:
    """Device need of a compiled run from the shapes of what it allocates (``jax.eval_shape`` of the
    functions that allocate it, ``loops.compiled.ChunkedRun.allocation_shapes``): ``agents``, the agents'
    whole state (leading axis K: train states, replay buffers, environment states and observations, keys
    and counters), and ``draws``, the largest block of random draws the run makes at once."""
    num_seeds = agents.replay.obs.shape[0]
    capacity = int(np.prod(agents.replay.obs.shape[1:-1]))   # per-environment rings: slots x environments
    num_envs = agents.obs.shape[1]
    per = f" for {num_seeds:,} agents" if num_seeds > 1 else ""
    replay, state = tree_bytes(agents.replay), tree_bytes(agents.train_state)
    envs = tree_bytes((agents.env_state, agents.obs))
    return Need((
        (f"replay buffers {{}} at {capacity:,} transitions{per}", replay),
        (f"networks and Adam {{}}{per}", state),
        (f"{num_envs:,} environments {{}} per agent{per}", envs),
        (f"keys and counters {{}}{per}", tree_bytes(agents) - replay - state - envs),
        (f"random draws {{}}{per}", tree_bytes(draws)),
    ))


def refuse_if_too_big(need: Need, available: int | None, where: str = "memory") -> None:
    """ConfigError when ``need`` exceeds ``available`` bytes (None: unknown, nothing is checked)."""
    if available is not None and need.total > available:
        raise ConfigError(f"the run needs {format_bytes(need.total)} ({need.describe()}) but "
                          f"{format_bytes(available)} of {where} is available")


def available_host_memory() -> int | None:
    """MemAvailable from /proc/meminfo, else free physical pages (os.sysconf); None if neither."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _accelerator() -> jax.Device | None:
    """The first JAX device if it is not the CPU, else None."""
    import jax

    device = jax.devices()[0]
    return None if device.platform == "cpu" else device


def available_device_memory(device: jax.Device) -> int | None:
    """The allocator's ``bytes_limit`` of ``device``; None when it does not report one."""
    try:
        stats = device.memory_stats() or {}
    except Exception:  # some backends raise instead of returning None
        return None
    limit = stats.get("bytes_limit")
    return int(limit) if limit else None


def check_run_memory(config: TD3Config, settings: TrainSettings) -> None:
    """Refuse (ConfigError, one line) a Gymnasium-loop run that cannot fit in host or device memory."""
    device = _accelerator()
    host, on_device = host_loop_needs(config, settings, device_is_host=device is None)
    refuse_if_too_big(host, available_host_memory())
    if device is not None:
        refuse_if_too_big(on_device, available_device_memory(device), f"memory on {device}")


def check_compiled_memory(agents: Any, draws: Any) -> None:
    """Refuse a compiled run that cannot fit; ``agents`` and ``draws`` are the shapes of what it allocates
    (see ``compiled_loop_needs``).

    The agents are split over the devices that divide their number (``loops.agents.agent_mesh``).
    """
    import jax

    num_seeds = agents.obs.shape[0]
    need = compiled_loop_needs(agents, draws)
    device = _accelerator()
    if device is None:
        refuse_if_too_big(need, available_host_memory())
        return
    devices = len(jax.devices())
    count = max(d for d in range(1, devices + 1) if num_seeds % d == 0)
    per_device = available_device_memory(device)
    where = f"memory on {count} device(s) {device.platform}" if count > 1 else f"memory on {device}"
    refuse_if_too_big(need, None if per_device is None else per_device * count, where)
