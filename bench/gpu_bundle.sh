#!/usr/bin/env bash
# Gather the wheels that bench/gpu_check.py needs on an offline GPU machine whose Python already
# has PyTorch (CUDA), Lightning, torchmetrics, transformers, accelerate and scikit-learn:
# diffusers (with importlib_metadata, which it imports) and faiss. This package itself runs from
# the source tree (PYTHONPATH=.), so it needs no wheel.
#
#   bash bench/gpu_bundle.sh [DEST] [PYTHON_VERSION]     # default: .whl and 3.12
#
# DEST is added to the repository's git exclude file so that it is never committed. The wheels
# are for x86-64 Linux; the versions are the ones installed in the local environment.
set -euo pipefail

dest="${1:-.whl}"
pyver="${2:-3.12}"
cd "$(git rev-parse --show-toplevel)"
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
python="$PYTHON"

exclude="$(git rev-parse --git-path info/exclude)"
mkdir -p "$(dirname "$exclude")"
grep -qxF "/$dest/" "$exclude" 2>/dev/null || echo "/$dest/" >>"$exclude"

version() { "$python" -c "import importlib.metadata as m; print(m.version('$1'))"; }
packages=(
  "diffusers==$(version diffusers)"
  "importlib_metadata"
  "faiss-cpu==$(version faiss-cpu)"
)

platforms=()
for n in 17 24 27 28 31 34 35 39; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
rm -rf "$dest"
mkdir -p "$dest"
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version "$pyver" \
  --implementation cp "${platforms[@]}" --platform manylinux2014_x86_64 --platform any \
  -d "$dest" "${packages[@]}"

du -sh "$dest"
ls -1 "$dest"
# Everything that travels (the tracked tree plus these wheels) must stay within 64 MiB.
total=$(( $(git ls-files -z | xargs -0 cat | wc -c) + $(cat "$dest"/*.whl | wc -c) ))
echo "tracked files + wheels: $(( total / 1048576 )) MiB (limit 64 MiB)"
test "$total" -le $(( 64 * 1048576 ))
