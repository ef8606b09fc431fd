"""`ltx-operator`: run the operator (one active replica: roll the Deployment with
strategy Recreate, so two operators never act on the same resources)."""

from __future__ import annotations

import argparse

import kopf

from .settings import OperatorSettings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="ltx-operator", description=__doc__)
    parser.add_argument("--namespace", "-n", action="append", default=[],
                        help="watch this namespace (repeat; default: LTX_OPERATOR_NAMESPACES "
                        "or all namespaces)")
    parser.add_argument("--liveness", default="http://0.0.0.0:8081/healthz",
                        help="liveness endpoint URL")
    args = parser.parse_args(argv)
    from . import handlers

    settings = OperatorSettings.from_env()
    if args.namespace:
        settings = settings.model_copy(update={"namespaces": args.namespace})
    handlers.configure(settings)
    kopf.run(standalone=True, clusterwide=not settings.namespaces,
             namespaces=settings.namespaces, liveness_endpoint=args.liveness)


if __name__ == "__main__":
    main()
