"""Evaluating a saved agent: the noiseless policy's mean/std return over N episodes.

The source is a checkpoint file, a run directory (its newest valid checkpoint), or
a PyTorch file written by ``jax-td3 export --to torch`` (its state_dicts must fit the
torch_ref modules exactly).
A checkpoint of either backend loads into either backend (they share the JAX layout).
The episodes run as a batch of environments stepped in lockstep, one batched policy forward per step
(``loops.evaluation.BatchedEvaluator``); ``sequential`` runs them one after another on one environment,
with the same returns (bit for bit), as training's evaluation does.
With ``video`` the episodes are also recorded (``render_mode="rgb_array"``, one frame per step) to an
.mp4 or .gif file, written atomically; they then run sequentially, with the same returns as without.
Recording needs the ``video`` extra (imageio, imageio-ffmpeg, and pygame for classic control).
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from jax_td3.dtypes import x64_scope
from jax_td3.errors import CheckpointError, ConfigError, EnvError
from jax_td3.loops.exploration import evaluation_seed

if TYPE_CHECKING:  # for annotations only: JAX, Gymnasium and the backends are imported when evaluating
    from jax_td3.config import TD3Config
    from jax_td3.envs.base import HostEnv
    from jax_td3.update import TrainState

PathLike = str | os.PathLike[str]


def evaluate_checkpoint(path: PathLike, episodes: int = 10, env_id: str | None = None, seed: int | None = None,
                        backend: str = "jax", agent: int = 0, video: PathLike | None = None,
                        sequential: bool = False) -> dict[str, Any]:
    """Load ``path`` into ``backend`` and run ``episodes`` noiseless episodes; returns mean/std/returns.

    ``agent`` picks one of the agents of a compiled multi-seed run's checkpoint. ``video`` (a path
    ending in .mp4 or .gif) records the episodes there; the result then names it and its frame count.
    ``sequential`` runs the episodes one after another on one environment instead of as a batch (same
    returns; for checking).
    """
    from jax_td3.export import obs_normalizer_from_checkpoint, run_settings_of, train_state_from_checkpoint

    if str(path).endswith(".pt"):
        return _evaluate_torch_export(path, episodes, env_id, seed, backend, video, sequential)
    config, dtype, state, checkpoint = train_state_from_checkpoint(path, agent)
    settings = run_settings_of(checkpoint, agent)
    seed = evaluation_seed(settings["seed"]) if seed is None else seed
    with x64_scope(dtype):  # float64 for this call only: the caller's JAX settings stay as they were
        result = _run_policy(config, dtype, state, env_id or settings["env"], episodes, seed, backend, video,
                             time_feature=bool(settings.get("time_feature", False)), sequential=sequential,
                             obs_normalizer=obs_normalizer_from_checkpoint(config, checkpoint, agent))
    return {"checkpoint": str(checkpoint.path), **result, "step": checkpoint.metadata.get("step"),
            "trained_with": checkpoint.metadata.get("backend")}


def _evaluate_torch_export(path: PathLike, episodes: int, env_id: str | None, seed: int | None, backend: str,
                           video: PathLike | None = None, sequential: bool = False) -> dict[str, Any]:
    from jax_td3.export import agent_from_torch_export

    config, dtype, state, description, obs_normalizer = agent_from_torch_export(path)
    env_id = env_id or description.get("env")
    if env_id is None:
        raise ConfigError(f"{path} does not name its environment; give its `env`")
    seed = description.get("eval_seed", 0) if seed is None else seed
    with x64_scope(dtype):
        result = _run_policy(config, dtype, state, env_id, episodes, seed, backend, video,
                             time_feature=bool(description.get("time_feature", False)), sequential=sequential,
                             obs_normalizer=obs_normalizer)
    return {"checkpoint": str(path), **result, "step": description.get("step"), "trained_with": "torch export"}


def _run_policy(config: TD3Config, dtype: str, state: TrainState, env_id: str, episodes: int, seed: int,
                backend: str, video: PathLike | None = None, time_feature: bool = False,
                sequential: bool = False, obs_normalizer: Any = None) -> dict[str, Any]:
    """The episodes' returns; ``obs_normalizer``: statistics kept beside the train state (the TD3 family's with
    ``obs_normalization``), which the actor's observations are normalised with first."""
    from jax_td3.backends import make_backend
    from jax_td3.envs import env_spec, make_env
    from jax_td3.loops.evaluation import BatchedEvaluator, evaluate_policy

    recorder = _VideoRecorder(video) if video is not None else None  # checks the destination first
    try:
        render: dict[str, Any] = dict(render_mode="rgb_array") if recorder else {}
        evaluator = BatchedEvaluator(lambda: make_env(env_id, time_feature=time_feature, **render))
        try:
            env = evaluator.prepare(1)[0]
            spec = env_spec(env)
            if (spec.obs_dim, spec.act_dim) != (config.obs_dim, config.act_dim):
                raise CheckpointError(f"{spec.env_id} has obs/act dims {spec.obs_dim}/{spec.act_dim}; the "
                                      f"saved agent was trained for {config.obs_dim}/{config.act_dim}")
            if recorder:
                recorder.attach(env, spec.env_id)
            learner = make_backend(backend, config, state, dtype)
            act_batch = learner.act_batch
            if obs_normalizer is not None:
                from jax_td3.backends.jax_backend import normalize_numpy

                act_batch = lambda obs: learner.act_batch(normalize_numpy(obs_normalizer, obs))  # noqa: E731
            if recorder or sequential:
                returns = evaluate_policy(None, env, episodes, seed, np.dtype(dtype), act_batch=act_batch,
                                          on_step=recorder.record if recorder else None)
            else:
                returns = evaluator.evaluate(act_batch, episodes, seed, np.dtype(dtype))
        finally:
            evaluator.close()
        if recorder:
            recorder.finish()
    finally:
        if recorder:
            recorder.discard()
    result: dict[str, Any] = {"env": spec.env_id, "episodes": episodes, "seed": seed,
              "eval_return_mean": float(np.mean(returns)), "eval_return_std": float(np.std(returns)),
              "returns": returns}
    if recorder:
        result.update(video=str(recorder.path), video_frames=recorder.frames)
    return result


