#!/usr/bin/env python3
"""Build, or find cached, every image the local real node uses.

The images are made here (``hack/oci.py``, ``mmdebstrap``, ``buildah``): the
pause and busybox images, the stand-in GitLab toolbox and the operator's own
image from the ``Dockerfile``. Each is cached by content under
``${PDM_CACHE_DIR:-~/.cache/pdm-operator}/images/``, so this is a no-op once
built. ``make integration`` runs it beside the control plane's Go build: the
images mostly wait on the package registry while Go keeps the cores busy.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import oci
import operator_image
import realnode
import standin
from localcluster import CACHE


def main() -> int:
    cache = CACHE / "images"
    cache.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    try:
        for image in [*realnode.images(), standin.image(cache)]:
            oci.cached_archive(image, cache)
        operator_image.build(cache)
    except (standin.ImageError, operator_image.ImageError) as e:
        print(f"[images] error: {e}", file=sys.stderr)
        return 1
    print(f"[images] ready in {time.monotonic() - start:.0f}s: {cache}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
