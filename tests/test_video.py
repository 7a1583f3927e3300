"""``jax-td3 eval --video``: the episodes recorded headless, with the same returns as without it."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("gymnasium")
imageio = pytest.importorskip("imageio.v2")
pytest.importorskip("imageio_ffmpeg")
pytest.importorskip("pygame")  # Gymnasium's classic-control rgb_array rendering draws with pygame

from jax_td3.cli import main  # noqa: E402

PENDULUM_STEPS = 200  # one Pendulum-v1 episode: one frame per step


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("video_run")
    assert main(["train", "--total-steps", "60", "--hidden", "8,8", "--batch-size", "8", "--learning-starts", "20",
                 "--eval-every", "60", "--eval-episodes", "1", "--no-progress", "--out", str(out)]) == 0
    return out


def _eval_json(capsys, *argv) -> dict:
    capsys.readouterr()
    assert main(["eval", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


# Reading the mp4 back starts ffmpeg (fork + exec), which JAX warns about; the warning is about the forked Python.
@pytest.mark.filterwarnings(r"ignore:os\.fork\(\) was called:RuntimeWarning")
def test_video_records_every_step_and_keeps_the_returns(run_dir, tmp_path, capsys):
    path = tmp_path / "agent.mp4"
    plain = _eval_json(capsys, str(run_dir), "--episodes", "1")
    recorded = _eval_json(capsys, str(run_dir), "--episodes", "1", "--video", str(path))
    assert recorded["returns"] == plain["returns"]
    assert recorded["video"] == str(path) and recorded["video_frames"] == PENDULUM_STEPS
    assert path.is_file()
    reader = imageio.get_reader(path)
    try:
        assert reader.count_frames() == PENDULUM_STEPS
        frame = reader.get_data(0)
    finally:
        reader.close()
    assert frame.ndim == 3 and frame.shape[2] == 3
    assert [p.name for p in tmp_path.iterdir()] == ["agent.mp4"]  # no temporary file left behind


def test_video_gif(run_dir, tmp_path, capsys):
    path = tmp_path / "agent.gif"
    assert main(["eval", str(run_dir), "--episodes", "1", "--video", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"video: {path} ({PENDULUM_STEPS} frames)" in out
    assert path.is_file() and path.stat().st_size > 0
    assert imageio.mimread(path, memtest=False)[0].ndim == 3


@pytest.mark.parametrize("dest", ["/proc/x.mp4", "DIR", "missing/x.mp4", "x.txt"])
def test_video_bad_destination_is_one_line(run_dir, tmp_path, capsys, dest):
    path = {"DIR": str(tmp_path), "missing/x.mp4": str(tmp_path / "missing" / "x.mp4"),
            "x.txt": str(tmp_path / "x.txt")}.get(dest, dest)
    capsys.readouterr()
    assert main(["eval", str(run_dir), "--episodes", "1", "--video", path]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("jax-td3 eval: error:") and "--video" in lines[0]
    assert captured.out == ""
    assert not any(p.name.endswith(".mp4") for p in tmp_path.iterdir())
