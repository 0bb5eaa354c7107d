"""The Flask app factory: ``create_app(settings)`` builds the REST API from a settings object.

One blueprint per resource (rooms, tokens, webhooks, health, transcripts, sessions, reports, openapi).
The outside things the routes use (RoomService client, token minter, webhook verifier, room-event
publisher, transcript store) are built here from the settings, or passed in by tests, and reached
through ``web.services.services()``. With LiveKit unconfigured the app still starts: health says so
and the LiveKit routes answer 503. The transcript store is opened on first use, so an unreachable
database makes only its routes answer 503.
"""

from __future__ import annotations

import atexit
import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response
from werkzeug.middleware.proxy_fix import ProxyFix

from connectors.kafka.client import configure as configure_kafka
from connectors.kafka.room_events import KafkaRoomEventPublisher, RoomEventPublisher
from connectors.livekit.api import RoomsClient, TokenMinter, WebhookVerifier
from quantcoach.settings import Settings
from web import health, openapi, reports, sessions, streams, tokens, transcripts, webhooks
from web import rooms as rooms_bp
from web.auth import ApiKeys, EventTokens, install_access_control
from web.errors import register_error_handlers
from web.limits import install_body_limit
from web.services import Services, StoreAccess, install

log = logging.getLogger(__name__)

BLUEPRINTS = (
    health.bp,
    rooms_bp.bp,
    tokens.bp,
    webhooks.bp,
    transcripts.bp,
    sessions.bp,
    reports.bp,
    openapi.bp,
)


def create_app(
    settings: Settings,
    *,
    rooms: RoomsClient | None = None,
    publisher: RoomEventPublisher | None = None,
    config: Mapping[str, Any] | None = None,
) -> Flask:
    """Build the app. ``rooms`` and ``publisher`` replace the ones built from ``settings`` (tests);
    ``config`` overrides Flask config keys, e.g. the event stream's ``SSE_*`` timings."""
    # No static folder: the API serves no files, whatever the directory it is started from holds.
    app = Flask(__name__, static_folder=None)
    if settings.trusted_proxy_hops:
        # Behind the nginx edge, which replaces X-Forwarded-For with the address it sees: the client is
        # the one it names. Without proxies (0) the headers are ignored, so a client cannot forge them.
        hops = settings.trusted_proxy_hops
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)  # type: ignore[method-assign]
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.config.update(transcripts.SSE_DEFAULTS)
    app.config.update(config or {})
    cap = streams.stream_cap(settings.sse_max_streams, settings.web_threads)
    app.extensions["sse_slots"] = streams.StreamSlots(cap)  # one worker process = one app
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.url_map.converters["room"] = rooms_bp.RoomConverter
    app.url_map.converters["session"] = sessions.SessionConverter
    logging.getLogger("web").setLevel(settings.log_level.upper())
    logging.getLogger("connectors").setLevel(settings.log_level.upper())

    key, secret = settings.livekit_api_key.reveal(), settings.livekit_api_secret.reveal()
    if settings.livekit_configured:
        if rooms is None:
            rooms = RoomsClient(settings.livekit_url, key, secret)
            atexit.register(rooms.close)  # close the aiohttp session and loop thread on a clean exit
    else:
        rooms = None
        log.warning("LiveKit is not configured: room and token routes will answer 503")
    has_keys = bool(key and secret)
    if settings.kafka_configured:
        configure_kafka(settings)  # SASL/TLS for the room-event publisher
    if publisher is None and settings.kafka_configured and settings.webhook_forward:
        publisher = KafkaRoomEventPublisher(settings.kafka_servers, settings.kafka_topic_rooms)

    install(
        app,
        Services(
            settings=settings,
            rooms=rooms,
            minter=TokenMinter(key, secret, settings.token_ttl_s) if settings.livekit_configured else None,
            webhooks=WebhookVerifier(key, secret) if has_keys else None,
            publisher=publisher,
            store=StoreAccess(settings.database_url),
        ),
    )

    register_error_handlers(app)
    install_body_limit(app)
    api_keys = ApiKeys(settings.api_key_list)
    if not api_keys:
        log.warning("QUANTCOACH_API_KEYS is empty: every protected route answers 403")
    tokens_ = EventTokens.from_keys(
        settings.report_token_secret.reveal(), settings.api_key_list, settings.report_token_ttl_s
    )
    install_access_control(app, api_keys, settings.cors_origin_list, tokens_)
    for bp in BLUEPRINTS:
        app.register_blueprint(bp)

    @app.after_request
    def _no_store(resp: Response) -> Response:
        # Responses carry tokens and room state: never cache them; never let a browser sniff types.
        resp.headers.setdefault("Cache-Control", "no-store")
        resp.headers["X-Content-Type-Options"] = "nosniff"
        return resp

    return app
