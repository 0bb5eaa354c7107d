"""Converters for the ``quantcoach`` command's options: each bad value is one ``must be ...`` message.

click prints them as ``error: quantcoach replay: argument --speed: must be ...`` (see ``cli.main``).
"""

from __future__ import annotations

import math
from typing import Any

import click


class Speed(click.ParamType):
    """``max`` (None: never sleep), ``realtime`` (1.0) or a positive factor of real time."""

    name = "max|realtime|FACTOR"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float | None:
        if value is None or isinstance(value, float):
            return value
        if value == "max":
            return None
        if value == "realtime":
            return 1.0
        try:
            factor = float(value)
        except ValueError:
            factor = math.nan
        if not math.isfinite(factor) or factor <= 0:
            self.fail("must be max, realtime or a positive factor such as 4", param, ctx)
        return factor


class Positive(click.ParamType):
    """A positive (finite) ``int`` or ``float``."""

    def __init__(self, kind: type[int] | type[float]) -> None:
        self.kind = kind
        self.name = f"positive {kind.__name__}"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            v = self.kind(value)
        except (TypeError, ValueError):
            self.fail(f"must be a positive {self.kind.__name__}", param, ctx)
        if not math.isfinite(v) or v <= 0:
            self.fail(f"must be a positive {self.kind.__name__}", param, ctx)
        return v


class NonNegative(click.ParamType):
    """A finite float >= 0."""

    name = "number >= 0"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            v = float(value)
        except (TypeError, ValueError):
            v = math.nan
        if not math.isfinite(v) or v < 0:
            self.fail("must be a number >= 0", param, ctx)
        return v


class Partitions(click.ParamType):
    """Partition numbers separated by commas: ``0,1``."""

    name = "N[,N...]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> list[int]:
        if isinstance(value, list):
            return value
        parts = [p.strip() for p in str(value).split(",")]
        if not all(p.isdigit() for p in parts):
            self.fail(
                f"must be partition numbers separated by commas, such as 0,1 (got {value!r})", param, ctx
            )
        return sorted({int(p) for p in parts})


class HostPort(click.ParamType):
    """``HOST:PORT``, the port in 1-65535."""

    name = "HOST:PORT"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        host, _, port = str(value).rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            self.fail(f"must be HOST:PORT, got {value!r}", param, ctx)
        return str(value)
