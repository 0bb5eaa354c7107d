"""The nginx edge in front of gunicorn, attacked as a client on the open internet would.

Real nginx (rendered from deploy/nginx/quantcoach.conf.template with envsubst) and real gunicorn
(`quantcoach web`), on loopback.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.edge import API_KEY, Gunicorn, Nginx, gunicorn_api, nginx_edge, render

MAX_BODY = 65536
HALF_OPEN = 80


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gunicorn]:
    with gunicorn_api(tmp_path_factory.mktemp("api"), threads=4) as server:
        yield server


@pytest.fixture(scope="module")
def edge(api: Gunicorn, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    with nginx_edge(api.upstream, tmp_path_factory.mktemp("edge"), max_body=MAX_BODY) as nginx:
        yield nginx


def raw(port: int, data: bytes, timeout_s: float = 10.0) -> bytes:
    """Send ``data`` as is and read the whole answer (the edge closes or answers)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
        s.sendall(data)
        chunks = []
        with_deadline = time.monotonic() + timeout_s
        while time.monotonic() < with_deadline:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks) and b"Connection: close" not in b"".join(chunks):
                head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
                length = [int(v) for k, _, v in (h.partition(b":") for h in head.split(b"\r\n")[1:])
                          if k.strip().lower() == b"content-length"]  # fmt: skip
                if length and len(body) >= length[0]:
                    break
        return b"".join(chunks)


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def test_template_renders_only_our_names_and_nginx_accepts_it(edge: Nginx) -> None:
    text = render("10.0.0.5:8000", 8080, MAX_BODY)
    assert "server 10.0.0.5:8000;" in text and "listen 8080;" in text
    assert "access_log /dev/stdout quantcoach_edge;" in text
    assert f"client_max_body_size {MAX_BODY};" in text
    assert "$remote_addr" in text and "$binary_remote_addr" in text  # nginx's own variables kept
    assert "${" not in text
    assert requests.get(f"{edge.base}/health", timeout=5).status_code == 200


def test_half_sent_requests_do_not_take_the_api_down(edge: Nginx, api: Gunicorn) -> None:
    """80 sockets that send a request head without its end: the API still answers at once, and the
    edge drops them after client_header_timeout (10 s) without gunicorn ever seeing them."""
    held = []
    try:
        for _ in range(HALF_OPEN):
            s = socket.create_connection(("127.0.0.1", edge.port), timeout=5)
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            held.append(s)
        times = []
        for _ in range(20):
            began = time.monotonic()
            assert requests.get(f"{edge.base}/health", timeout=5).status_code == 200
            times.append(time.monotonic() - began)
        assert max(times) < 2.0, times
        # The edge closes every half-sent request once its head timeout passes.
        deadline = time.monotonic() + 20
        open_ = list(held)
        while open_ and time.monotonic() < deadline:
            for s in list(open_):
                s.settimeout(0.05)
                try:
                    if s.recv(1024) == b"":
                        open_.remove(s)
                except TimeoutError:
                    pass
                except OSError:
                    open_.remove(s)
        assert not open_, f"{len(open_)} half-sent requests still held after 20 s"
    finally:
        for s in held:
            s.close()
    assert "Host: x" not in api.log()


