"""Opening and closing one session's WebSocket, what a session can end in, and keeping the key out of logs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any, Literal

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from stt.clock import Clock
from stt.elevenlabs.options import ElevenLabsOptions

_closing: set[asyncio.Future[None]] = set()  # background closes (a reference keeps them alive)


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a session ended: ``finished`` (input done), ``ended`` (benign: reopen when there is
    speech), ``retry`` (a failure: back off), ``fatal`` (give up)."""

    kind: Literal["finished", "ended", "retry", "fatal"]
    reason: str


@dataclass(frozen=True, slots=True)
class Link:
    """Where and how a stream's sessions connect, and on which clock they time things."""

    key: str  # room/identity, for logs
    url: str
    secret: str = field(repr=False)  # the API key
    clock: Clock


async def open_socket(link: Link, o: ElevenLabsOptions) -> ClientConnection | Outcome:
    """The WebSocket, or the outcome of a handshake that failed."""
    try:
        return await asyncio.wait_for(
            connect(
                link.url,
                additional_headers={"xi-api-key": link.secret},
                open_timeout=o.connect_timeout_s,
                close_timeout=2.0,
                proxy=True if o.use_system_proxy else None,
                logger=ScrubbingLogger(logging.getLogger("websockets.client"), link.secret),
            ),
            o.connect_timeout_s + 1.0,
        )
    except InvalidStatus as exc:
        status = exc.response.status_code
        kind = "fatal" if status in (400, 401, 403, 404) else "retry"
        return Outcome(kind, f"handshake rejected with HTTP {status}")
    except InvalidURI:
        return Outcome("fatal", "invalid ELEVENLABS_BASE_URL")
    except (OSError, TimeoutError, InvalidHandshake, ConnectionClosed) as exc:
        return Outcome("retry", f"connect failed ({type(exc).__name__})")


def close_in_background(ws: ClientConnection) -> None:
    """A peer that stopped reading (it just sent an error) can hold the closing handshake for
    close_timeout, and a session's outcome must not wait for that."""
    task = asyncio.ensure_future(_close_quietly(ws))
    _closing.add(task)
    task.add_done_callback(_closing.discard)


async def _close_quietly(ws: ClientConnection) -> None:
    with contextlib.suppress(Exception):
        await ws.close()


def scrub(text: str, secret: str) -> str:
    return text.replace(secret, "***") if secret else text


class ScrubbingLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """websockets logs request headers at DEBUG, the xi-api-key among them: mask it."""

    def __init__(self, logger: logging.Logger, secret: str) -> None:
        super().__init__(logger, {})
        self._secret = secret

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if not self.isEnabledFor(level):
            return
        try:
            text = str(msg) % args if args else str(msg)
        except (TypeError, ValueError):
            text = f"{msg} {args}"
        kwargs.setdefault("stacklevel", 2)
        self.logger.log(level, "%s", scrub(text, self._secret), **kwargs)
