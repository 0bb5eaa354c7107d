"""What the blueprints share: the outside things a request may use, reached through ``services()``.

``create_app`` builds one ``Services`` per app from the settings (or takes test doubles) and keeps it
in ``app.extensions``; blueprints import only this module, never ``web.app``. The transcript store is
opened on first use (``StoreAccess``), so that the API starts, and its other routes serve, while the
database is down: the store's routes then answer 503 and the next request tries again.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from flask import Flask, current_app
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from connectors.kafka.room_events import RoomEventPublisher
from connectors.livekit.api import RoomsClient, TokenMinter, WebhookVerifier
from connectors.store import Store
from quantcoach.settings import Settings
from web.errors import ApiError

log = logging.getLogger(__name__)

EXTENSION = "quantcoach"  # the key of the app's Services in ``app.extensions``
OPEN_RETRY_S = 2.0  # after a failed open, requests answer 503 at once for this long before trying again
PG_CONNECT_TIMEOUT_S = 5  # an unreachable PostgreSQL host must not hold a request thread for minutes


def _store_unavailable() -> ApiError:
    return ApiError(503, "store_unavailable", "the transcript store is unavailable; try again later")


class StoreAccess:
    """The app's one transcript store, opened on first use and shared by the request threads.

    A SQLite file that does not exist yet means nothing is stored yet: ``get()`` answers ``None`` and
    creates nothing (reads must not create the database of a store job that has not run; the tests'
    apps then leave no file behind). A failed open is retried, at most every ``OPEN_RETRY_S``.
    """

    def __init__(self, url: str) -> None:
        self._url = url
        self._secret = ""
        self._sqlite_file: Path | None = None
        self._store: Store | None = None
        self._retry_at = -math.inf
        self._lock = threading.Lock()
        try:
            parsed = make_url(url)
        except (SQLAlchemyError, ValueError):
            return  # the app still starts; each open attempt fails and answers 503
        if parsed.get_backend_name() == "sqlite":
            db = parsed.database or ""
            if db and db != ":memory:" and not db.startswith("file:"):
                self._sqlite_file = Path(db)
        elif parsed.get_backend_name() == "postgresql" and "connect_timeout" not in parsed.query:
            parsed = parsed.update_query_dict({"connect_timeout": str(PG_CONNECT_TIMEOUT_S)})
            self._url = parsed.render_as_string(hide_password=False)
        self._secret = parsed.password or ""

    def get(self) -> Store | None:
        """The store, or ``None`` while its SQLite file does not exist; ``ApiError`` 503 if unreachable."""
        store = self._store
        if store is not None:
            return store
        if self._sqlite_file is not None and not self._sqlite_file.exists():
            return None
        with self._lock:  # one open at a time; the others wait for its result
            if self._store is not None:
                return self._store
            if time.monotonic() < self._retry_at:
                raise _store_unavailable()
            try:
                self._store = Store(self._url)
            except (SQLAlchemyError, OSError, ValueError, ImportError) as exc:
                self._retry_at = time.monotonic() + OPEN_RETRY_S
                log.warning("transcript store unavailable: %s", self._describe(exc))
                raise _store_unavailable() from None
            return self._store

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None

    def _describe(self, exc: BaseException) -> str:
        # First line only (SQLAlchemy appends SQL and links), with the URL and password masked.
        text = (str(exc).strip().splitlines() or [""])[0].replace(self._url, "(DATABASE_URL)")
        if self._secret:
            text = text.replace(self._secret, "***")
        return f"{type(exc).__name__}: {text}"


@dataclass
class Services:
    settings: Settings
    rooms: RoomsClient | None
    minter: TokenMinter | None
    webhooks: WebhookVerifier | None
    publisher: RoomEventPublisher | None
    store: StoreAccess | None = None  # the transcript store, opened on first use
    # health's cached LiveKit probe: (monotonic time, reachable)
    probe: tuple[float, bool] = (-math.inf, False)
    probe_lock: threading.Lock = field(default_factory=threading.Lock)

    def need_rooms(self) -> RoomsClient:
        if self.rooms is None:
            raise _livekit_not_configured()
        return self.rooms

    def need_minter(self) -> TokenMinter:
        if self.minter is None:
            raise _livekit_not_configured()
        return self.minter

    def need_store(self) -> StoreAccess:
        if self.store is None:  # only a Services built by hand lacks one
            raise ApiError(503, "store_unavailable", "no transcript store configured")
        return self.store


def _livekit_not_configured() -> ApiError:
    return ApiError(
        503,
        "livekit_not_configured",
        "LiveKit is not configured (set LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET)",
    )


def install(app: Flask, svc: Services) -> None:
    app.extensions[EXTENSION] = svc


def services() -> Services:
    """The current app's services (inside a request or an app context)."""
    return current_app.extensions[EXTENSION]
