"""Real local servers that the tests and the benchmarks start: a Kafka-protocol broker (tansu), PostgreSQL,
the API under gunicorn (with an SSE client to read its streams), and the nginx edge in front of it.

This package lives in the checkout beside ``tests/`` and ``bench/`` and is importable from the repository
root only (pytest puts the root on ``sys.path``, ``tests`` being a package; each bench script adds it); it is
not part of the installed product (pyproject's package list leaves it out) and product code never imports
it. Nothing here depends on pytest: a missing tool raises a ``RuntimeError`` that says what to install,
and the test side (tests/support/fixtures.py, tests/support/edge.py) turns that into a skip locally and
a failure in CI.
"""
