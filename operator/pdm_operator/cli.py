"""The ``pdm-operator`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pdm_operator import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pdm-operator",
        description="Run GitLab post-deployment migrations as Kubernetes Jobs.",
    )
    parser.add_argument("--version", action="version", version=f"pdm-operator {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run the operator")
    scope = run.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        dest="namespaces",
        help="watch this namespace (repeatable); default: all namespaces",
    )
    scope.add_argument(
        "-A", "--all-namespaces", action="store_true", help="watch all namespaces (the default)"
    )
    run.add_argument(
        "--lock-namespace",
        default=None,
        help="namespace of the per-environment Leases (default: $POD_NAMESPACE, else 'default')",
    )
    run.add_argument(
        "--kubeconfig", default=None, help="kubeconfig file (default: $KUBECONFIG or in-cluster)"
    )
    run.add_argument(
        "--liveness-port", type=int, default=8080, help="port of GET /healthz (default 8080)"
    )
    run.add_argument(
        "--workers", type=int, default=32, help="threads for Kubernetes API calls (default 32)"
    )
    run.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "run":
        from pdm_operator import runner  # noqa: PLC0415 - keeps `render`/`--help` free of Kopf

        return runner.run(
            runner.Options(
                namespaces=list(args.namespaces),
                lock_namespace=args.lock_namespace or runner.default_lock_namespace(),
                kubeconfig=args.kubeconfig,
                liveness_port=args.liveness_port,
                workers=args.workers,
                verbose=args.verbose,
            )
        )
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
