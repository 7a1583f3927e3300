#!/usr/bin/env bash
# One command that checks jax-td3 on a GPU machine and records what it measured:
#
#   bash benchmarks/gpu_check.sh [--out-dir DIR]      on a machine with an NVIDIA GPU (about 8 minutes)
#   bash benchmarks/gpu_check.sh --smoke [--out-dir DIR]  the same steps on the CPU, tiny (under 3 minutes)
#
# Steps, each timed; a failing step is recorded and the next one still runs:
#   1. parity   the parity suite (pytest parity_tests) on the GPU; the tests compare at the highest
#               matmul precision
#   2. bench    the update suite: JAX against PyTorch eager, torch.compile and CUDA graphs, float32 and
#               bfloat16 rows, 256-256 and 1024-1024 at batch 256 and 4096
#   3. fasttd3  the FastTD3 update at its sizes (critic 1024-512-256, 101 atoms, batch 32,768): JAX
#               (jax_td3.fasttd3.update, jit and scan) against the fast PyTorch update eager, torch.compile
#               and torch.compile mode="reduce-overhead" (CUDA graphs), float32 and bfloat16 rows (JAX:
#               bfloat16_matmuls; PyTorch: autocast); a row whose side is missing is recorded as skipped
#   4. seeds    the compiled training loop (JAX-native Pendulum) with 1, 8 and 64 agents vmapped
#   5. brax     the Brax scaling table, when Brax is installed (`bench compiled brax`)
#   6. gym      a Gymnasium training run, when Gymnasium is installed
#   7. playground  FastTD3 (--preset fasttd3-playground, its settings) compiled on playground:CheetahRun and
#               playground:T1JoystickFlatTerrain, when MuJoCo Playground is installed; each run's
#               metrics.csv has wall-clock and return per evaluation. With FASTTD3_PLAYGROUND_RESULT set to
#               FastTD3's data/playground_result.json, benchmarks/compare_fasttd3_curves.py puts the T1 run
#               beside FastTD3's published curve (the JSON has no CheetahRun). Length: PLAYGROUND_STEPS
#               transitions per task (default 5,120,000: FastTD3's first curve point), evaluations every
#               PLAYGROUND_EVAL_EVERY (1,024,000) over 128 episodes. Skipped with --smoke (compiling MJX
#               takes minutes on a CPU).
# Results: DIR/gpu-NAME.json and DIR/gpu-NAME.md (NAME: the GPU's name, or cpu-smoke), next to the
# files each step writes (DIR defaults to benchmarks/results; with --smoke to a new temporary folder).
# The exit status is 0 when no step failed (a skipped step names its reason), 1 otherwise.
# PYTHON (default: .venv/bin/python if present, else python3) runs everything, with this checkout on
# PYTHONPATH, so the package need not be installed.
set -uo pipefail

smoke=0
out_dir=""
while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) smoke=1 ;;
        --out-dir) out_dir="${2:?--out-dir needs a folder}"; shift ;;
        -h|--help) sed -n '2,31p' "$0"; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument $1 (use --smoke, --out-dir DIR)" >&2; exit 2 ;;
    esac
    shift
done

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [ "$smoke" = 1 ]; then
    export JAX_PLATFORMS=cpu CUDA_VISIBLE_DEVICES=""
    name="cpu-smoke"
    out_dir="${out_dir:-$(mktemp -d -t jax-td3-gpu-check.XXXXXX)}"
else
    if ! gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1) || [ -z "$gpu" ]; then
        echo "gpu_check.sh: no NVIDIA GPU found (nvidia-smi); use --smoke on a CPU machine" >&2
        exit 2
    fi
    name="$(echo "$gpu" | tr -cs 'A-Za-z0-9.' '-' | sed 's/-*$//')"
    out_dir="${out_dir:-benchmarks/results}"
fi
mkdir -p "$out_dir" || exit 2
log="$out_dir/gpu-$name.log"
steps="$out_dir/gpu-$name.steps.tsv"
: > "$log"
: > "$steps"
jax_td3=("$PYTHON" -m jax_td3.cli)