VIDEO_FORMATS = (".mp4", ".gif")
_VIDEO_EXTRA = "pip install 'jax-td3[video]'"


class _VideoRecorder:
    """Frames of ``env.render()`` streamed into a temporary file next to ``path``, renamed over it at the end."""

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        self.suffix = self.path.suffix.lower()
        if self.path.is_dir() or str(path).endswith(os.sep):
            raise ConfigError(f"`video` {path} is a directory; give a file such as {self.path / 'agent.mp4'}")
        if self.suffix not in VIDEO_FORMATS:
            raise ConfigError(f"`video` {path} is not a video file name (use one ending in "
                              f"{' or '.join(VIDEO_FORMATS)})")
        try:
            import imageio.v2  # noqa: F401
            if self.suffix != ".gif":
                import imageio_ffmpeg  # noqa: F401
        except ImportError as err:
            raise ConfigError(f"`video` needs imageio and imageio-ffmpeg ({_VIDEO_EXTRA}): {err}") from None
        parent = self.path.parent
        if not parent.is_dir():
            raise ConfigError(f"cannot write `video` {path}: directory {parent} does not exist")
        try:
            fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{self.path.name}.", suffix=f".tmp{self.suffix}")
        except OSError as err:
            raise ConfigError(f"cannot write `video` {path} ({err.strerror or err})") from None
        os.close(fd)
        self.tmp: Path | None = Path(tmp)
        self.writer: Any = None         # an imageio writer, from the first frame on
        self.env_id: str | None = None
        self.frames, self.fps = 0, 30.0
        # Classic-control envs draw with pygame: no window is needed, so keep SDL off any display.
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
        os.environ.setdefault("SDL_AUDIODRIVER", "dummy")

    def attach(self, env: HostEnv, env_id: str) -> None:
        self.env_id = env_id
        modes = env.metadata.get("render_modes") or []
        if "rgb_array" not in modes or getattr(env, "render_mode", None) != "rgb_array":
            raise EnvError(f"{env_id} cannot render frames for `video` "
                           f"(render modes: {', '.join(modes) or 'none'})")
        self.fps = float(env.metadata.get("render_fps") or 30)

    def record(self, env: HostEnv) -> None:
        try:
            frame = env.render()
        except Exception as err:
            # A missing renderer: pygame for classic control (gymnasium's DependencyNotInstalled).
            if isinstance(err, ImportError) or type(err).__name__ == "DependencyNotInstalled":
                detail = _first_line(err).replace("`", "'")
                raise EnvError(f"{self.env_id} cannot render frames for `video` ({_VIDEO_EXTRA}): "
                               f"{detail}") from None
            raise
        frame = np.asarray(frame) if frame is not None else None
        if frame is None or frame.ndim != 3 or frame.shape[2] not in (3, 4):
            raise EnvError(f"{self.env_id} rendered no RGB frame for `video` "
                           f"(got {None if frame is None else frame.shape})")
        frame = np.ascontiguousarray(frame[: frame.shape[0] // 2 * 2, : frame.shape[1] // 2 * 2, :3],
                                     dtype=np.uint8)  # even sizes, as H.264 wants
        try:
            if self.writer is None:
                # The first frame starts the ffmpeg subprocess (fork + exec); JAX's warning that
                # forking a multithreaded process may deadlock is about the forked Python, not exec.
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
                    self.writer = self._open_writer()
                    self.writer.append_data(frame)
            else:
                self.writer.append_data(frame)
        except OSError as err:
            raise ConfigError(f"cannot write `video` {self.path} ({_first_line(err)})") from None
        self.frames += 1

    def _open_writer(self) -> Any:
        import imageio.v2 as imageio

        assert self.tmp is not None, "the recording was already finished or discarded"

        if self.suffix == ".gif":
            return imageio.get_writer(self.tmp, format="GIF", mode="I", duration=1000.0 / self.fps, loop=0)
        return imageio.get_writer(self.tmp, format="FFMPEG", mode="I", fps=self.fps, codec="libx264",
                                  pixelformat="yuv420p", macro_block_size=1, ffmpeg_log_level="error")

    def finish(self) -> None:
        """Close the writer and rename the temporary file over ``path``."""
        assert self.tmp is not None, "the recording was already finished or discarded"
        try:
            if self.writer is not None:
                writer, self.writer = self.writer, None
                writer.close()
            if self.frames == 0:
                raise EnvError(f"{self.env_id} gave no frames to record for `video`")
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(self.tmp, 0o666 & ~umask)
            os.replace(self.tmp, self.path)
        except OSError as err:
            raise ConfigError(f"cannot write `video` {self.path} ({_first_line(err)})") from None
        self.tmp = None

    def discard(self) -> None:
        """Remove the temporary file if ``finish`` did not rename it (an error on the way)."""
        if self.writer is not None:
            try:
                self.writer.close()
            except Exception:  # noqa: BLE001 - already failing; the file goes anyway
                pass
            self.writer = None
        if self.tmp is not None:
            try:
                self.tmp.unlink()
            except OSError:
                pass
            self.tmp = None


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
