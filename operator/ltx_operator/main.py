"""`ltx-operator`: run the operator (one active replica: roll the Deployment with
strategy Recreate, so two operators never act on the same resources)."""

from __future__ import annotations

import argparse
import os

import kopf

from .settings import OperatorSettings

LOG_FORMATS = {"plain": kopf.LogFormat.PLAIN, "full": kopf.LogFormat.FULL,
               "json": kopf.LogFormat.JSON}


def configure_logging(log_format: str, verbose: bool = False) -> None:
    """Logs at INFO; `json` is one object per line, with the resource's namespace and
    name under `object` for every line about a resource."""
    kopf.configure(verbose=verbose, log_format=LOG_FORMATS[log_format], log_refkey="object",
                   log_prefix=None)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="ltx-operator", description=__doc__)
    parser.add_argument("--namespace", "-n", action="append", default=[],
                        help="watch this namespace (repeat; default: LTX_OPERATOR_NAMESPACES "
                        "or all namespaces)")
    parser.add_argument("--liveness", default="http://0.0.0.0:8081/healthz",
                        help="liveness endpoint URL")
    parser.add_argument("--log-format", choices=sorted(LOG_FORMATS),
                        default=os.environ.get("LTX_OPERATOR_LOG_FORMAT", "full"),
                        help="log lines as text or JSON (env LTX_OPERATOR_LOG_FORMAT)")
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logs")
    args = parser.parse_args(argv)
    try:
        settings = OperatorSettings.from_env()
    except ValueError as exc:  # pydantic's errors too: the variable and the rule, no trace
        parser.error(f"invalid settings: {exc}")
    from . import handlers, login
    if args.namespace:
        settings = settings.model_copy(update={"namespaces": args.namespace})
    kopf.on.login()(login.login(login.connections(settings.max_workers, settings.namespaces)))
    configure_logging(args.log_format, args.verbose)
    handlers.configure(settings)
    kopf.run(standalone=True, clusterwide=not settings.namespaces,
             namespaces=settings.namespaces, liveness_endpoint=args.liveness)


if __name__ == "__main__":
    main()