has() { "$PYTHON" -c "import $1" >/dev/null 2>&1; }

step() {  # step NAME COMMAND...: run, time and record one step
    local step_name="$1"; shift
    echo "== $step_name: $*" | tee -a "$log"
    local start end status
    start=$(date +%s%N)
    "$@" >>"$log" 2>&1
    status=$?
    end=$(date +%s%N)
    printf '%s\t%s\t%s\t%s\n' "$step_name" "$([ $status = 0 ] && echo passed || echo "failed ($status)")" \
        "$(awk "BEGIN { print ($end - $start) / 1e9 }")" "$*" >> "$steps"
    echo "   $step_name: exit $status" | tee -a "$log"
}

skip() {  # skip NAME REASON
    echo "== $1: skipped ($2)" | tee -a "$log"
    printf '%s\t%s\t0\t\n' "$1" "skipped: $2" >> "$steps"
}

if [ "$smoke" = 1 ]; then
    step parity "${jax_td3[@]}" parity --algo td3 --dtype float64 --updates 10 --hidden 32,32 --batch-size 16
    step bench "${jax_td3[@]}" bench --algos td3 --hidden 32-32 --batch 16 --impls torch_tuned jax_jit jax_scan \
        --repetitions 1 --min-rep-time 0.01 --scan-updates 10 --no-plots --no-progress \
        --out-dir "$out_dir" --name "gpu-$name-bench"
else
    # -x: the first parity failure is the one to read; JAX runs on the GPU, torch on CUDA.
    step parity "$PYTHON" -m pytest -q -x -p no:cacheprovider parity_tests
    step bench "${jax_td3[@]}" bench --device cuda --algos td3 --hidden 256-256 1024-1024 --batch 256 4096 \
        --repetitions 3 --no-progress --out-dir "$out_dir" --name "gpu-$name-bench"
fi

# FastTD3: the JAX update may be missing from an older checkout, PyTorch from an install without the
# torch extra; the step runs while either side can be measured (the other's rows say why they are skipped).
if has jax_td3.fasttd3.update || has torch; then
    if [ "$smoke" = 1 ]; then
        step fasttd3 "${jax_td3[@]}" bench --algos fasttd3 --hidden 32-16-8 --batch 16 --impls torch_tuned jax_jit \
            --repetitions 1 --min-rep-time 0.01 --no-plots --no-progress --out-dir "$out_dir" \
            --name "gpu-$name-fasttd3"
    else
        step fasttd3 "${jax_td3[@]}" bench --device cuda --algos fasttd3 --batch 32768 \
            --impls jax_jit jax_scan torch_tuned torch_compile torch_cudagraph --repetitions 3 --no-progress \
            --out-dir "$out_dir" --name "gpu-$name-fasttd3"
    fi
else
    skip fasttd3 "neither jax_td3.fasttd3.update nor PyTorch is installed"
fi

if [ "$smoke" = 1 ]; then
    step seeds "${jax_td3[@]}" bench compiled seeds --num-seeds 2 --total-steps 400 --learning-starts 200 \
        --eval-every 400 --eval-episodes 1 --repeats 1 --out-dir "$out_dir"
else
    step seeds "${jax_td3[@]}" bench compiled seeds --num-seeds 1,8,64 --total-steps 10000 --repeats 2 \
        --out-dir "$out_dir"
fi

if has brax; then
    if [ "$smoke" = 1 ]; then
        step brax "${jax_td3[@]}" bench compiled brax --num-envs 2 --num-seeds 1 --total-steps 100 \
            --out-dir "$out_dir"
    else
        step brax "${jax_td3[@]}" bench compiled brax --out-dir "$out_dir"
    fi
else
    skip brax "Brax is not installed (pip install 'jax-td3[brax]')"
fi

