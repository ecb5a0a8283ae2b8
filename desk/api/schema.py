"""What every operation of the desk's API shares in its OpenAPI: error answers, path id bounds,
a listing's parameters.

Every refusal the desk sends is `{"detail": ...}`: a sentence (401, 403, 404, 409, 413, a
refusal by the desk's own rules) or FastAPI's list of field problems (a malformed request).
Declaring that one shape for every operation lets clients, and the API fuzz test, rely on it.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path, Query
from pydantic import BaseModel, ConfigDict

MAX_RECORD_ID = 2**63 - 1
"""Record ids are 64-bit signed integers in the store: a larger path id names nothing."""

RecordId = Annotated[int, Path(ge=1, le=MAX_RECORD_ID, description="The record's id.")]
"""A record's numeric id in a path: out of range is a 422 naming the field, not a store error."""

Offset = Annotated[int, Query(ge=0, le=MAX_RECORD_ID, description="Records to skip.")]
"""How many records a listing skips, bounded like the ids the store can count."""

Limit = Annotated[int, Query(ge=1, le=1000)]
"""How many records a listing answers at most: 1,000 bounds one answer's size."""

States = Annotated[list[str] | None, Query()]
"""The states a listing keeps (a repeated query parameter); none given, every state."""


class FieldProblem(BaseModel):
    """One problem with a request's field: where (`loc`), what (`msg`) and its kind (`type`)."""

    model_config = ConfigDict(extra="allow")

    loc: list[str | int]
    msg: str
    type: str


class ErrorAnswer(BaseModel):
    """Why the desk refused a request: a sentence, or the problems field by field."""

    detail: str | list[FieldProblem]


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {
        "model": ErrorAnswer,
        "description": (
            "Refused: no or unknown token (401), a role it lacks (403), no such record (404), "
            "a conflict with the record's state (409), a body too large (413), or fields "
            "that fail validation (422)."
        ),
    },
}
"""Responses every operation of the desk may give besides its success."""
