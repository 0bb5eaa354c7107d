"""Bytewax sink into the transcript store, for ``quantcoach replay --store`` (no Kafka needed).

One sink type for every kind the store keeps: v2 transcripts (finals; partials are ignored), windows,
session records and metrics. The flow may attach one ``StoreSink`` per stream or one to all of them.
"""

from __future__ import annotations

from typing import Any

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from connectors.store import Store


class StoreSink(DynamicSink[dict[str, Any]]):
    def __init__(self, database_url: str) -> None:
        self.database_url = database_url

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _StorePartition:
        return _StorePartition(Store(self.database_url))


class _StorePartition(StatelessSinkPartition[dict[str, Any]]):
    def __init__(self, store: Store) -> None:
        self._store = store

    def write_batch(self, items: list[dict[str, Any]]) -> None:
        self._store.upsert(items)  # idempotent: a recovered flow re-emitting records adds nothing

    def close(self) -> None:
        self._store.close()
