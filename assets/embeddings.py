"""The embeddings asset: a version's backfill as N claiming steps.

A graph of ops: `backfill_workers` fans out one `backfill_worker` step per configured worker (a
dynamic output), each step claims and writes ranges of the version's pending chunks until none is
left (semindex.backfill_claims), and `backfill_summary` collects their reports into the asset's
materialization. Under the multiprocess executor (the default for launched runs) the worker steps run
in parallel processes; in process they run one after another and the first does all the work. Runs on
other machines sharing the database join in the same way, through the claims.
"""

import dagster as dg

from semindex import backfill_claims
from semindex import embeddings as stage
from semindex.errors import InvalidInput
from semindex.vectors.version import get_version

from ..resources import EncoderResource, PostgresResource
from .metadata import materialization
from .partitions import embedding_versions


class EmbeddingsConfig(dg.Config):
    batch_size: int = 1024
    """Chunks per claimed range; one commit per range bounds the work a killed worker can lose."""
    workers: int = 1
    """Claiming steps; under the multiprocess executor each runs in a process of its own."""
    torch_threads: int = 0
    """Torch threads per worker step; 0 means max(1, cores // workers)."""


class WorkerConfig(dg.Config):
    batch_size: int
    torch_threads: int


class WorkersConfig(dg.Config):
    workers: int


def _op_config(config: EmbeddingsConfig) -> dict:
    # Dagster infers the schema from the annotation but hands the function the validated dict.
    config = EmbeddingsConfig(**config) if isinstance(config, dict) else config
    if config.workers < 1:
        raise InvalidInput(f"embeddings: workers must be at least 1, got {config.workers}")
    threads = config.torch_threads or backfill_claims.torch_threads_for(config.workers)
    return {
        "backfill_workers": {"config": {"workers": config.workers}},
        "backfill_worker": {"config": {"batch_size": config.batch_size, "torch_threads": threads}},
    }


@dg.op(ins={"chunks": dg.In(dg.Nothing)}, out=dg.DynamicOut(int))
def backfill_workers(config: WorkersConfig):
    """One dynamic output per worker: Dagster maps a backfill_worker step over each."""
    for index in range(config.workers):
        yield dg.DynamicOutput(index, mapping_key=f"w{index}")


@dg.op
def backfill_worker(
    context: dg.OpExecutionContext, config: WorkerConfig, postgres: PostgresResource, encoders: EncoderResource,
    worker_index: int,
) -> stage.BackfillReport:
    """Claim, encode and write ranges of the version's pending chunks until none is left."""
    db = postgres.database()
    return stage.backfill(
        db, get_version(db, context.partition_key), batch_size=config.batch_size, load=encoders.load,
        progress_emit=context.log.info, torch_threads=config.torch_threads,
        worker=f"{backfill_claims.worker_name()}/{context.run_id[:8]}/w{worker_index}",
    )


@dg.op(out=dg.Out(dg.Nothing))
def backfill_summary(context: dg.OpExecutionContext, postgres: PostgresResource, reports: list[stage.BackfillReport]):
    """The workers' reports as the asset's materialization metadata."""
    db = postgres.database()
    report = stage.backfill_stage_report(db, get_version(db, context.partition_key), reports)
    yield dg.Output(None, metadata=materialization(report).metadata)


@dg.graph_asset(
    ins={"chunks": dg.AssetIn("chunks", dagster_type=dg.Nothing)},
    partitions_def=embedding_versions,
    kinds={"postgres", "pgvector", "pytorch"},
    group_name="index_pipeline",
    config=dg.ConfigMapping(config_fn=_op_config),
    description="Vectors per chunk for one embedding version, backfilled by N claiming steps in resumable ranges; "
    "texts already embedded are never re-encoded.",
)
def embeddings(chunks):
    return backfill_summary(backfill_workers(chunks).map(backfill_worker).collect())
