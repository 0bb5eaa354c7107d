"""The Flask app factory: ``create_app(settings)`` builds the REST API from a settings object.

One blueprint per resource (rooms, tokens, webhooks, health, transcripts, openapi). The outside things
the routes use (RoomService client, token minter, webhook verifier, room-event publisher, transcript
store) are built here from the settings, or passed in by tests, and reached through ``services()``.
With LiveKit unconfigured the app still starts: health says so and the LiveKit routes answer 503. The
transcript store is opened on first use, so an unreachable database makes only its routes answer 503.
"""

from __future__ import annotations

import atexit
import logging
import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, current_app

from connectors.livekit_rooms import RoomsClient, TokenMinter, WebhookVerifier
from connectors.room_events import KafkaRoomEventPublisher, RoomEventPublisher
from quantcoach.settings import Secret, Settings
from web.auth import ApiKeys, install_access_control
from web.errors import ApiError, register_error_handlers

if TYPE_CHECKING:
    from web.transcripts import StoreAccess

log = logging.getLogger(__name__)

_EXT = "quantcoach"


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
            raise _not_configured()
        return self.rooms

    def need_minter(self) -> TokenMinter:
        if self.minter is None:
            raise _not_configured()
        return self.minter

    def need_store(self) -> StoreAccess:
        if self.store is None:  # only a Services built by hand lacks one
            raise ApiError(503, "store_unavailable", "no transcript store configured")
        return self.store


def _not_configured() -> ApiError:
    return ApiError(
        503,
        "livekit_not_configured",
        "LiveKit is not configured (set LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET)",
    )


def _reveal(value: str) -> str:
    # Settings built in code may hold a plain str where from_env() puts a Secret.
    return value.reveal() if isinstance(value, Secret) else str.__str__(value)


def services() -> Services:
    return current_app.extensions[_EXT]


def create_app(
    settings: Settings,
    *,
    rooms: RoomsClient | None = None,
    publisher: RoomEventPublisher | None = None,
    config: Mapping[str, Any] | None = None,
) -> Flask:
    """Build the app. ``rooms`` and ``publisher`` replace the ones built from ``settings`` (tests);
    ``config`` overrides Flask config keys, e.g. the event stream's ``SSE_*`` timings."""
    # Blueprints import services() from here; importing them late keeps that cycle harmless.
    from web import health, openapi, tokens, transcripts, webhooks
    from web import rooms as rooms_bp

    app = Flask("quantcoach.web")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.config.update(transcripts.SSE_DEFAULTS)
    app.config.update(config or {})
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.url_map.converters["room"] = rooms_bp.RoomConverter
    logging.getLogger("web").setLevel(settings.log_level.upper())
    logging.getLogger("connectors").setLevel(settings.log_level.upper())

    key, secret = _reveal(settings.livekit_api_key), _reveal(settings.livekit_api_secret)
    if settings.livekit_configured:
        if rooms is None:
            rooms = RoomsClient(settings.livekit_url, key, secret)
            atexit.register(rooms.close)  # close the aiohttp session and loop thread on a clean exit
    else:
        rooms = None
        log.warning("LiveKit is not configured: room and token routes will answer 503")
    has_keys = bool(key and secret)
    if publisher is None and settings.kafka_configured and settings.webhook_forward:
        publisher = KafkaRoomEventPublisher(settings.kafka_servers, settings.kafka_topic_rooms)

    app.extensions[_EXT] = Services(
        settings=settings,
        rooms=rooms,
        minter=TokenMinter(key, secret, settings.token_ttl_s) if settings.livekit_configured else None,
        webhooks=WebhookVerifier(key, secret) if has_keys else None,
        publisher=publisher,
        store=transcripts.StoreAccess(settings.database_url),
    )

    register_error_handlers(app)
    api_keys = ApiKeys(settings.api_key_list)
    if not api_keys:
        log.warning("QUANTCOACH_API_KEYS is empty: every protected route answers 403")
    install_access_control(app, api_keys, settings.cors_origin_list)
    for bp in (health.bp, rooms_bp.bp, tokens.bp, webhooks.bp, transcripts.bp, openapi.bp):
        app.register_blueprint(bp)

    @app.after_request
    def _no_store(resp: Response) -> Response:
        # Responses carry tokens and room state: never cache them; never let a browser sniff types.
        resp.headers.setdefault("Cache-Control", "no-store")
        resp.headers["X-Content-Type-Options"] = "nosniff"
        return resp

    return app
