"""Input checks: request bodies, path segments and query strings, validated by pydantic models.

Each failure is a 400 whose code names what failed (``invalid_room_name``, ``invalid_since``) and whose
message says what is accepted; the code and message of a field are the ``Invalid`` in its annotation.
The same types give the OpenAPI document its schemas (``web.openapi``), so the document says exactly
what the checks accept. Bodies are strict (``"10"`` is not 10, ``1`` is not ``true``); query strings
are text by nature, so their models convert.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar, get_args, get_origin

from flask import request
from pydantic import AfterValidator, BaseModel, BeforeValidator, Field, StringConstraints, TypeAdapter
from pydantic import ValidationError as PydanticError
from pydantic_core import PydanticCustomError

from quantcoach.roles import ROLES
from web.errors import ApiError

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Invalid:
    """Annotation metadata: the error code and message of a value that fails its checks."""

    code: str
    message: str


#: Room names end up in URLs, Kafka keys, window ids (``<room>:<seq>``) and file names: no '/', ':'.
ROOM_NAME_RE = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
#: ``/rooms/create`` is a route, so no room may be called ``create``.
RESERVED_ROOM_NAMES = frozenset({"create"})
#: Identities end up in participant keys and recording file names (``<role>-<identity>.wav``).
IDENTITY_RE = r"[A-Za-z0-9][A-Za-z0-9_.@+-]{0,127}"
NAME_MAX = 128
_NUMBER_RE = re.compile(r"\+?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _not_reserved(value: str) -> str:
    if value in RESERVED_ROOM_NAMES:
        raise PydanticCustomError("reserved", "{name} is reserved", {"name": repr(value)})
    return value


def _decimal(value: Any) -> Any:
    # A query number is written in decimal: no 'inf', 'nan', '0x10', '1_000' or surrounding blanks.
    if isinstance(value, str) and not _NUMBER_RE.fullmatch(value):
        raise ValueError("not a decimal number")
    return value


RoomName = Annotated[
    str,
    StringConstraints(pattern=f"^{ROOM_NAME_RE}$", max_length=64),
    AfterValidator(_not_reserved),
    Field(json_schema_extra={"not": {"enum": sorted(RESERVED_ROOM_NAMES)}}),
    Invalid("invalid_room_name", "1-64 characters of A-Z a-z 0-9 _ . -, starting alphanumeric"),
]
Identity = Annotated[
    str,
    StringConstraints(pattern=f"^{IDENTITY_RE}$", max_length=128),
    Invalid("invalid_identity", "1-128 characters of A-Z a-z 0-9 _ . @ + -, starting alphanumeric"),
]
DisplayName = Annotated[
    str,
    StringConstraints(pattern=r"^[^\x00-\x1f\x7f]*$", max_length=NAME_MAX),
    Invalid("invalid_name", f"a string of at most {NAME_MAX} printable characters"),
]
Role = Annotated[Literal[ROLES], Invalid("invalid_role", f"one of {', '.join(ROLES)}")]


def _integral(value: Any) -> Any:
    # JSON has one number type: 10.0 is the integer 10 (as JSON Schema's "integer" says); 10.5 is not.
    return int(value) if isinstance(value, float) and value.is_integer() else value


def json_int(**bounds: int) -> Any:
    """The type of an integer in a JSON body, within ``bounds`` (``ge=1``, ``le=1000``, ...)."""
    return Annotated[int, Field(**bounds), BeforeValidator(_integral)]


def query_number(**bounds: float) -> Any:
    """The type of a number in a query string (``?since=2.5``): decimal, finite, within ``bounds``
    (``ge=0``, ``gt=0``, ...)."""
    return Annotated[float, Field(allow_inf_nan=False, **bounds), BeforeValidator(_decimal)]


_ROOM_NAME = TypeAdapter(RoomName)


def json_object(*, optional: bool = False) -> dict[str, Any]:
    """The request body as a JSON object; an empty body is ``{}`` when ``optional``."""
    raw = request.get_data(cache=True)  # bounded by MAX_CONTENT_LENGTH (413 beyond it)
    if not raw.strip():
        if optional:
            return {}
        raise ApiError(400, "invalid_body", "a JSON object body is required")
    if not request.is_json:
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError(400, "invalid_json", "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_body", "the body must be a JSON object")
    return body


def body(model: type[M], *, optional: bool = False) -> M:
    """The request's JSON object body, validated by ``model``."""
    return parse(model, json_object(optional=optional))


def query(model: type[M]) -> M:
    """The request's query string, validated by ``model`` (the first value of each parameter)."""
    return parse(model, request.args.to_dict())


def parse(model: type[M], data: dict[str, Any]) -> M:
    try:
        return model.model_validate(data)
    except PydanticError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0])
        raise _invalid(err, name, _marker(model.model_fields[name]), name) from None


def room_name(value: Any, label: str = "room name") -> str:
    """A room name from a path segment; 400 ``invalid_room_name`` naming ``label``."""
    try:
        return _ROOM_NAME.validate_python(value, strict=True)
    except PydanticError as exc:
        raise _invalid(exc.errors()[0], "room_name", _marker(RoomName), label) from None


def _invalid(err: Any, name: str, marker: Invalid | None, label: str) -> ApiError:
    # Our own checks say what failed (a reserved name); the type's checks say what is accepted.
    if err["type"] == "reserved" or marker is None:
        return ApiError(400, marker.code if marker else f"invalid_{name}", f"{label}: {err['msg']}")
    return ApiError(400, marker.code, f"{label}: {marker.message}")


def _marker(annotation: Any) -> Invalid | None:
    """The ``Invalid`` of a field or type, looked for in its metadata and inside ``X | None``."""
    for meta in getattr(annotation, "metadata", ()):
        if isinstance(meta, Invalid):
            return meta
    inner = getattr(annotation, "annotation", annotation)
    if get_origin(inner) is Annotated:
        found = next((m for m in inner.__metadata__ if isinstance(m, Invalid)), None)
        return found or _marker(get_args(inner)[0])
    return next((m for arg in get_args(inner) if (m := _marker(arg)) is not None), None)
