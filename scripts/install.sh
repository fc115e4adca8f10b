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
# The web UI's Plotly: the partial "cartesian" bundle from npm (scatter, histogram, heatmap, ...; 1.5 MB
# instead of the plotly package's full 4.8 MB, so the overview loads faster) into the git-ignored
# src/cryowarp/web/static/vendor/. Without npm (or offline) the UI serves the full bundle; nothing breaks.
plotly_js=4.1.1
vendor=src/cryowarp/web/static/vendor
if ! head -c 200 "$vendor/plotly-cartesian.min.js" 2>/dev/null | grep -q "v$plotly_js\b"; then
  if command -v npm >/dev/null 2>&1; then
    tmp=$(mktemp -d)
    if (cd "$tmp" && timeout 300 npm pack --silent "plotly.js-cartesian-dist-min@$plotly_js" >/dev/null 2>&1 \
        && tar xzf plotly.js-cartesian-dist-min-*.tgz && test -s package/plotly-cartesian.min.js); then
      mkdir -p "$vendor"
      cp "$tmp/package/LICENSE" "$vendor/plotly-LICENSE"
      cp "$tmp/package/plotly-cartesian.min.js" "$vendor/.plotly.part" && mv "$vendor/.plotly.part" "$vendor/plotly-cartesian.min.js"
    else
      echo "warning: npm could not fetch plotly.js-cartesian-dist-min@$plotly_js; the web UI uses the full bundle" >&2
    fi
    rm -rf "$tmp"
  else
    echo "warning: npm not found; the web UI uses Plotly's full bundle (slower first load)" >&2
  fi
fi
.venv/bin/python -c "import cryowarp, torch; print('cryowarp', cryowarp.__version__, 'torch', torch.__version__)"
