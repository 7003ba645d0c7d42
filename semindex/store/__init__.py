"""A vector store with the surface of seed 004 (dataknobs-data's PgVectorStore), for callers with
their own embeddings: async CRUD over one PostgreSQL table with metadata filters, tenant isolation,
HNSW and IVFFlat, and a synchronous facade.

  config.py   StoreConfig: every key of the seed, with its default, checked
  filters.py  the metadata filter language, compiled to SQL with bound keys and values
  store.py    PgVectorStore, VectorStoreFactory, the search plan, create_index
  sync.py     SyncPgVectorStore: the same methods, blocking
"""

from semindex.store.config import StoreConfig
from semindex.store.filters import InvalidFilter
from semindex.store.store import (
           IndexResult,
           PgVectorStore,
           SearchPlan,
           VectorStoreFactory,
)
from semindex.store.sync import SyncPgVectorStore

__all__ = ["IndexResult", "InvalidFilter", "PgVectorStore", "SearchPlan", "StoreConfig", "SyncPgVectorStore",
           "VectorStoreFactory"]
