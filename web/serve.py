"""Run the API under gunicorn: ``run_gunicorn(settings, bind, workers)``; ``quantcoach web`` calls it.

An embedded gunicorn application: configuration from ``web/gunicorn_conf.py`` then ``bind`` and
``workers`` from the caller, and each worker builds the app with ``create_app(settings)``, so the
settings checked by the CLI are the ones served (no second parse of the environment).
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication

from quantcoach.settings import Settings

CONFIG_MODULE = "web.gunicorn_conf"


class _Server(BaseApplication):
    def __init__(self, settings: Settings, options: dict[str, Any]) -> None:
        self._settings = settings
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        conf = importlib.import_module(CONFIG_MODULE)
        known = self.cfg.settings
        for name in dir(conf):
            if name in known and not name.startswith("_"):
                self.cfg.set(name, getattr(conf, name))
        for name, value in self._options.items():
            self.cfg.set(name, value)

    def load(self) -> Flask:
        from web.app import create_app  # in the worker, after the fork

        root = logging.getLogger()
        if not root.handlers:  # the CLI may have set logging up already; else app logs go to stderr
            handler = logging.StreamHandler()
            handler.setFormatter(
                logging.Formatter("[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s")
            )
            root.addHandler(handler)
            root.setLevel(self._settings.log_level.upper())
        return create_app(self._settings)


def run_gunicorn(settings: Settings, bind: str, workers: int) -> int:
    """Serve until a signal stops the arbiter; returns the process exit status (0 on a clean stop)."""
    if workers < 1:
        raise ValueError("workers must be >= 1")
    try:
        options = {
            "bind": [bind],
            "workers": workers,
            "threads": settings.web_threads,
            "timeout": settings.web_timeout_s,
            "loglevel": settings.log_level.lower(),
        }
        _Server(settings, options).run()
    except SystemExit as exc:  # the arbiter leaves through sys.exit()
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0
