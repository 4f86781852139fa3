#!/usr/bin/env python3
"""The blocking CI approach's last step: record the deployment synchronously.

What a deployer's CI job does today after ``kubectl wait`` on the migration
Job: one python-gitlab call per tracked project, in the job, before the job
may end. Exit 0 when every project has its deployment; 1 otherwise (the CI
job, and so the pipeline, fails).

    GITLAB_TOKEN=... ci_record.py URL ENVIRONMENT SHA PROJECT...

``--timeout`` is the per-call timeout; python-gitlab's default is none at all,
which would hold a hanging call until the CI job's own timeout.
"""

from __future__ import annotations

import argparse
import os
import sys

import gitlab


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("environment")
    ap.add_argument("sha")
    ap.add_argument("projects", nargs="+")
    ap.add_argument("--timeout", type=float, default=30.0)
    args = ap.parse_args()
    gl = gitlab.Gitlab(args.url, private_token=os.environ["GITLAB_TOKEN"], timeout=args.timeout)
    try:
        for path in args.projects:
            gl.projects.get(path, lazy=True).deployments.create(
                {
                    "environment": args.environment,
                    "sha": args.sha,
                    "ref": "master",
                    "tag": False,
                    "status": "success",
                }
            )
    except Exception as e:  # noqa: BLE001 - any failure fails the CI job, as it would
        print(f"recording the deployment failed: {type(e).__name__}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
