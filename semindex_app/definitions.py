"""The semindex Dagster code location, assembled by hand."""

import dagster as dg

from .assets.ann_substrate import ann_substrate
from .assets.checks import all_checks
from .assets.chunks import chunks
from .assets.embeddings import embeddings
from .assets.indexes import hnsw_index, lexical_index
from .assets.partial_index_set import partial_index_set
from .assets.raw_records import raw_records
from .assets.retained_size_projection import retained_size_projection
from .assets.retrieval_evaluation import retrieval_evaluation
from .assets.semantic_blob import semantic_blob
from .assets.serving_version import serving_version
from .assets.vector_column import vector_column
from .resources import EncoderResource, postgres_resource
from .schedules import nightly_refresh, weekly_index_maintenance
from .logs import run_logger
from .sensors import inbox_sensor, version_backfill_sensor


@dg.logger(
    config_schema={"log_level": dg.Field(str, is_required=False, default_value="INFO")},
    description="semindex's log lines on stderr: plain, or JSON with SEMINDEX_LOG_FORMAT=json; an error in one line "
    "(its traceback with SEMINDEX_DEBUG=1)",
)
def semindex_console(init_context: dg.InitLoggerContext):
    return run_logger(level=init_context.logger_config["log_level"])


# Every job's runs log through semindex_console (the CLI's format) unless their run config says otherwise.
RUN_LOGGING = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}

all_assets = [
    raw_records,
    chunks,
    embeddings,
    vector_column,
    hnsw_index,
    lexical_index,
    retained_size_projection,
    partial_index_set,
    ann_substrate,
    retrieval_evaluation,
    serving_version,
    semantic_blob,
]

# The main job: the whole graph for one embedding version (the run's partition key), from ingest to
# the gated promotion, and the adoption of a reference-server table when the database holds one.
index_pipeline = dg.define_asset_job("index_pipeline", selection=dg.AssetSelection.assets(*all_assets), config=RUN_LOGGING)

# Nightly: new and changed chunks for a live version, and its indexes; no re-evaluation or promotion.
index_refresh = dg.define_asset_job(
    "index_refresh",
    selection=dg.AssetSelection.assets(
        chunks, embeddings, vector_column, hnsw_index, lexical_index, retained_size_projection, partial_index_set,
        ann_substrate,
    ),
    config=RUN_LOGGING,
)

# Weekly: statistics, index validity (invalid ones are rebuilt), the partial index band, and a zvec
# version's next generation (which also prunes its change log and removes retired generations).
index_maintenance = dg.define_asset_job(
    "index_maintenance",
    selection=dg.AssetSelection.assets(vector_column, hnsw_index, lexical_index, retained_size_projection, partial_index_set,
                                       ann_substrate),
    config=RUN_LOGGING,
)

defs = dg.Definitions(
    assets=all_assets,
    asset_checks=all_checks,
    jobs=[index_pipeline, index_refresh, index_maintenance],
    sensors=[inbox_sensor, version_backfill_sensor],
    schedules=[nightly_refresh, weekly_index_maintenance],
    resources={"postgres": postgres_resource(), "encoders": EncoderResource()},
    loggers={"console": semindex_console},
)
