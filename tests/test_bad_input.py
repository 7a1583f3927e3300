"""Every bad input named in the reliability issue gets one line on stderr and exit code 2.

(Settings errors such as tau/gamma out of range or a batch larger than the buffer are in
test_train.py; checkpoint-file errors of ``export`` in test_export.py.)
"""

import pytest
import torch

from jax_td3.cli import main

QUICK = ["--total-steps", "60", "--hidden", "8,8", "--batch-size", "8", "--learning-starts", "20",
         "--eval-every", "60", "--eval-episodes", "1", "--no-progress"]


def one_line_error(capsys, argv, code=2):
    """Run the CLI; argparse errors exit through SystemExit, ours return; both must be one line + exit 2."""
    capsys.readouterr()
    try:
        returned = main(argv)
    except SystemExit as exit_:
        returned = exit_.code
    err = capsys.readouterr().err.strip().splitlines()
    assert returned == code, err
    lines = [line for line in err if not line.startswith("usage:") and line.strip()]
    # argparse prints its usage line before the error; the error itself is one line.
    assert len(lines) == 1 and "Traceback" not in "\n".join(err), err
    return lines[0]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bad-input") / "run"
    assert main(["train", *QUICK, "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("flags, message", [
    (["--env", "NoSuchEnv-v0"], "unknown environment id 'NoSuchEnv-v0'"),
    (["--env", "CartPole-v1"], "Discrete action space"),
    (["--algo", "sac"], "invalid choice: 'sac'"),
    (["--backend", "tensorflow"], "invalid choice: 'tensorflow'"),
    (["--preset", "mujoco"], "invalid choice: 'mujoco'"),
    (["--total-steps", "-5"], "expected a positive integer, got '-5'"),
    (["--total-steps", "0"], "expected a positive integer, got '0'"),
    (["--hidden", "64,-1"], "positive integers, got '64,-1'"),
    (["--hidden", "64.5"], "positive integers, got '64.5'"),
    (["--tau", "1.5"], "tau must be in (0, 1]"),
    (["--gamma", "2"], "gamma must be in [0, 1]"),
    (["--batch-size", "64", "--buffer-size", "10"], "batch size 64 is larger than the buffer size 10"),
    (["--critic-weight-decay", "nan"], "critic_weight_decay must be a finite number, got nan"),
    (["--reward-scale", "nan"], "reward_scale must be a finite number, got nan"),
    (["--actor-lr", "inf"], "actor_lr must be a finite number, got inf"),
    (["--expl-noise", "inf"], "--expl-noise must be a finite number, got inf"),
    (["--out", "/proc/nope/run"], "cannot write the run directory --out /proc/nope/run"),
    (["--seed", "99999999999999999999"], "--seed must be in [0, 2**31 - 1000), got 99999999999999999999"),
])
def test_train_bad_flag(flags, message, tmp_path, capsys):
    assert message in one_line_error(capsys, ["train", *QUICK, "--out", str(tmp_path / "run"), *flags])


def test_output_directory_holding_another_run(finished_run, capsys):
    line = one_line_error(capsys, ["train", *QUICK, "--out", str(finished_run)])
    assert "already holds a run; pass --resume" in line


def test_resume_with_another_algorithm(finished_run, capsys):
    line = one_line_error(capsys, ["train", *QUICK, "--out", str(finished_run), "--resume", "--algo", "ddpg"])
    assert "algo=td3, but ddpg was asked for; drop --algo" in line


def test_eval_checkpoint_with_other_network_shapes_than_the_env(finished_run, capsys):
    line = one_line_error(capsys, ["eval", str(finished_run), "--env", "MountainCarContinuous-v0"])
    assert "obs/act dims 2/1; the saved agent was trained for 3/1" in line


def test_checkpoint_whose_arrays_belong_to_other_shapes(finished_run, tmp_path, capsys):
    from jax_td3.run.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint

    checkpoint = load_checkpoint(list_checkpoints(finished_run)[-1])
    contents = dict(checkpoint.contents)
    contents["config"] = {**contents["config"], "fields": {**contents["config"]["fields"], "hidden": [16, 16]}}
    save_checkpoint(tmp_path, 60, contents, checkpoint.metadata)
    line = one_line_error(capsys, ["eval", str(tmp_path)])
    assert "has shape" in line and "other network shapes" in line


@pytest.mark.parametrize("case, message", [
    ("missing", "cannot read checkpoint"),
    ("not-a-checkpoint", "is not a jax-td3 checkpoint"),
    ("empty-directory", "no valid checkpoint"),
])
def test_missing_or_unreadable_checkpoint(case, message, tmp_path, capsys):
    path = tmp_path / "ckpt.jtd3"
    if case == "not-a-checkpoint":
        path.write_text("hello")
    elif case == "empty-directory":
        path = tmp_path
    assert message in one_line_error(capsys, ["eval", str(path)])


