"""Status conditions (Kubernetes API conventions) on the typed `TrainingStatus`, and
the times they carry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from ltx_contract.resource import Condition, TrainingStatus

#: The order conditions are listed in (others go last).
CONDITION_TYPES = ("Validated", "JobCreated", "DatasetReady", "CaptionsComplete", "Running",
                   "Training", "Suspended", "Succeeded", "Failed")
FINISHED_PHASES = ("Succeeded", "Failed")
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # RFC 3339, as Kubernetes writes times


def stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(TIME_FORMAT)


def parse_time(text: str) -> datetime:
    """RFC 3339 in seconds, as Kubernetes writes it, or with a fraction."""
    layout = "%Y-%m-%dT%H:%M:%S.%fZ" if "." in text else TIME_FORMAT
    return datetime.strptime(text, layout).replace(tzinfo=UTC)


def seconds_since(text: str, moment: datetime | None = None) -> float:
    return ((moment or datetime.now(UTC)) - parse_time(text)).total_seconds()


def later(moment: datetime, seconds: float) -> str:
    """A due time, to the microsecond (a retry may be due in less than a second)."""
    return (moment + timedelta(seconds=seconds)).astimezone(UTC).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ")


def condition(status: TrainingStatus, type_: str) -> Condition | None:
    return next((c for c in status.conditions if c.type == type_), None)


def is_true(status: TrainingStatus, type_: str) -> bool:
    found = condition(status, type_)
    return found is not None and found.status == "True"


def set_condition(status: TrainingStatus, type_: str, value: bool, reason: str, message: str,
                  generation: int | None, moment: datetime) -> None:
    """Set `type_`; lastTransitionTime moves only when its status changes."""
    text = "True" if value else "False"
    previous = condition(status, type_)
    changed = previous is None or previous.status != text
    new = Condition(type=type_, status=text, reason=reason, message=message[:32_000],
                    last_transition_time=stamp(moment) if changed
                    else previous.last_transition_time,
                    observed_generation=generation)
    others = [c for c in status.conditions if c.type != type_]
    status.conditions = sorted([*others, new], key=_order)


def drop_condition(status: TrainingStatus, type_: str) -> None:
    status.conditions = [c for c in status.conditions if c.type != type_]


def _order(c: Condition) -> int:
    return CONDITION_TYPES.index(c.type) if c.type in CONDITION_TYPES else len(CONDITION_TYPES)


def is_finished(status: TrainingStatus | dict[str, Any] | None) -> bool:
    phase = status.get("phase") if isinstance(status, dict) else getattr(status, "phase", None)
    return phase in FINISHED_PHASES


def parse_status(raw: dict[str, Any] | None) -> TrainingStatus:
    """The stored status as the model; fields it does not know are dropped."""
    return TrainingStatus.model_validate(raw or {})


def dump_status(status: TrainingStatus) -> dict[str, Any]:
    return status.model_dump(by_alias=True, exclude_none=True, mode="json")


def merge_patch(old: Any, new: Any) -> Any:
    """The JSON merge patch (RFC 7386) that turns `old` into `new`."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    patch: dict[str, Any] = {key: None for key in old if key not in new}
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif old[key] != value:
            patch[key] = merge_patch(old[key], value)
    return patch
