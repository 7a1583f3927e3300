"""The checkpoint file format: one framework-neutral, versioned, checksummed file, and where a run keeps them.

This module reads and encodes files; it knows nothing of training (writing a run's files atomically
and rotating them is ``run.checkpoint``). It sits below everything that reads checkpoints (the run
drivers, ``evaluate``, ``export``, the parity engine).

File layout (``DIR/checkpoints/ckpt-<env steps, 10 digits>.jtd3``)::

    b"JAXTD3-CHECKPOINT\\n"
    one line of JSON: format_version, payload_bytes, payload_sha256, and metadata
    payload: an ``.npz`` archive (no pickle): every array, plus the JSON of the
             nested contents in which arrays are replaced by {"__array__": name}

A run also keeps ``DIR/best.jtd3``: the agent (without replay buffer) of its best evaluation so far.

Format versions (this module reads both; the container is the same):

- 2: a train state is a dict of arrays keyed by tree path (``backends.base.pack_train_state``),
  so a changed leaf order or optimiser chain still finds every array by its name;
- 1 (jax-td3 0.1.0): a train state is a list of arrays in ``jax.tree_util`` order
  (``backends.base.unpack_train_state`` reads both).

Loading checks the magic line, the version, the payload length (truncation) and the checksum.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from jax_td3.errors import CheckpointError

if TYPE_CHECKING:  # for annotations only: the config is imported when a checkpoint's is read
    from jax_td3.config import TD3Config

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
MAGIC = b"JAXTD3-CHECKPOINT\n"
CHECKPOINT_DIR = "checkpoints"
SUFFIX = ".jtd3"
BEST_AGENT_FILE = "best.jtd3"  # in the run directory, next to checkpoints/
CHECKPOINT_NAME = re.compile(r"ckpt-(\d+)\.jtd3$")
JSON_KEY = "__json__"


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    path: Path
    metadata: dict
    contents: dict


# -- nested contents <-> (JSON, arrays) --------------------------------------------------

def _split(tree: Any, arrays: dict[str, np.ndarray], path: str) -> Any:
    if isinstance(tree, np.ndarray) or (hasattr(tree, "__array__") and not np.isscalar(tree)):
        name = f"a{len(arrays):05d}"
        arrays[name] = np.asarray(tree)
        return {"__array__": name}
    if isinstance(tree, dict):
        return {str(k): _split(v, arrays, f"{path}/{k}") for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_split(v, arrays, f"{path}/{i}") for i, v in enumerate(tree)]
    if isinstance(tree, np.generic):
        return tree.item()
    if tree is None or isinstance(tree, (bool, int, float, str)):
        return tree
    raise TypeError(f"cannot store {type(tree).__name__} at {path or '/'} in a checkpoint")


def _join(tree: Any, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(tree, dict):
        if set(tree) == {"__array__"}:
            return arrays[tree["__array__"]]
        return {k: _join(v, arrays) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_join(v, arrays) for v in tree]
    return tree


def encode(contents: dict, metadata: dict) -> bytes:
    """The bytes of a checkpoint file (the current format version) holding ``contents``; the header records
    the version of jax-td3 that wrote it unless ``metadata`` names one."""
    from jax_td3 import __version__

    arrays: dict[str, np.ndarray] = {}
    structure = _split(contents, arrays, "")
    arrays[JSON_KEY] = np.frombuffer(json.dumps(structure).encode(), np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]  # numpy types **kwds as allow_pickle; these are array names
    payload = buffer.getvalue()
    header = {"jax_td3_version": __version__, **metadata, "format_version": FORMAT_VERSION,
              "payload_bytes": len(payload), "payload_sha256": hashlib.sha256(payload).hexdigest()}
    return MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n" + payload


def _header(data: bytes, source: str) -> tuple[dict, int]:
    """The header of a checkpoint's bytes (all of them, or only its start) and where its line ends."""
    if not data.startswith(MAGIC):
        raise CheckpointError(f"{source} is not a jax-td3 checkpoint (bad magic bytes)")
    end = data.find(b"\n", len(MAGIC))
    if end < 0:
        raise CheckpointError(f"{source} is truncated (no complete header)")
    try:
        return json.loads(data[len(MAGIC):end]), end
    except ValueError:
        raise CheckpointError(f"{source} has a corrupted header") from None


def decode(data: bytes, source: str = "checkpoint") -> tuple[dict, dict]:
    """(metadata, contents) of a checkpoint's bytes; CheckpointError if anything is off."""
    header, end = _header(data, source)
    version = header.get("format_version")
    if version not in READABLE_VERSIONS:
        raise CheckpointError(f"{source} has format version {version}; this jax-td3 reads versions "
                              f"{', '.join(map(str, READABLE_VERSIONS))}")
    payload = data[end + 1:]
    if len(payload) != header.get("payload_bytes"):
        raise CheckpointError(f"{source} is truncated or padded: payload has {len(payload)} bytes, "
                              f"header says {header.get('payload_bytes')}")
    if hashlib.sha256(payload).hexdigest() != header.get("payload_sha256"):
        raise CheckpointError(f"{source} is corrupted (sha256 checksum mismatch)")
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
        structure = json.loads(arrays.pop(JSON_KEY).tobytes())
    except (ValueError, KeyError, OSError) as err:
        raise CheckpointError(f"{source} has an unreadable payload ({err})") from None
    metadata = {k: v for k, v in header.items() if k not in ("payload_bytes",)}
    return metadata, _join(structure, arrays)


# -- files -------------------------------------------------------------------------------

def checkpoint_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR


def checkpoint_name(step: int) -> str:
    return f"ckpt-{step:010d}{SUFFIX}"


def read_metadata(path: str | os.PathLike) -> dict:
    """The header of a checkpoint file without reading its payload (CheckpointError if unreadable)."""
    try:
        with open(path, "rb") as f:
            start = f.read(len(MAGIC)) + f.readline()
    except OSError as err:
        raise CheckpointError(f"cannot read checkpoint {path}: {err.strerror or err}") from None
    return _header(start, str(path))[0]


def config_from_checkpoint(contents: dict) -> TD3Config:
    """The algorithm config a checkpoint's contents were trained with."""
    from jax_td3.config import make_config

    return make_config(contents["config"]["algo"], **contents["config"]["fields"])


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read and verify one checkpoint file, or a run directory's newest valid one (CheckpointError if
    missing, truncated or corrupted)."""
    path = Path(path)
    if path.is_dir():
        found = latest_valid_checkpoint(path)
        if found is None:
            raise CheckpointError(f"no valid checkpoint in {path}")
        return found
    try:
        data = path.read_bytes()
    except OSError as err:
        raise CheckpointError(f"cannot read checkpoint {path}: {err.strerror or err}") from None
    metadata, contents = decode(data, source=str(path))
    return Checkpoint(path, metadata, contents)


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Checkpoint files of a run (``DIR`` or ``DIR/checkpoints``), oldest first by step."""
    run_dir = Path(run_dir)
    directory = run_dir if run_dir.name == CHECKPOINT_DIR else checkpoint_dir(run_dir)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := CHECKPOINT_NAME.fullmatch(p.name))]
    return [p for _, p in sorted(found)]


def latest_valid_checkpoint(run_dir: str | os.PathLike) -> Checkpoint | None:
    """The newest checkpoint that loads and verifies; bad ones are skipped with a warning."""
    for path in reversed(list_checkpoints(run_dir)):
        try:
            return load_checkpoint(path)
        except CheckpointError as err:
            warnings.warn(f"skipping checkpoint: {err}", stacklevel=2)
    return None
