"""A credential an operator puts in ``ELEVENLABS_BASE_URL`` never shows in the engine's URL or repr."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from quantcoach.settings import Settings
from stt.elevenlabs.engine import ElevenLabsEngine
from stt.elevenlabs.options import redacted_url


def test_tokens_and_user_info_are_masked_and_the_rest_kept() -> None:
    url = "wss://user:pw@example.test/v1/speech-to-text/realtime?token=sutkn_123&model_id=m&keyterms=A%20B"
    masked = redacted_url(url)
    assert "sutkn_123" not in masked and "pw" not in masked and "user" not in masked
    query = parse_qs(urlsplit(masked).query)
    assert query == {"token": ["***"], "model_id": ["m"], "keyterms": ["A B"]}


def test_the_engine_shows_only_the_masked_url() -> None:
    settings = Settings(
        elevenlabs_api_key="k-secret",
        elevenlabs_base_url="ws://127.0.0.1:9/v1/speech-to-text/realtime?token=single-use-42",
    )
    engine = ElevenLabsEngine(settings)
    try:
        for shown in (engine.url, repr(engine)):
            assert "single-use-42" not in shown and "k-secret" not in shown
        assert parse_qs(urlsplit(engine.url).query)["token"] == ["***"]
    finally:
        engine.close()
