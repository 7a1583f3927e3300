"""The rules both run drivers follow in a run directory (``jax_td3.run.directory``): what a resume may
change, and the log rows it drops."""

import dataclasses

import pytest

from jax_td3.errors import ConfigError
from jax_td3.run.directory import RESUME_MAY_CHANGE, resumed_settings, truncate_log
from jax_td3.settings import TrainSettings

SAVED = dataclasses.asdict(TrainSettings(total_steps=1_000, eval_every=100, learning_starts=50))
SAVED_CONFIG = {"algo": "td3", "fields": {"hidden": [16, 16], "batch_size": 32}}


def wanted(**changes):
    return {**dataclasses.asdict(TrainSettings().replace(**changes)), "hidden": (16, 16), "batch_size": None,
            "algo": "td3"}


def test_a_resume_keeps_the_runs_settings_but_what_may_change():
    assert RESUME_MAY_CHANGE == {"total_steps", "chunk_steps", "skip_nonfinite"}
    # Not requested: the run's own values, whatever the plan's defaults are.
    settings = resumed_settings("out", SAVED, SAVED_CONFIG, wanted(total_steps=5), set(), 400)
    assert settings == TrainSettings(**SAVED)
    requested = {"total_steps", "skip_nonfinite", "chunk_steps", "hidden", "eval_every"}
    settings = resumed_settings("out", SAVED, SAVED_CONFIG,
                                wanted(total_steps=2_000, skip_nonfinite=True, chunk_steps=50, eval_every=100),
                                requested, 400)
    assert (settings.total_steps, settings.skip_nonfinite, settings.chunk_steps) == (2_000, True, 50)
    assert settings.learning_starts == 50


@pytest.mark.parametrize("requested, changes, message", [
    ({"eval_every"}, {"eval_every": 200}, "has eval_every=100, but 200 was asked for"),
    ({"hidden"}, {}, None),   # the same sizes, as a tuple against the saved list: agrees
    ({"total_steps"}, {"total_steps": 300}, "`total_steps` 300 is below the 400 steps already done"),
])
def test_a_resume_refuses_what_contradicts_the_run(requested, changes, message):
    values = wanted(**changes)
    if message is None:
        resumed_settings("out", SAVED, SAVED_CONFIG, values, requested, 400)
        values["hidden"] = (32, 32)
        message = "has hidden=[16, 16], but (32, 32) was asked for"
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        resumed_settings("out", SAVED, SAVED_CONFIG, values, requested, 400)


def test_truncate_log_drops_the_rows_after_the_checkpoint(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("step,eval_return_mean\n0,-1.0\n100,-0.5\n200.0,-0.25\n\n300,-0.1\n")
    truncate_log(path, 200)
    assert path.read_text() == "step,eval_return_mean\n0,-1.0\n100,-0.5\n200.0,-0.25\n"
    truncate_log(tmp_path / "missing.csv", 0)   # nothing to truncate
    assert not (tmp_path / "missing.csv").exists()
