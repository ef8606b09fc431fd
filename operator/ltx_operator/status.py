"""Status conditions (Kubernetes API conventions) and the one-word phase."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

CONDITION_TYPES = ("Validated", "DatasetReady", "Training", "Succeeded", "Failed", "Suspended")


TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # RFC 3339, as Kubernetes writes times


def now() -> str:
    return datetime.now(UTC).strftime(TIME_FORMAT)


def seconds_since(stamp: str) -> float:
    return (datetime.now(UTC) - datetime.strptime(stamp, TIME_FORMAT).replace(tzinfo=UTC)
            ).total_seconds()


def set_condition(conditions: list[dict[str, Any]] | None, type_: str, status: bool, reason: str,
                  message: str, generation: int | None) -> list[dict[str, Any]]:
    """A new condition list with `type_` set; lastTransitionTime moves only when the
    status changes."""
    value = "True" if status else "False"
    out = [dict(c) for c in conditions or [] if c.get("type") != type_]
    previous = next((c for c in conditions or [] if c.get("type") == type_), None)
    changed = previous is None or previous.get("status") != value
    out.append({
        "type": type_, "status": value, "reason": reason, "message": message[:32_000],
        "lastTransitionTime": now() if changed else previous.get("lastTransitionTime", now()),
        "observedGeneration": generation,
    })
    return sorted(out, key=lambda c: CONDITION_TYPES.index(c["type"])
                  if c["type"] in CONDITION_TYPES else len(CONDITION_TYPES))


def is_finished(status: dict[str, Any] | None) -> bool:
    return (status or {}).get("phase") in ("Succeeded", "Failed")
