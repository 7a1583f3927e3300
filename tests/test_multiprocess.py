"""A compiled run over two processes (``--coordinator``) gives the one-process run's results.

Two ``jax-td3 train --compiled`` processes on 127.0.0.1 (CPU, gloo collectives), one CPU device each,
train two agents, one per process. The reference is one process with two forced CPU devices, one
agent each: the same per-device program, so in float64 the results must be equal.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

FLAGS = ["train", "--compiled", "--dtype", "float64", "--num-seeds", "2", "--total-steps", "600",
         "--learning-starts", "200", "--eval-every", "200", "--eval-episodes", "2", "--hidden", "8,8",
         "--batch-size", "16", "--num-envs", "2", "--no-progress"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def environment(devices: int) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}".strip()
    return env


def test_two_processes_equal_one_process(tmp_path):
    coordinator = f"127.0.0.1:{free_port()}"
    two = tmp_path / "two"
    processes = [subprocess.Popen([sys.executable, "-m", "jax_td3.cli", *FLAGS, "--out", str(two),
                                   "--coordinator", coordinator, "--num-processes", "2", "--process-id", str(i)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment(1))
                 for i in range(2)]
    outputs = [p.communicate(timeout=600) for p in processes]
    # Every process's error, not only the first failing one's: when one dies early the other only
    # reports that it timed out waiting for it.
    failed = [f"process {i} (exit {p.returncode}):\n{stderr}" for i, (p, (_, stderr)) in
              enumerate(zip(processes, outputs)) if p.returncode != 0]
    assert not failed, "\n".join(failed)
    one = tmp_path / "one"
    done = subprocess.run([sys.executable, "-m", "jax_td3.cli", *FLAGS, "--out", str(one)], capture_output=True,
                          text=True, timeout=600, env=environment(2), check=False)
    assert done.returncode == 0, done.stderr

    two_summary = json.loads((two / "summary.json").read_text())
    one_summary = json.loads((one / "summary.json").read_text())
    assert two_summary["processes"] == 2 and one_summary["processes"] == 1
    assert two_summary["devices"] == one_summary["devices"] == 2
    for key in ("final_eval_return", "eval_return_curve", "eval_steps", "env_steps", "updates"):
        assert two_summary[key] == one_summary[key], key
    curve = one_summary["eval_return_curve"]
    assert curve[0] != curve[1]   # two seeds, two different agents
    assert one_summary["env_steps"] == 600 and one_summary["updates"] == 200
