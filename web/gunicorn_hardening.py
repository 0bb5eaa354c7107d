"""gunicorn, hardened for the open internet (``web/gunicorn_conf.py`` selects both classes).

- ``JsonErrorWorker``: the errors gunicorn answers itself, before the app runs (a malformed request
  line 400, a request line too long 414, too many or too large headers 431), leave in the API's JSON
  error shape instead of gunicorn's HTML page, and never echo the client's bytes back.
- ``SafeAccessLogger``: every value in an access-log line has its control characters escaped, so a
  newline or an ANSI escape in a URL, header or user agent cannot forge a log line or drive a terminal.
"""

from __future__ import annotations

import json
from typing import Any

from gunicorn import util
from gunicorn.glogging import Logger
from gunicorn.workers.gthread import ThreadWorker

from quantcoach.text import escape_control

_CODES = {
    400: "bad_request",
    403: "forbidden",
    414: "uri_too_long",
    417: "expectation_failed",
    431: "headers_too_large",
    500: "internal_error",
    501: "not_implemented",
}


def write_json_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    body = json.dumps({"error": {"code": _CODES.get(status_int, "bad_request"), "message": reason}}) + "\n"
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    util.write_nonblock(sock, (head + body).encode("latin-1"))


class JsonErrorWorker(ThreadWorker):
    def init_process(self) -> None:
        # gunicorn's Worker.handle_error writes through gunicorn.util.write_error; in this worker process
        # that is ours (a documented seam: gunicorn has no setting for its error body).
        util.write_error = write_json_error
        super().init_process()


class SafeAccessLogger(Logger):
    def atoms(self, resp: Any, req: Any, environ: Any, request_time: Any) -> dict[str, Any]:
        return {k: escape_control(v) if isinstance(v, str) else v for k, v in super().atoms(
            resp, req, environ, request_time).items()}  # fmt: skip
