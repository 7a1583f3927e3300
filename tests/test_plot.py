"""``jax-td3 plot`` and the library under it (``jax_td3.run.plot``) on metrics files it cannot draw."""

from __future__ import annotations

import pytest

from jax_td3.cli import main
from jax_td3.errors import ConfigError
from jax_td3.run.logger import read_metrics
from jax_td3.run.plot import draw_learning_curve, plot_runs


def _run_dir(tmp_path, text, name="run"):
    run = tmp_path / name
    run.mkdir()
    (run / "metrics.csv").write_text(text)
    return run


@pytest.mark.parametrize("text, message", [
    ("step,wall_time,return\n0,0.1,-100\n", "lacks the column eval_return_mean (it has step, wall_time, return)"),
    ("time,score\n0,-100\n", "lacks the columns step, eval_return_mean (it has time, score)"),
    ("step,wall_time,eval_return_mean,eval_return_std\n", "holds no evaluation rows (only a header line)"),
    ("", "is empty (no header line; expected the columns step, eval_return_mean)"),
    ("step,eval_return_mean\n0,abc\n", "line 2: eval_return_mean is not a number ('abc')"),
])
def test_plot_of_an_unusable_metrics_file_is_one_line_and_exit_2(tmp_path, capsys, recwarn, text, message):
    good = _run_dir(tmp_path, "step,eval_return_mean\n0,-10\n100,-5\n", name="good")
    bad = _run_dir(tmp_path, text)
    out = tmp_path / "curves.png"
    assert main(["plot", str(good), str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == f"jax-td3 plot: error: {bad / 'metrics.csv'} {message}\n"
    assert not out.exists()
    assert not [w for w in recwarn if "legend" in str(w.message)]


def test_the_library_raises_config_error_and_a_run_without_std_still_plots(tmp_path):
    bad = _run_dir(tmp_path, "time,score\n0,-100\n")
    with pytest.raises(ConfigError, match="lacks the columns step, eval_return_mean"):
        plot_runs([bad], tmp_path / "x.png")
    with pytest.raises(ConfigError, match="lacks the column step"):
        read_metrics(bad / "metrics.csv", required=("step",))
    assert read_metrics(bad / "metrics.csv") == [{"time": 0.0, "score": -100.0}]   # no requirement: as before
    # eval_return_std is optional.
    good = _run_dir(tmp_path, "step,eval_return_mean\n0,-10\n100,-5\n", name="good")
    assert main(["plot", str(good), "--out", str(tmp_path / "one.png")]) == 0
    assert (tmp_path / "one.png").read_bytes()[:4] == b"\x89PNG"
    # The curve drawn at the end of a run warns rather than fails on a file it cannot use.
    with pytest.warns(UserWarning, match="learning curve not drawn"):
        assert draw_learning_curve(bad) is None
    assert draw_learning_curve(good) == good / "learning_curve.png"


def test_reference_lines_are_drawn_with_their_labels(tmp_path, monkeypatch):
    import matplotlib.axes

    drawn = []
    original = matplotlib.axes.Axes.axhline
    monkeypatch.setattr(matplotlib.axes.Axes, "axhline",
                        lambda self, y, **kw: drawn.append((y, kw["label"])) or original(self, y, **kw))
    good = _run_dir(tmp_path, "step,eval_return_mean\n0,-10\n100,-5\n", name="good")
    out = tmp_path / "ref.png"
    assert main(["plot", str(good), "--out", str(out), "--reference", "Zoo TD3=2821.6",
                 "--reference", "a=b=-7"]) == 0
    assert drawn == [(2821.6, "Zoo TD3 (2821.6)"), (-7.0, "a=b (-7)")]
    assert out.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("value", ["2821.6", "Zoo=", "=3", "Zoo=nan", "Zoo=x"])
def test_a_bad_reference_is_one_line_and_exit_2(tmp_path, capsys, value):
    good = _run_dir(tmp_path, "step,eval_return_mean\n0,-10\n", name="good")
    with pytest.raises(SystemExit) as raised:
        main(["plot", str(good), "--out", str(tmp_path / "x.png"), "--reference", value])
    err = capsys.readouterr().err
    assert raised.value.code == 2 and "expected NAME=VALUE" in err and err.count("\n") == 1, err


def test_the_painter_process_draws_the_same_curve_and_reports_what_it_cannot_draw(tmp_path):
    """``start_painter`` (``jax-td3 train`` starts it before JAX) draws the run's curve in a helper
    process that imported matplotlib ahead of time; the picture equals the one drawn in-process, and
    a file it cannot use still warns without failing the run."""
    from jax_td3.run import plot

    good = _run_dir(tmp_path, "step,eval_return_mean,eval_return_std\n0,-10,1\n100,-5,2\n", name="good")
    assert draw_learning_curve(good) == good / "learning_curve.png"
    here = (good / "learning_curve.png").read_bytes()
    (good / "learning_curve.png").unlink()
    assert plot.start_painter()
    painter = plot._painter
    assert draw_learning_curve(good) == good / "learning_curve.png"
    assert plot._painter is None and painter.wait(timeout=30) == 0   # one curve, then it exits
    assert (good / "learning_curve.png").read_bytes() == here
    bad = _run_dir(tmp_path, "time,score\n0,-100\n")
    assert plot.start_painter()
    with pytest.warns(UserWarning, match="learning curve not drawn .*lacks the columns step, eval_return_mean"):
        assert draw_learning_curve(bad) is None
    plot.stop_painter()
