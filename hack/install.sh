#!/bin/sh
# Install pdm-operator into a new virtual environment at $1 from the pinned
# runtime set. The Dockerfile runs exactly this, and so does a test, so the
# image's install steps are proven outside Docker too.
set -eu
target=${1:?usage: hack/install.sh VENV_DIR}
src=$(cd "$(dirname "$0")/.." && pwd)
python3 -m venv "$target"
"$target/bin/pip" install --quiet --no-cache-dir --require-hashes -r "$src/requirements/runtime.lock"
"$target/bin/pip" install --quiet --no-cache-dir --no-deps "$src"
"$target/bin/pdm-operator" --version
