#!/usr/bin/env bash
# The GPU benchmark in one call (bench/gpu.py; BENCHMARKS.md "GPU").
#
#   bash bench/gpu.sh --download [X.Y]   # here, with the package mirror: fill bench/wheels/ with
#                                        # Keras and its requirements for CPython X.Y (3.12)
#   bash bench/gpu.sh [gpu.py options]   # there (PyTorch and JAX installed, no TensorFlow, no
#                                        # network): install what is missing from bench/wheels/,
#                                        # then run bench/gpu.py (default --device cuda)
#
# The install goes into $SKELPOSE_SITE (default /tmp/skelpose-site) with --no-deps: only the
# carried wheels of packages the machine lacks (or, for Keras, has older than 3.15), nothing
# already there is replaced. The JSON goes to $OUT/gpu.json when $OUT is set, else
# runs/gpu/gpu.json (or --out FILE). PYTHON picks the interpreter (default python3),
# SKELPOSE_WHEELS the wheel folder.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=${SKELPOSE_WHEELS:-bench/wheels}
PYTHON=${PYTHON:-python3}
SITE=${SKELPOSE_SITE:-/tmp/skelpose-site}
# Keras' requirements and theirs (numpy is assumed: JAX and PyTorch need it).
PACKAGES="keras==3.15.1 absl-py rich namex h5py optree ml-dtypes packaging markdown-it-py mdurl
pygments typing-extensions"

if [ "${1:-}" = "--download" ]; then
    version=${2:-3.12}
    mkdir -p "$WHEELS"
    platforms=""
    for p in manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux2014 manylinux1; do
        platforms="$platforms --platform ${p}_x86_64"
    done
    # shellcheck disable=SC2086
    "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --implementation cp \
        --python-version "$version" $platforms -d "$WHEELS" $PACKAGES
    ls -l "$WHEELS"
    du -sh "$WHEELS"
    exit 0
fi

export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
# The distributions this interpreter lacks (a previous call's install in $SITE counts), by name.
# shellcheck disable=SC2086
missing=$("$PYTHON" - $PACKAGES <<'EOF'
import importlib.metadata
import sys

for requirement in sys.argv[1:]:
    name = requirement.split("==")[0]
    try:
        version = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        print(name)
        continue
    if name == "keras" and tuple(int(v) for v in version.split(".")[:2]) < (3, 15):
        print(name)
EOF
)
if [ -n "$missing" ]; then
    files=""
    for name in $missing; do
        stem=$(echo "$name" | tr 'A-Z-' 'a-z_')
        found=$(ls "$WHEELS"/"$stem"-*.whl 2>/dev/null | head -n 1 || true)
        if [ -z "$found" ]; then
            echo "gpu.sh: $name is not installed and $WHEELS/ has no wheel of it" \
                "(run 'bash bench/gpu.sh --download' where the package mirror is)" >&2
            exit 1
        fi
        files="$files $found"
    done
    echo "gpu.sh: installing into $SITE:$files"
    # shellcheck disable=SC2086
    "$PYTHON" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target "$SITE" $files || {
        echo "gpu.sh: the carried wheels do not install on Python" \
            "$("$PYTHON" -c 'import platform; print(platform.python_version())');" \
            "download them for it: bash bench/gpu.sh --download X.Y" >&2
        exit 1
    }
fi
out=runs/gpu/gpu.json
if [ -n "${OUT:-}" ]; then
    out="$OUT/gpu.json"
fi
exec "$PYTHON" -m bench.gpu --out "$out" "$@"
