"""Dagster resources: thin handles onto the semindex library."""

from __future__ import annotations

from typing import Optional

import dagster as dg

from semindex import settings
from semindex.database import Database, open_database
from semindex.encoders import Encoder, EncoderSpec, load_encoder


class PostgresResource(dg.ConfigurableResource):
    """The semindex database: `database_url`, or with it unset the embedded PostgreSQL under
    SEMINDEX_HOME, started or reused."""

    database_url: Optional[str] = None

    def database(self) -> Database:
        return open_database(self.database_url)


def postgres_resource() -> PostgresResource:
    """DATABASE_URL as an EnvVar (shown on the resource in the UI, its value never displayed) when it
    is set where the code location loads; the embedded server otherwise."""
    if settings.external_database_url():
        return PostgresResource(database_url=dg.EnvVar("DATABASE_URL"))
    return PostgresResource()


class EncoderResource(dg.ConfigurableResource):
    """Text encoders for a run: each model is loaded once per run process, on first use."""

    batch_size: Optional[int] = None
    """Texts per encoder call; unset: the batch size the encoder's device wants (64 on the CPU, 256 on CUDA)."""

    def load(self, spec: EncoderSpec) -> Encoder:
        return load_encoder(spec, batch_size=self.batch_size)
