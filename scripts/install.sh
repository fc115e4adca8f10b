#!/usr/bin/env bash
# Install cryowarp into ./.venv on a fresh Debian machine (CPU torch from the local wheel).
#   bash scripts/install.sh          # runtime (+ dask)
#   bash scripts/install.sh --test   # also test tools and Debian's chromium for the browser tests
# GPU users: create the venv yourself, `pip install torch --index-url https://download.pytorch.org/whl/cu124`
# (or any CUDA build), then `pip install -e '.[dask]'`: the torch range in pyproject is satisfied by it.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="dask"
if [[ "${1:-}" == "--test" ]]; then
  extras="dask,test"
  # Debian's chromium drives the browser tests (Playwright cannot download its own here); RELION 3.1 is
  # the independent consumer our STAR files and CTFs are checked against.
  missing=()
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  command -v relion_ctf_toolbox >/dev/null 2>&1 || missing+=(relion)
  if (( ${#missing[@]} )); then
    if [[ $(id -u) == 0 ]]; then
      export DEBIAN_FRONTEND=noninteractive
      (apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 \
        || (apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null)) \
        || echo "warning: could not install ${missing[*]}; tests needing them will be skipped" >&2
    else
      echo "warning: not root, cannot apt-get install ${missing[*]}; tests needing them will be skipped" >&2
    fi
  fi
fi
[[ -x .venv/bin/python ]] || python3 -m venv .venv
export PIP_DISABLE_PIP_VERSION_CHECK=1
# torch first, pinned to the CPU wheel on disk; an unpinned torch would pull a multi-GB CUDA build.
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/pip install -q torch==2.13.0 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import torch" 
.venv/bin/pip install -q -e ".[${extras}]" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import cryowarp, torch; print('cryowarp', cryowarp.__version__, 'torch', torch.__version__)"
