#!/usr/bin/env bash
# test_tools.sh [--keep] [--fixture FILE]: end-to-end test of encode_text.py and decode_latents.py
# on tiny random models (recipes/tools/test_tools.py says what it checks). Needs a Python with
# torch, transformers, diffusers, safetensors and Pillow: PYTHON=/path/to/venv/bin/python, else
# python3. Not part of make test (CI has no torch). Build adaspa first (make) so the embeddings are
# also read by adaspa's own loader and the latents come from a real adaspa run.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-python3}"
if ! "$PY" -c "import torch, transformers, diffusers, safetensors, PIL" 2>/dev/null; then
  echo "test_tools.sh: $PY lacks torch, transformers, diffusers, safetensors or Pillow; set PYTHON=/path/to/venv/bin/python" >&2
  exit 2
fi
exec "$PY" recipes/tools/test_tools.py "$@"
