#!/usr/bin/env bash
# The CUDA checks (tests/gpu) on a machine with an NVIDIA GPU:
#
#   bash scripts/gpu_check.sh        # from anywhere in the checkout
#
# Prints the GPU, the driver and the versions of every runtime dependency, then runs
# tests/gpu in two pytest sessions -- the checks, then the quick demo on the GPU (which takes
# longest; GPU_CHECK_DEMO=0 skips it) -- and writes gpu_check.log and JUnit reports into $OUT
# (default build/gpu-check). Every check runs even when one fails: a single run should say
# everything it can. Exit status 0 when all ran and passed.
#
# Needs python3 with a CUDA build of torch, transformers and the other runtime dependencies,
# and pytest (pytest-timeout, when installed, bounds each test). Wheels in .gpuwheels/ are
# installed first without an index (for machines offline). rlalign itself is not installed:
# PYTHONPATH=src, which the subprocesses the tests start (`python -m rlalign`, torchrun) inherit.
# Time limits (seconds): GPU_CHECK_TEST_TIMEOUT per test (150), GPU_CHECK_CORE_TIMEOUT for the
# checks (300), GPU_CHECK_DEMO_TIMEOUT for the demo (240).

set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
OUT=${OUT:-build/gpu-check}
mkdir -p "$OUT"
PY=${PYTHON:-python3}

install_wheels() {
    compgen -G ".gpuwheels/*.whl" >/dev/null || return 0
    echo "== installing the wheels of .gpuwheels/"
    if ! "$PY" -m pip install --quiet --no-deps --no-index .gpuwheels/*.whl; then
        # e.g. an externally managed Python (PEP 668): a private directory instead
        echo "   (into build/gpu-site instead)"
        "$PY" -m pip install --quiet --no-deps --no-index --upgrade --target build/gpu-site \
            .gpuwheels/*.whl || return 1
        export PYTHONPATH="$PWD/build/gpu-site${PYTHONPATH:+:$PYTHONPATH}"
    fi
}

describe_machine() {
    echo "== $(date -u +%FT%TZ) rlalign $(git rev-parse --short HEAD 2>/dev/null || echo '(no git)')"
    nvidia-smi -L || echo "nvidia-smi failed"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    "$PY" - <<'EOF'
import importlib, platform
print("python", platform.python_version())
for name in ("torch", "transformers", "tokenizers", "safetensors", "peft", "pydantic", "yaml",
             "numpy", "gymnasium", "tqdm", "tensorboard", "matplotlib", "PIL", "pytest",
             "pytest_timeout", "rlalign"):
    try:
        module = importlib.import_module(name)
        print(f"{name:15s}{getattr(module, '__version__', '(no version)')}")
    except Exception as exc:  # report every missing piece, then let the tests say the rest
        print(f"{name:15s}MISSING ({type(exc).__name__}: {exc})")
try:
    import torch
except ImportError:
    raise SystemExit(0)  # reported above; the CUDA check below fails
print("cuda", torch.version.cuda, "| available:", torch.cuda.is_available(),
      "| devices:", torch.cuda.device_count())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(0), "| capability",
          torch.cuda.get_device_capability(0), "| bf16:", torch.cuda.is_bf16_supported())
    try:
        print("nccl", torch.cuda.nccl.version())
    except Exception as exc:
        print("nccl MISSING", exc)
EOF
}

run_pytest() {  # NAME TIMEOUT ARGS...
    local name=$1 limit=$2
    shift 2
    local per_test=()
    "$PY" -c "import pytest_timeout" 2>/dev/null &&
        per_test=(--timeout "${GPU_CHECK_TEST_TIMEOUT:-150}")
    echo "== pytest ($name): limit ${limit}s"
    timeout --kill-after=20 "$limit" "$PY" -m pytest tests/gpu -v -p no:cacheprovider \
        --durations=0 --junitxml="$OUT/junit-$name.xml" ${per_test[@]+"${per_test[@]}"} "$@"
    local status=$?
    if [ "$status" = 124 ] || [ "$status" = 137 ]; then echo "== pytest ($name) hit its time limit"; fi
    echo "== pytest ($name): exit status $status"
    return "$status"
}

main() {
    export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
    export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
    install_wheels || echo "== installing the wheels failed; going on with what is installed"
    describe_machine
    if [ "${RLALIGN_TEST_DEVICE:-cuda}" = cuda ] &&
        ! "$PY" -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then
        echo "== CUDA is not available: every check would be skipped (RLALIGN_TEST_DEVICE=cpu"
        echo "   runs them on the CPU)"
        return 1
    fi
    local status=0
    run_pytest core "${GPU_CHECK_CORE_TIMEOUT:-300}" -k "not quick_demo" || status=1
    if [ "${GPU_CHECK_DEMO:-1}" != 0 ]; then
        run_pytest demo "${GPU_CHECK_DEMO_TIMEOUT:-240}" -k quick_demo -rA || status=1
    fi
    echo "== done: $([ "$status" = 0 ] && echo "all passed" || echo "FAILURES (see above)")"
    return "$status"
}

main 2>&1 | tee "$OUT/gpu_check.log"
exit "${PIPESTATUS[0]}"
