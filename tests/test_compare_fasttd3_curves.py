"""benchmarks/compare_fasttd3_curves.py: our metrics.csv beside a published curve of FastTD3's JSON layout."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "compare_fasttd3_curves.py"
spec = importlib.util.spec_from_file_location("compare_fasttd3_curves", SCRIPT)
compare_curves = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare_curves)

THEIRS = {"time": [0.0, 100.0, 200.0], "env_step": [0, 1_000, 2_000], "return": [0.0, 5.0, 9.0],
          "return_min": [0.0, 4.0, 8.0], "return_max": [0.0, 6.0, 10.0]}


def write_metrics(path: Path) -> None:
    path.write_text("step,wall_time,eval_return_mean,eval_return_std\n0,0.0,-1.0,0.1\n800,50.0,2.0,0.1\n"
                    "1600,150.0,4.0,0.1\n2400,250.0,7.0,0.1\n")


def test_each_published_point_gets_our_last_evaluation_at_or_before_its_time_and_step(tmp_path):
    write_metrics(tmp_path / "metrics.csv")
    rows = compare_curves.compare(compare_curves.load_ours(tmp_path / "metrics.csv"), THEIRS)
    assert [r["our_return_at_time"] for r in rows] == [-1.0, 2.0, 4.0]
    assert [r["our_return_at_env_step"] for r in rows] == [-1.0, 2.0, 4.0]
    late = compare_curves.compare([(10.0, 10.0, 3.0)], THEIRS)       # our first evaluation after their first point
    assert late[0]["our_return_at_time"] is None and late[1]["our_return_at_time"] == 3.0


def test_the_command_prints_a_table_and_writes_json(tmp_path):
    write_metrics(tmp_path / "metrics.csv")
    (tmp_path / "result.json").write_text(json.dumps({"T1JoystickFlatTerrain": {"FastTD3": THEIRS}}))
    done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "metrics.csv"), str(tmp_path / "result.json"),
                           "T1JoystickFlatTerrain", "--out", str(tmp_path / "out.json")],
                          capture_output=True, text=True, check=True)
    assert "| 200 | 2,000 | 9.00 | 4.00 | 4.00 |" in done.stdout
    assert json.loads((tmp_path / "out.json").read_text())["rows"][1]["their_return"] == 5.0
    missing = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "metrics.csv"),
                              str(tmp_path / "result.json"), "CheetahRun"], capture_output=True, text=True)
    assert missing.returncode != 0 and "CheetahRun is not in" in missing.stderr