if has gymnasium; then
    gym_out="$out_dir/gpu-$name-gym-run"
    rm -rf "$gym_out"
    if [ "$smoke" = 1 ]; then
        step gym "${jax_td3[@]}" train --env Pendulum-v1 --total-steps 400 --learning-starts 200 --eval-every 400 \
            --eval-episodes 1 --hidden 32,32 --batch-size 16 --updates-per-call 50 --no-progress --out "$gym_out"
    else
        step gym "${jax_td3[@]}" train --env Pendulum-v1 --total-steps 20000 --learning-starts 1000 \
            --eval-every 10000 --eval-episodes 5 --hidden 256,256 --batch-size 256 --updates-per-call 100 \
            --no-progress --out "$gym_out"
    fi
else
    skip gym "Gymnasium is not installed (pip install 'jax-td3[envs]')"
fi

playground_runs() {  # FastTD3's Playground settings on two tasks; the T1 curve beside FastTD3's when given
    local task status=0 run_out
    for task in CheetahRun T1JoystickFlatTerrain; do
        run_out="$out_dir/gpu-$name-playground-$task"
        rm -rf "$run_out"
        "${jax_td3[@]}" train --compiled --preset fasttd3-playground --env "playground:$task" \
            --total-steps "${PLAYGROUND_STEPS:-5120000}" --eval-every "${PLAYGROUND_EVAL_EVERY:-1024000}" \
            --eval-episodes 128 --no-progress --out "$run_out" || status=1
    done
    if [ -n "${FASTTD3_PLAYGROUND_RESULT:-}" ]; then
        "$PYTHON" benchmarks/compare_fasttd3_curves.py "$out_dir/gpu-$name-playground-T1JoystickFlatTerrain/metrics.csv" \
            "$FASTTD3_PLAYGROUND_RESULT" T1JoystickFlatTerrain --out "$out_dir/gpu-$name-playground-compare.json" \
            || status=1
    fi
    return $status
}

if [ "$smoke" = 1 ]; then
    skip playground "smoke: compiling MuJoCo Playground's MJX physics takes minutes on a CPU"
elif has mujoco_playground; then
    step playground playground_runs
else
    skip playground "MuJoCo Playground is not installed (pip install 'jax-td3[playground]')"
fi

"$PYTHON" - "$out_dir" "$name" "$smoke" <<'EOF'
import datetime
import json
import platform
import sys
from pathlib import Path

out_dir, name, smoke = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "1"
steps = []
for line in (out_dir / f"gpu-{name}.steps.tsv").read_text().splitlines():
    step, status, seconds, command = line.split("\t")
    steps.append({"step": step, "status": status, "seconds": round(float(seconds), 1), "command": command})
try:
    import jax
    devices = [str(d) for d in jax.devices()]
except Exception as err:  # noqa: BLE001 - recorded, not fatal
    devices = [f"jax unavailable: {err}"]
gym_summary = out_dir / f"gpu-{name}-gym-run" / "summary.json"
result = {
    "name": name, "smoke": smoke, "date": datetime.datetime.now().isoformat(timespec="seconds"),
    "python": platform.python_version(), "jax_devices": devices, "steps": steps,
    "gym_run": json.loads(gym_summary.read_text()) if gym_summary.exists() else None,
}
(out_dir / f"gpu-{name}.json").write_text(json.dumps(result, indent=2) + "\n")
lines = [f"# GPU check: {name}{' (smoke, CPU)' if smoke else ''}", "",
         f"{result['date']}, JAX devices: {', '.join(devices)}", "",
         "| step | status | seconds | command |", "|---|---|---|---|"]
lines += [f"| {s['step']} | {s['status']} | {s['seconds']} | `{s['command']}` |" for s in steps]
lines += ["", f"Each step's output is in gpu-{name}.log; the bench, fasttd3 and seeds steps also wrote "
          "their own JSON and Markdown files here."]
(out_dir / f"gpu-{name}.md").write_text("\n".join(lines) + "\n")
print(f"gpu check: {out_dir / f'gpu-{name}.md'}")
sys.exit(1 if any(s["status"].startswith("failed") for s in steps) else 0)
EOF
