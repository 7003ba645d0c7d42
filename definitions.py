"""The semindex Dagster code location, assembled by hand."""

import dagster as dg

from assets.checks import all_checks
from assets.chunks import chunks
from assets.embeddings import embeddings
from assets.indexes import hnsw_index, lexical_index
from assets.partial_index_set import partial_index_set
from assets.raw_records import raw_records
from assets.retained_size_projection import retained_size_projection
from assets.vector_column import vector_column
from resources import PostgresResource
from sensors import inbox_sensor

all_assets = [
    raw_records,
    chunks,
    embeddings,
    vector_column,
    hnsw_index,
    lexical_index,
    retained_size_projection,
    partial_index_set,
]

# The main job: the whole graph for one embedding version (the run's partition key).
index_pipeline = dg.define_asset_job("index_pipeline", selection=dg.AssetSelection.assets(*all_assets))

defs = dg.Definitions(
    assets=all_assets,
    asset_checks=all_checks,
    jobs=[index_pipeline],
    sensors=[inbox_sensor],
    resources={"postgres": PostgresResource()},
)
