#!/bin/sh
# Install pdm-operator into a new virtual environment at $1 from the pinned
# runtime set. The Dockerfile runs exactly this, and so does a test, so the
# image's install steps are proven outside Docker too.
#
# A second argument does one half: `deps` (the venv and the pinned set: a
# layer of its own in the image, rebuilt only when the lock changes) or
# `package` (pdm-operator itself into that venv). Without it, both.
set -eu
target=${1:?usage: hack/install.sh VENV_DIR [deps|package]}
part=${2:-all}
src=$(cd "$(dirname "$0")/.." && pwd)
if [ "$part" != package ]; then
  python3 -m venv "$target"
  "$target/bin/pip" install --quiet --no-cache-dir --require-hashes -r "$src/requirements/runtime.lock"
fi
if [ "$part" != deps ]; then
  "$target/bin/pip" install --quiet --no-cache-dir --no-deps "$src"
  "$target/bin/pdm-operator" --version
fi
