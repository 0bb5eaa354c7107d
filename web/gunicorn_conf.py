"""gunicorn settings for ``quantcoach web`` (``web.serve.run_gunicorn`` reads this module).

``bind``, ``workers`` and ``loglevel`` are overridden by ``run_gunicorn`` (command line, settings);
the values here are defaults. ``WEB_THREADS`` and ``WEB_TIMEOUT_S`` tune the server process only.
"""

from __future__ import annotations

import os

bind = "127.0.0.1:8000"
workers = 2

# gthread: each worker process serves requests on a thread pool. A long-lived response (the SSE
# streams planned for live transcripts) then holds one thread, not a whole process as with the sync
# worker, and, unlike sync, the worker's heartbeat to the arbiter keeps beating while a stream is open,
# so ``timeout`` does not kill a healthy worker that is streaming. No monkey-patching (gevent/eventlet),
# which would fight the asyncio loop thread that the LiveKit client runs on.
worker_class = "web.gunicorn_hardening.JsonErrorWorker"  # gthread, with gunicorn's own errors as JSON
threads = int(os.environ.get("WEB_THREADS", "16"))  # run_gunicorn sets it from Settings.web_threads
worker_connections = 1000

timeout = int(os.environ.get("WEB_TIMEOUT_S", "30"))  # gthread: worker silent this long is restarted
graceful_timeout = 20  # time for in-flight requests on shutdown/reload
keepalive = 5  # idle keep-alive seconds (behind a proxy that keeps connections open)

# Bounded request head: long request lines and huge header sets are refused before the app runs.
limit_request_line = 4094
limit_request_fields = 64
limit_request_field_size = 8190

# Access log to stdout. %(U)s is the path without the query string and no header is logged, so
# neither API keys (Authorization) nor anything a client puts in a query reaches the log.
accesslog = "-"
errorlog = "-"
loglevel = "info"
logger_class = "web.gunicorn_hardening.SafeAccessLogger"  # control characters escaped in every line
access_log_format = '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms "%(a)s"'

# Workers import the app themselves (no preload): per-process clients (LiveKit loop thread, Kafka
# producer) are then created after the fork, never shared across it.
preload_app = False
proc_name = "quantcoach-web"
