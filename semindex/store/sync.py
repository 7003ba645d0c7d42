"""The store's synchronous facade, for scripts and Dagster assets: the same methods, each run on a
private event loop in a background thread (so it also works when called from code that has an
event loop of its own)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping

from psycopg_pool import AsyncConnectionPool

from semindex.store.config import StoreConfig
from semindex.store.store import PgVectorStore

_METHODS = ("initialize", "close", "add_vectors", "get_vectors", "update_metadata", "update_metadata_where",
            "delete_vectors", "count", "clear", "search", "create_index", "metadata_fields")


class SyncPgVectorStore:
    def __init__(self, config: Mapping | StoreConfig, *, store: PgVectorStore | None = None) -> None:
        self.store = store or PgVectorStore(config)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="semindex-store-loop", daemon=True)
        self._thread.start()

    @classmethod
    def from_components(cls, config: Mapping | StoreConfig, *, pool: AsyncConnectionPool) -> SyncPgVectorStore:
        """On an injected pool; the pool must belong to this facade's loop, so pass one made with
        `facade.run(...)`, or let the store open its own."""
        return cls(config, store=PgVectorStore.from_components(config, pool=pool))

    @property
    def config(self) -> StoreConfig:
        return self.store.config

    @property
    def last_plan(self):
        return self.store.last_plan

    def run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def __getattr__(self, name: str):
        if name not in _METHODS:
            raise AttributeError(name)
        method = getattr(self.store, name)
        return lambda *args, **kwargs: self.run(method(*args, **kwargs))

    def close(self) -> None:
        try:
            self.run(self.store.close())
        finally:
            self._stop()

    def _stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)

    def __enter__(self) -> SyncPgVectorStore:
        try:
            self.run(self.store.initialize())
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()