@pytest.fixture(scope="module")
def exported(finished_run, tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "agent.pt"
    assert main(["export", str(finished_run), "--to", "torch", str(path)]) == 0
    return path


def test_exported_agent_evaluates(exported, capsys):
    capsys.readouterr()
    assert main(["eval", str(exported), "--episodes", "1"]) == 0
    assert "Pendulum-v1: return" in capsys.readouterr().out


@pytest.mark.parametrize("edit, message", [
    ("drop", "missing keys ['l3.bias'], unexpected keys []"),
    ("add", "missing keys [], unexpected keys ['l4.weight']"),
    ("reshape", "size mismatch for l1.weight"),
])
def test_torch_state_dict_with_missing_extra_or_misshapen_keys(edit, message, exported, tmp_path, capsys):
    blob = torch.load(exported, weights_only=True)
    actor = blob["actor"]
    if edit == "drop":
        del actor["l3.bias"]
    elif edit == "add":
        actor["l4.weight"] = torch.zeros(1, 8)
    else:
        actor["l1.weight"] = torch.zeros(8, 4)
    path = tmp_path / "edited.pt"
    torch.save(blob, path)
    line = one_line_error(capsys, ["eval", str(path)])
    assert "actor state_dict does not fit" in line and message in line, line


def test_compiled_run_into_a_directory_holding_another_run(finished_run, capsys):
    line = one_line_error(capsys, ["train", "--compiled", "--total-steps", "100", "--out", str(finished_run)])
    assert "already holds a run" in line


def test_compiled_resume_without_a_checkpoint_is_one_line(tmp_path, capsys):
    line = one_line_error(capsys, ["train", "--compiled", "--resume", "--out", str(tmp_path / "run")])
    assert line == ("jax-td3 train: error: --resume: no complete checkpoint in "
                    f"{tmp_path / 'run' / 'checkpoints'}"), line


def test_replay_buffer_larger_than_memory(tmp_path, capsys):
    pytest.importorskip("pybullet_envs_gymnasium")
    line = one_line_error(capsys, ["train", *QUICK, "--out", str(tmp_path / "run"), "--env",
                                   "HalfCheetahBulletEnv-v0", "--buffer-size", "1000000000"])
    assert "the run needs" in line and "replay buffer" in line and "at --buffer-size 1,000,000,000" in line
    assert "of memory is available" in line
    assert not (tmp_path / "run").exists()


def test_networks_larger_than_memory_are_refused_at_once(tmp_path, capsys):
    import time

    start = time.perf_counter()
    line = one_line_error(capsys, ["train", *QUICK, "--out", str(tmp_path / "run"), "--hidden", "100000,100000"])
    assert time.perf_counter() - start < 30
    assert "the run needs" in line and "networks and Adam" in line and "of memory is available" in line


def test_compiled_agents_larger_than_memory(tmp_path, capsys):
    import time

    start = time.perf_counter()
    line = one_line_error(capsys, ["train", "--compiled", "--num-seeds", "100000", "--buffer-size", "1000000",
                                   "--total-steps", "1000000", "--no-progress", "--out", str(tmp_path / "run")])
    assert time.perf_counter() - start < 30
    assert "replay buffers" in line and "for 100,000 agents" in line and "of memory is available" in line


def test_compiled_seeds_past_int32(tmp_path, capsys):
    line = one_line_error(capsys, ["train", "--compiled", "--num-seeds", "2000", "--seed", "2147481000",
                                   "--total-steps", "100", "--no-progress", "--out", str(tmp_path / "run")])
    assert "--seed + --num-seeds - 1 must be below 2**31 - 1000" in line


def test_export_to_an_unwritable_place(finished_run, capsys):
    line = one_line_error(capsys, ["export", str(finished_run), "--to", "torch", "/proc/x.pt"])
    assert line.startswith("jax-td3 export: error: cannot write /proc/x.pt")


@pytest.mark.parametrize("argv, message", [
    (["plot", "RUN", "--out", "/proc/x.png"], "cannot write --out /proc/x.png"),
    (["parity", "--tol", "nan", "--updates", "3"], "expected a finite non-negative number, got 'nan'"),
    (["parity", "--run", "--total-steps", "10", "--plot", "/proc/x.png"], "cannot write --plot /proc/x.png"),
    (["bench", "--quick", "--impls", "jax_jit", "--out-dir", "/proc/x"],
     "cannot write the results directory --out-dir /proc/x"),
])
def test_unwritable_outputs_and_absurd_tolerances_are_refused_before_any_work(argv, message, finished_run, capsys):
    argv = [str(finished_run) if a == "RUN" else a for a in argv]
    assert message in one_line_error(capsys, argv)


def test_a_library_warning_is_one_line_during_a_command_and_the_format_is_restored():
    import warnings

    from jax_td3.cli import _warnings_on_one_line

    before = warnings.formatwarning
    with _warnings_on_one_line("train"):
        shown = warnings.formatwarning("tensorboardX is not installed", UserWarning, "training.py", 176, None)
    assert shown == "jax-td3 train: warning: tensorboardX is not installed\n"
    assert warnings.formatwarning is before
