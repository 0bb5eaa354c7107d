"""The domain vocabulary that recognisers are primed with: terms a quant interview is likely to use.

faster-whisper takes it as ``hotwords`` (a prompt of terms before each window's decode); ElevenLabs
realtime takes it as repeated ``keyterms`` query parameters. tiny.en hears the sample's "Black-Scholes"
as "black coals" without it. Keep the list short: every term is prompt tokens on every decode.
"""

from __future__ import annotations

from collections.abc import Iterable

QUANT_TERMS: tuple[str, ...] = (
    "Black-Scholes",
    "Itô",
    "martingale",
    "Brownian motion",
    "put-call parity",
    "delta hedging",
    "volatility smile",
    "implied volatility",
    "call option",
    "expected value",
    "variance",
    "covariance",
    "stochastic calculus",
    "Monte Carlo",
    "Sharpe ratio",
)


def parse_terms(text: str) -> tuple[str, ...]:
    """A comma-separated list (``STT_KEYTERMS``) as terms: trimmed, empty ones dropped, first kept."""
    seen: dict[str, None] = {}
    for term in text.split(","):
        if term.strip():
            seen.setdefault(term.strip(), None)
    return tuple(seen)


def hotwords(terms: Iterable[str]) -> str | None:
    """The terms as faster-whisper's ``hotwords`` string, or None for none."""
    text = ", ".join(t.strip() for t in terms if t.strip())
    return text or None
