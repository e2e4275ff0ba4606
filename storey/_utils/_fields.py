"""Reading a named field of an event body, with the errors of spec STEPS.md §3.5 (one home for sources,
aggregation steps and writers)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from storey.errors import MissingFieldError

if TYPE_CHECKING:
    from storey.event import Event

__all__ = ["body_field", "missing"]


def missing(step: str, field: Any, event: Event) -> MissingFieldError:
    """The `MissingFieldError` for an absent body field (names step, field, event and origin)."""
    where = ""
    origin = event.origin
    if origin is not None and origin[0] is not None:
        where = f" (file {origin[0]!r}, line/row {origin[1]})"
    msg = f"step {step!r}: field {field!r} is missing in event {event.id!r}{where}"
    return MissingFieldError(msg)


def body_field(event: Event, field: Any, step: str, what: str = "field") -> Any:
    """``event.body[field]``; `MissingFieldError` (naming step, field, event and origin) when absent, or
    `TypeError` when the body is not a mapping."""
    try:
        return event.body[field]
    except (KeyError, IndexError):
        raise missing(step, field, event) from None
    except TypeError:
        msg = f"step {step!r}: {what} {field!r} needs a mapping body, not {type(event.body).__name__}"
        raise TypeError(msg) from None