def test_chunked_body_over_the_limit_is_refused_with_json_413(edge: Nginx) -> None:
    chunk = b"x" * 8192
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(MAX_BODY // len(chunk) + 2))
    answer = raw(
        edge.port,
        b"POST /tokens/generate HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + API_KEY.encode()
        + b"\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" + body + b"0\r\n\r\n",
    )  # fmt: skip
    assert status_of(answer) == 413, answer[:300]
    assert b'"code": "body_too_large"' in answer


def test_errors_nginx_answers_itself_are_json(edge: Nginx) -> None:
    long_uri = raw(edge.port, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(long_uri) in (414, 400) and b'"error"' in long_uri, long_uri[:300]
    big_header = raw(edge.port, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n")
    assert status_of(big_header) in (400, 431) and b'"error"' in big_header, big_header[:300]
    garbage = raw(edge.port, b"\x16\x03\x01 not http at all\r\n\r\n")
    assert status_of(garbage) == 400 and b'"code": "bad_request"' in garbage, garbage[:300]


def test_api_down_behind_the_edge_is_a_json_503(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"  # bound, never listening: connections are refused
        with nginx_edge(dead, tmp_path / "edge") as nginx:
            resp = requests.get(f"{nginx.base}/health", timeout=10)
    assert resp.status_code == 503 and resp.headers["Retry-After"] == "5"
    assert resp.json()["error"]["code"] == "unavailable"


def test_a_forged_forwarded_for_is_replaced_by_the_address_the_edge_sees(edge: Nginx, api: Gunicorn) -> None:
    requests.get(f"{edge.base}/health", headers={"X-Forwarded-For": "203.0.113.99"}, timeout=5)
    line = [ln for ln in edge.access_log().splitlines() if "/health" in ln][-1]
    assert line.startswith("127.0.0.1 "), line


# --- the app stands on its own too: the same attacks straight at gunicorn -----------------------------------
def test_gunicorn_own_errors_are_json_directly(api: Gunicorn) -> None:
    long_line = raw(api.port, b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(long_line) == 414 and b'"code": "uri_too_long"' in long_line, long_line[:300]
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(80))
    many = raw(api.port, b"GET /health HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    assert status_of(many) == 431 and b"application/json" in many, many[:300]
    bad = raw(api.port, b"GET /health HTTP/9.9\r\nHost: x\r\n\r\n")
    assert status_of(bad) == 400 and b'"error"' in bad and b"<html" not in bad, bad[:300]


def test_chunked_body_over_the_limit_is_413_directly(api: Gunicorn) -> None:
    chunk = b'{"room_name": "a", "participant_identity": "b", "role": "participant"}' + b" " * 8000
    body = b"%x\r\n%s\r\n" % (len(chunk), chunk) * (MAX_BODY // len(chunk) + 2)
    answer = raw(
        api.port,
        b"POST /tokens/generate HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + API_KEY.encode()
        + b"\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" + body + b"0\r\n\r\n",
    )  # fmt: skip
    assert status_of(answer) == 413, answer[:300]
    assert b'"body_too_large"' in answer and b"application/json" in answer


def test_a_small_chunked_body_is_read_whole(api: Gunicorn) -> None:
    payload = b'{"room_name": "r-1", "participant_identity": "agent-x", "role": "participant"}'
    answer = raw(
        api.port,
        b"POST /tokens/generate HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + API_KEY.encode()
        + b"\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        + b"%x\r\n%s\r\n0\r\n\r\n" % (len(payload), payload),
    )  # fmt: skip
    # the body parsed (LiveKit is not configured here, so the token route answers 503, not 400/413)
    assert status_of(answer) == 503, answer[:300]


def test_the_agent_identity_is_reserved(api: Gunicorn) -> None:
    resp = requests.post(
        f"http://{api.upstream}/tokens/generate",
        json={"room_name": "r-1", "participant_identity": "quantcoach-agent", "role": "participant"},
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=5,
    )
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "reserved_identity"


def test_control_characters_cannot_forge_access_log_lines(api: Gunicorn, edge: Nginx) -> None:
    for base in (f"http://{api.upstream}", edge.base):
        requests.get(f"{base}/rooms/x%0Aforged-line%1B[31m", timeout=5)
    time.sleep(0.3)
    log = api.log()
    assert not any(line.startswith("forged-line") for line in log.splitlines())
    assert "\x1b" not in log and "\\nforged-line\\x1b" in log


def test_query_strings_never_reach_the_edge_access_log(edge: Nginx) -> None:
    requests.get(f"{edge.base}/sessions/S1/events?token=secret-token-value&after=3", timeout=5)
    requests.get(f"{edge.base}/health?probe=1", timeout=5)
    time.sleep(0.3)
    log = edge.access_log()
    assert "/sessions/S1/events" in log and "/health" in log
    assert "secret-token-value" not in log and "probe=1" not in log
