"""The nginx edge and the gunicorn behind it (harness/edge.py), for tests.

In CI (``CI=true``) a missing nginx or envsubst is a failure; locally the tests skip and say what to
install.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import edge
from harness.edge import API_KEY, Gunicorn, Nginx, gunicorn_api
from tests.support.ci import in_ci

__all__ = ["API_KEY", "Gunicorn", "Nginx", "gunicorn_api", "need", "nginx_edge", "render"]


def need(binary: str, package: str) -> str:
    try:
        return edge.need(binary, package)
    except edge.ToolMissing as missing:
        if in_ci():
            pytest.fail(f"missing in CI: {missing}")
        pytest.skip(str(missing))


def render(upstream: str, port: int, max_body: int) -> str:
    """The template as the nginx image renders it: envsubst, restricted to our names."""
    need("envsubst", "gettext-base")
    return edge.render(upstream, port, max_body)


@contextlib.contextmanager
def nginx_edge(upstream: str, workdir: Path, max_body: int = 65536) -> Iterator[Nginx]:
    need("nginx", "nginx")
    need("envsubst", "gettext-base")
    with edge.nginx_edge(upstream, workdir, max_body) as nginx:
        yield nginx
