"""The `semindex` command.

Exit codes: 0 done; 2 the command was refused as asked (a bad argument or value, a missing file, an
unknown name, or a request the current state refuses: re-running it unchanged cannot help); 1 it
failed while working (PostgreSQL unreachable or lost, a failed run or check); 128 + the signal
number when SIGTERM or SIGINT stopped it (143, 130). Every error is one line on stderr,
`semindex VERB: what happened`; `--debug` (or SEMINDEX_DEBUG=1) adds its traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path

EXAMPLES = """\
examples:
  semindex run                          index the bundled sample corpus, then search it
  semindex ingest mail.jsonl            add records, then `semindex run` to index them
  semindex search "train delays" --k 5  hybrid (lexical + semantic) search; --mode to pick one
  semindex dev                          Dagster UI and daemon on the same database
  semindex tokens create --owner --label me        a token that searches everything (shown once)
  semindex tokens create --label crm --grant '{"streams": ["messages"], "since": "2026-01-01T00:00:00Z"}'
  DATABASE_URL=<reader's url> semindex serve --port 8080   the search HTTP service (/docs teaches it)
  semindex versions list                embedding versions, which one serves, their verdicts
  semindex versions register mpnet-base-v2 && semindex versions backfill mpnet-base-v2
                                        build a new version beside the serving one, gated
  semindex versions promote KEY | rollback | retire KEY
  DATABASE_URL=postgresql://u@h/db semindex run   use an external PostgreSQL with pgvector 0.8
  semindex db status | start | stop     the embedded PostgreSQL: URL, folder, size, version, users

state: SEMINDEX_HOME (default ./.semindex) holds the embedded PostgreSQL and Dagster's home.
exit codes: 0 done, 2 refused as asked (bad input, missing file, unknown name, refused by the state),
1 failed (database unreachable, run or check failed), 130/143 stopped by SIGINT/SIGTERM.
--debug (SEMINDEX_DEBUG=1) prints tracebacks; --log-format json (SEMINDEX_LOG_FORMAT) for machines.
"""

SAMPLE_QUERY = "who won the football match"


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line, like every other error (exit 2), and whose every
    command also takes the common options (--debug, --log-format) after its verb."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs["parents"] = [*kwargs.get("parents", ()), _common_options()]
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (`{self.prog} --help` shows the usage)\n")

    def parse_args(self, args=None, namespace=None):
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            # argparse reports these from the top parser; name the command they were given to.
            prog = " ".join(["semindex", _command(parsed)]) if getattr(parsed, "verb", None) else self.prog
            self.exit(2, f"{prog}: unrecognized arguments: {' '.join(extras)} (`{prog} --help` shows the usage)\n")
        return parsed


def _common_options() -> argparse.ArgumentParser:
    from semindex.settings import LOG_FORMATS

    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: a subcommand that does not see the option leaves what the main parser read.
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="print the traceback of an error (or set SEMINDEX_DEBUG=1)")
    common.add_argument("--log-format", choices=LOG_FORMATS, default=argparse.SUPPRESS,
                        help="log lines as plain text (default) or one JSON object a line (SEMINDEX_LOG_FORMAT)")
    return common


def _print_failed_run(command: str, result) -> None:
    """One line per failed step: the asset's own error (a connection error says which), not Dagster's
    wrapper and its stack trace (those are in the log with --debug)."""
    from semindex_app.logs import failed_steps

    for step, error in failed_steps(result):
        print(f"semindex {command}: step {step} failed: {error}", file=sys.stderr)


def _print_hits(hits) -> None:
    if not hits:
        print("no hits")
    for rank, hit in enumerate(hits, start=1):
        scores = " ".join(f"{mode}={value:.3f}" for mode, value in hit.scores.items())
        fields = ",".join(hit.matched_fields) or hit.field
        print(f"{rank:>3}. {hit.connector_instance_id}/{hit.stream}/{hit.record_key} [{fields}; {hit.field}#{hit.chunk_no}]  {scores}")
        print(f"      {hit.snippet}")


def command_run(args: argparse.Namespace) -> int:
    from semindex.database import open_database
    from semindex.search import semantic_search
    from semindex_app.runner import run_index_pipeline

    result = run_index_pipeline(args.version)
    if args.shutdown.signal is not None:
        raise KeyboardInterrupt  # Dagster took the signal over while the run executed; it ended the run
    failed_checks = [
        evaluation.check_name
        for evaluation in result.get_asset_check_evaluations()
        if not evaluation.passed
    ]
    if not result.success:
        _print_failed_run("run", result)
        print(f"semindex run: the index run {result.run_id} failed; committed work is kept, run again to resume",
              file=sys.stderr)
        return 1
    if failed_checks:
        print(f"semindex run: checks failed: {', '.join(failed_checks)}", file=sys.stderr)
        return 1
    print(f"\nindexed; run {result.run_id}. Sample search: {args.query!r}")
    _print_hits(semantic_search(open_database(), args.query, k=args.k, version_key=args.version))
    return 0


def command_dev(args: argparse.Namespace) -> int:
    from semindex import settings
    from semindex.database import open_database
    from semindex_app.runner import prepare_dagster_home

    open_database()
    home = prepare_dagster_home()
    print(f"Dagster UI: http://{args.host}:{args.port}  (DAGSTER_HOME={home})", flush=True)
    # The installed code location, wherever this runs from; its processes share this state folder.
    command = [sys.executable, "-m", "dagster", "dev", "-m", "semindex_app.definitions",
               "-h", args.host, "-p", str(args.port)]
    if settings.log_format() == "json":
        command += ["--log-format", "json"]
    env = {**os.environ, "SEMINDEX_HOME": str(settings.semindex_home())}
    # dagster dev leads a process group of its own (webserver, daemon, code servers, run workers):
    # a stop reaches all of them, and nothing else (not the embedded PostgreSQL, not our caller).
    process = args.shutdown.spawn(command, env=env)
    try:
        code = process.wait()
    except KeyboardInterrupt:
        args.shutdown.stop_children()
        raise
    if code != 0:
        print(f"semindex dev: dagster dev exited with {code}", file=sys.stderr)
        return 1
    return 0


def command_db_url(args: argparse.Namespace) -> int:
    from semindex.database import redact, resolve_database_url

    url = resolve_database_url()
    print(url if args.show_password else redact(url))
    return 0


def _size(size: int | None) -> str:
    if size is None:
        return "unknown"
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:,} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return str(size)


def command_db_status(args: argparse.Namespace) -> int:
    from semindex.database import database_status

    status = database_status()
    if args.json:
        print(json.dumps(status.as_dict(), indent=2, default=str))
    else:
        print(f"database:    {status.url or '-'}")
        print(f"kind:        {status.kind}")
        print(f"running:     {'yes' if status.running else 'no'}" + (f" (postmaster pid {status.pid})" if status.pid else ""))
        if status.kind == "external":
            print("data folder: - (an external server's own)")
        elif status.server_version is None and not status.running:
            print(f"data folder: {status.data_dir} (not created yet: `semindex db start` creates it)")
        else:
            print(f"data folder: {status.data_dir} ({_size(status.data_dir_bytes)} on disk)")
        print(f"size:        {_size(status.database_bytes) if status.database_bytes is not None else '-'} (this database)")
        print(f"version:     {status.server_version or '-'}")
        extensions = ", ".join(f"{name} {version}" for name, version in status.extensions.items())
        print(f"extensions:  {extensions or '-'}")
        print(f"connections: {status.other_connections if status.other_connections is not None else '-'} (other clients)")
        users = "; ".join(f"pid {user.pid}: {user.command}" for user in status.users)
        if status.kind == "embedded":
            print(f"used by:     {users or 'no other semindex process'}")
    if status.problem:
        print(f"semindex db status: {status.problem}", file=sys.stderr)
        return 1
    return 0


def _refuse_external(verb: str) -> None:
    from semindex import settings
    from semindex.errors import InvalidInput

    if settings.external_database_url():
        raise InvalidInput(f"DATABASE_URL is set: `semindex db {verb}` manages only the embedded PostgreSQL "
                           "(unset DATABASE_URL, or start and stop that server with its own tools)")


def command_db_start(args: argparse.Namespace) -> int:
    from semindex.database import embedded_database_url, embedded_server_running, open_database, redact
    from semindex import settings

    _refuse_external("start")
    was_running = embedded_server_running(settings.semindex_home())
    url = embedded_database_url()
    open_database(url)  # its extensions and schema, so every command (search too) finds them
    print(f"the embedded PostgreSQL {'was already running' if was_running else 'is running'}: {redact(url)}")
    return 0


def command_db_stop(args: argparse.Namespace) -> int:
    from semindex.database import stop_embedded_server
    from semindex import settings

    _refuse_external("stop")
    stopped = stop_embedded_server(settings.semindex_home(), force=args.force)
    print("the embedded PostgreSQL stopped" if stopped else "the embedded PostgreSQL was not running")
    return 0


def command_db_migrate(args: argparse.Namespace) -> int:
    from semindex import settings
    from semindex.database import open_database
    from semindex.semantic_blob import BlobTableError, migrate

    # Bad values are refused before anything connects.
    settings.migration_batch_size(args.batch_size)
    settings.migration_maintenance_work_mem(args.maintenance_work_mem)
    try:
        report = migrate(
            open_database(),
            table=args.table,
            batch_size=args.batch_size,
            maintenance_work_mem=args.maintenance_work_mem,
            dimensions=args.dimensions,
            concurrently=args.concurrently,
            progress_emit=lambda line: print(line, file=sys.stderr, flush=True),
        )
    except BlobTableError as error:
        # The table is not one this can adopt (missing, or in a state no step explains): it failed.
        print(f"semindex db migrate: {error}", file=sys.stderr)
        return 1
    summary = report.as_metadata()
    print(json.dumps(summary, indent=2) if args.json else "\n".join(f"{key}: {value}" for key, value in summary.items()))
    return 0


def command_ingest(args: argparse.Namespace) -> int:
    from semindex_app.runner import run_asset

    from semindex.errors import NotFound

    missing = [path for path in args.paths if not Path(path).is_file()]
    if missing:
        raise NotFound(f"no such file: {', '.join(missing)}")
    result = run_asset("raw_records", {"paths": [str(Path(p).resolve()) for p in args.paths], "force": args.force})
    if args.shutdown.signal is not None:
        raise KeyboardInterrupt
    if not result.success:
        _print_failed_run("ingest", result)
    for materialization in result.get_asset_materialization_events():
        metadata = materialization.materialization.metadata
        counts = {key: metadata[key].value for key in ("rows_added", "rows_changed", "rows_removed", "unchanged", "quarantined") if key in metadata}
        print(json.dumps(counts))
    return 0 if result.success else 1


def command_search(args: argparse.Namespace) -> int:
    from semindex.database import open_database
    from semindex.search import parse_request, search

    # The same parser as every other caller: names and values in, a validated request out.
    request = parse_request({
        "query": args.query,
        "mode": args.mode,
        "k": args.k,
        "connector_instance_id": args.connector_instance,
        "stream": args.stream,
        "field": args.field,
        "record_key": args.record_key,
        "version": args.version,
        "lexical_window": args.lexical_window,
        "fusion": args.fusion,
        "unit": args.unit,
    })
    # Search only reads: no bootstrap, so it runs as a read-only role too.
    response = search(open_database(bootstrap=False), request)
    if args.json:
        print(json.dumps(response.as_dict(), ensure_ascii=False, indent=2))
    else:
        _print_hits(response.hits)
        meta = response.meta
        print(f"\nplans: {meta.semantic_plans}  lexical: {meta.lexical}  timings (ms): {meta.timings_ms}")
    return 0


def command_serve(args: argparse.Namespace) -> int:
    from semindex.database import Database, resolve_database_url
    from semindex.errors import InvalidInput
    from semindex_app.service.serve import serve

    if not 1 <= args.workers <= 64:
        raise InvalidInput(f"--workers {args.workers} must be between 1 and 64")
    if not 1 <= args.port <= 65535:
        raise InvalidInput(f"--port {args.port} must be between 1 and 65535")
    # Refuse to start against a database that cannot be reached (and say why) rather than answer 503
    # to every request; once serving, an outage is answered 503 and recovered from without a restart.
    Database(resolve_database_url(), bootstrap=False).ping()
    serve(args.host, args.port, args.workers)
    return 0


def command_tokens_create(args: argparse.Namespace) -> int:
    from datetime import datetime

    from semindex.access import create_token, parse_grant
    from semindex.database import open_database
    from semindex.errors import InvalidInput

    if args.owner == (args.grant is not None):
        raise InvalidInput("give exactly one of --owner (searches everything) or --grant JSON (a client's scope)")
    grant = None if args.owner else parse_grant(args.grant)
    expires = None
    if args.expires:
        try:
            expires = datetime.fromisoformat(args.expires.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidInput(f"--expires {args.expires!r} is not an ISO 8601 time (e.g. 2027-01-01T00:00:00Z)") from None
    token, row = create_token(open_database(), args.label, grant=grant, expires_at=expires)
    if args.json:
        print(json.dumps({"token": token, "token_id": row.token_id, "label": row.label, "owner": row.owner,
                          "grant": row.grant_scope, "expires_at": row.expires_at}, default=str))
    else:
        print(token)
        print(f"token {row.token_id} ({row.label}, {'owner' if row.owner else 'grant ' + json.dumps(row.grant_scope)}): "
              "shown once, only its hash is stored", file=sys.stderr)
    return 0


def command_tokens_list(args: argparse.Namespace) -> int:
    from semindex.access import list_tokens
    from semindex.database import open_database

    rows = list_tokens(open_database())
    if args.json:
        print(json.dumps([row.__dict__ | {"state": row.state} for row in rows], default=str, indent=2))
        return 0
    if not rows:
        print("no tokens yet: semindex tokens create --owner --label NAME")
    for row in rows:
        scope = "owner" if row.owner else json.dumps(row.grant_scope)
        expiry = f" expires {row.expires_at:%Y-%m-%d %H:%M}" if row.expires_at else ""
        print(f"{row.token_id:>4}  {row.state:<8} {row.label:<20} {scope}{expiry}")
    return 0


def command_tokens_revoke(args: argparse.Namespace) -> int:
    from semindex.access import revoke_token
    from semindex.database import open_database

    row = revoke_token(open_database(), args.token_id)
    print(f"token {row.token_id} ({row.label}) revoked at {row.revoked_at:%Y-%m-%d %H:%M:%S %Z}")
    return 0


def command_versions_list(args: argparse.Namespace) -> int:
    from semindex.database import open_database
    from semindex.ann_substrate.recall import substrate_status
    from semindex.lifecycle import list_versions
    from semindex.shadow_traffic import live_traffic
    from semindex.vectors.version import get_version

    db = open_database()
    rows = list_versions(db)
    # Live shadow traffic (queries the search service mirrored) of the versions that do not serve.
    live = {row.version_key: live_traffic(db, row.version_key) for row in rows if not row.active}
    substrates = {row.version_key: substrate_status(db, get_version(db, row.version_key))
                  for row in rows if row.ann_engine != "pgvector" and row.state != "retired"}
    if args.json:
        print(json.dumps([row.__dict__ | {"role": row.role, "live_traffic": live.get(row.version_key, {}),
                                          "substrate": substrates.get(row.version_key)} for row in rows],
                         default=str, indent=2))
        return 0
    if not rows:
        print("no embedding versions registered: `semindex versions register KEY` or `semindex run`")
    for row in rows:
        verdict = "not evaluated" if row.verdict is None else "passed" if row.verdict else "FAILED"
        print(f"{row.version_key:<28} {row.state:<11} {row.role:<15} {row.encoder_name} ({row.dimensions}-d {row.metric}), "
              f"engine {row.ann_engine}, promotion {row.promotion}, verdict {verdict}")
        substrate = substrates.get(row.version_key)
        if substrate:
            print(f"{'':<30}{_substrate_line(substrate)}")
        for failure in row.failures or []:
            print(f"{'':<30}- {failure}")
        for mode, figures in live.get(row.version_key, {}).items():
            print(f"{'':<30}live {mode} traffic vs the serving version: {figures['queries']} queries, "
                  f"top-10 overlap {figures['overlap@10']}, RBO {figures['rbo@10']} (since {figures['since'][:16]})")
    return 0


def _substrate_line(status: dict) -> str:
    if "generation" not in status:
        return f"{status['engine']} substrate: {status['state']}"
    return (f"{status['engine']} substrate: {status['state']}, g{status['generation']} ({status['documents']:,} documents, "
            f"{status['pending_changes']:,} changes pending, recall {status['recall']}, {status['disk_bytes'] / 2**20:.1f} MiB)")


def command_substrate_build(args: argparse.Namespace) -> int:
    from semindex.ann_substrate.recall import substrate_recall
    from semindex.ann_substrate.stage import substrate_stage
    from semindex.database import open_database
    from semindex.vectors.version import get_version

    db = open_database()
    report = substrate_stage(db, args.key, full=args.full, progress_emit=print)
    if "skipped" in report.details:
        print(report.details["skipped"])
        return 0
    print(f"g{report.details['generation'][1:]}: {report.row_count:,} documents, {report.added:,} upserted, "
          f"{report.removed:,} deleted in {report.seconds:.1f} s; {report.details['change_capture']}")
    for line in report.details["cleaned"]:
        print(f"  {line}")
    verdict = substrate_recall(db, get_version(db, args.key))
    print(f"recall check: {verdict.summary}")
    return 0 if verdict.passed else 1


def command_substrate_status(args: argparse.Namespace) -> int:
    from semindex.ann_substrate.recall import substrate_status
    from semindex.database import open_database
    from semindex.vectors.version import all_versions, get_version

    db = open_database()
    versions = [get_version(db, args.key)] if args.key else [v for v in all_versions(db) if v.state != "retired"]
    statuses = {version.version_key: substrate_status(db, version) for version in versions}
    if args.json:
        print(json.dumps(statuses, default=str, indent=2))
        return 0
    for key, status in statuses.items():
        print(f"{key:<28} {_substrate_line(status)}")
    return 0


def command_versions_register(args: argparse.Namespace) -> int:
    from semindex.database import open_database
    from semindex.errors import InvalidInput, NotFound
    from semindex.lifecycle import load_declarations, register_declared
    from semindex.settings import versions_file

    path = Path(args.file) if args.file else versions_file()
    declared = load_declarations(path)
    keys = list(declared) if args.all else args.keys
    if not keys:
        raise InvalidInput("name the version key(s) to register, or --all")
    unknown = [key for key in keys if key not in declared]
    if unknown:
        raise NotFound(f"not declared in {path}: {', '.join(unknown)} (declared: {', '.join(declared)})")
    db = open_database()
    for key in keys:
        version = register_declared(db, declared[key])
        print(f"registered {version.version_key}: {version.encoder_name} {version.encoder_revision}, "
              f"{version.dimensions}-d {version.distance_metric}, state {version.state}")
    print("the version backfill sensor starts each backfill under `semindex dev`; or run `semindex versions backfill KEY`")
    return 0


def command_versions_backfill(args: argparse.Namespace) -> int:
    from semindex.errors import InvalidInput
    from semindex_app.runner import run_index_pipeline

    if args.workers < 1:
        raise InvalidInput(f"--workers must be at least 1, got {args.workers}")
    if args.torch_threads < 0:
        raise InvalidInput(f"--torch-threads must be 0 (automatic) or more, got {args.torch_threads}")
    result = run_index_pipeline(args.key, workers=args.workers, torch_threads=args.torch_threads)
    if args.shutdown.signal is not None:
        raise KeyboardInterrupt
    failed = [e.check_name for e in result.get_asset_check_evaluations() if not e.passed]
    if failed:
        print(f"semindex versions backfill: checks failed: {', '.join(failed)}; the version does not serve", file=sys.stderr)
    if not result.success:
        _print_failed_run("versions backfill", result)
        print(f"semindex versions backfill: run {result.run_id} failed; re-run to resume from the watermark", file=sys.stderr)
    return 0 if result.success and not failed else 1


def command_versions_promote(args: argparse.Namespace) -> int:
    from semindex.database import open_database
    from semindex.lifecycle import promote

    flip = promote(open_database(), args.key)
    print(f"{flip.version_key} serves now (was {flip.previous_version_key}); evaluation #{flip.evaluation_id}"
          if flip.changed else f"{flip.version_key} already serves")
    return 0


def command_versions_rollback(args: argparse.Namespace) -> int:
    from semindex.database import open_database
    from semindex.lifecycle import rollback

    flip = rollback(open_database())
    print(f"{flip.version_key} serves again (was {flip.previous_version_key})")
    return 0


def command_versions_retire(args: argparse.Namespace) -> int:
    from semindex.database import open_database
    from semindex.lifecycle import retire
    from semindex_app.runner import forget_partition

    retirement = retire(open_database(), args.key)
    forget_partition(args.key)
    print(f"retired {retirement.version_key}: dropped {retirement.dropped_table} and its indexes"
          if retirement.changed else f"{retirement.version_key} was already retired")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="semindex",
        description="Keyword, semantic and hybrid search over millions of records: a Dagster code "
        "location on PostgreSQL + pgvector.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    run = verbs.add_parser(
        "run",
        help="materialize the whole index graph, then run a sample search",
        description="Materialize raw records -> chunks -> embeddings -> vector column -> HNSW and GIN "
        "indexes -> retained-size projection -> partial-index set for one embedding version, run "
        "every asset check, then print the top hits of a sample search. Re-running is cheap: "
        "unchanged records, chunks and vectors are skipped.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("--version", default="minilm-l6-v2", help="embedding version key (default: %(default)s)")
    run.add_argument("--query", default=SAMPLE_QUERY, help="the sample search to print (default: %(default)r)")
    run.add_argument("--k", type=int, default=5, help="hits to print (default: %(default)s)")
    run.set_defaults(handler=command_run)

    dev = verbs.add_parser(
        "dev",
        help="start the Dagster UI and daemon on the semindex database",
        description="Runs `dagster dev` with runs and events stored in the same PostgreSQL as the "
        "index (through dagster-postgres), and prints the UI address.",
    )
    dev.add_argument("--host", default="127.0.0.1", help="address to serve the UI on (default: %(default)s)")
    dev.add_argument("--port", type=int, default=3000, help="port (default: %(default)s)")
    dev.set_defaults(handler=command_dev)

    db = verbs.add_parser("db", help="database commands", description="Database commands.")
    db_verbs = db.add_subparsers(dest="db_verb", required=True, metavar="DB_VERB")
    url = db_verbs.add_parser(
        "url",
        help="print the URL of the database in use",
        description="Prints DATABASE_URL when set; otherwise starts (or reuses) the embedded server "
        "under SEMINDEX_HOME and prints its URL, e.g. for psql.",
    )
    url.add_argument("--show-password", action="store_true",
                     help="print the password too (by default it is masked as ***)")
    url.set_defaults(handler=command_db_url)
    status = db_verbs.add_parser(
        "status",
        help="the database: URL, data folder, size, version, extensions, whether it runs, who uses it",
        description="Describes the database in use without starting anything: its URL (password masked), for "
        "the embedded server its data folder and size on disk, whether it is running, the server version, "
        "semindex's extensions, the size of the database, the other connected clients and the semindex "
        "processes using the embedded server. Exits 1 when an external DATABASE_URL cannot be reached.",
    )
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.set_defaults(handler=command_db_status)
    start = db_verbs.add_parser(
        "start", help="start the embedded PostgreSQL (the first command that needs it also does)",
        description="Starts the embedded server under SEMINDEX_HOME, or finds it running, creates semindex's "
        "extensions and schema there (idempotent), and prints its URL. It keeps running after this command (every semindex process and Dagster run shares it). Refused "
        "when DATABASE_URL is set.",
    )
    start.set_defaults(handler=command_db_start)
    stop = db_verbs.add_parser(
        "stop", help="stop the embedded PostgreSQL (refused while another semindex process uses it)",
        description="Stops the embedded server (a fast shutdown: open transactions roll back, committed work "
        "stays). Refused while another semindex process (a run, `semindex dev`, `semindex serve`, ...) or "
        "another client uses it, naming them; --force stops it anyway. Refused when DATABASE_URL is set.",
    )
    stop.add_argument("--force", action="store_true", help="stop it even while others use it")
    stop.set_defaults(handler=command_db_stop)
    migrate = db_verbs.add_parser(
        "migrate",
        help="adopt a reference-server semantic_search_blob: JSONB embeddings to pgvector, in place",
        description="Migrates a table shaped (connector_id, connector_instance_id, scope_key, record_key, "
        "embedding JSONB) to pgvector: rows that cannot be cast (not an array, nulls, non-numbers, empty, "
        "NaN/Infinity, out of float4 range) move to semindex.quarantined_semantic_blob_rows with their reason; "
        "the rest are cast in bounded batches along the primary key, the columns are swapped in one "
        "transaction, and a partial expression HNSW index is built serially for one dimension. Safe to kill "
        "at any point and re-run; a migrated table is left untouched. Without the vector extension the "
        "table stays JSONB (its bad rows are counted, not deleted) and search ranks it by brute force. The "
        "vector_column asset runs the same migration when the table exists. After a migration of a large "
        "table, VACUUM it (every row was rewritten).",
        epilog="environment: SEMINDEX_MIGRATION_BATCH_SIZE (default 50000), "
        "SEMINDEX_MIGRATION_MAINTENANCE_WORK_MEM (default 256MB)",
    )
    migrate.add_argument("--table", default="public.semantic_search_blob", help="schema.table (default: %(default)s)")
    migrate.add_argument("--batch-size", type=int, default=None, help="rows per backfill transaction")
    migrate.add_argument("--maintenance-work-mem", default=None, help="memory for the index build, e.g. 1GB")
    migrate.add_argument("--dimensions", type=int, default=384, help="dimension the HNSW index covers (default: %(default)s)")
    migrate.add_argument("--concurrently", action="store_true", help="build the index CONCURRENTLY (table serving reads)")
    migrate.add_argument("--json", action="store_true", help="print the report as JSON")
    migrate.set_defaults(handler=command_db_migrate)

    ingest = verbs.add_parser(
        "ingest",
        help="add JSONL records to the raw source",
        description="Upserts JSONL records (one per line: connector_id, connector_instance_id, stream, "
        "record_key, fields {name: text}, updated_at, optional deleted) into the raw source as a "
        "materialization of raw_records. Unchanged records are not rewritten; malformed lines are "
        "quarantined with their reason and the rest land. Run `semindex run` to index them.",
        epilog='example line: {"connector_id": "gmail", "connector_instance_id": "gmail-ann", '
        '"stream": "messages", "record_key": "m-1", "fields": {"subject": "Lunch?"}, '
        '"updated_at": "2026-01-02T10:00:00Z"}',
    )
    ingest.add_argument("paths", nargs="+", metavar="PATH", help="JSONL file(s)")
    ingest.add_argument("--force", action="store_true", help="re-read files already ingested unchanged")
    ingest.set_defaults(handler=command_ingest)

    versions = verbs.add_parser(
        "versions",
        help="embedding versions: list, register, backfill, promote, rollback, retire",
        description="Embedding versions are declared in embedding_versions.toml (or SEMINDEX_VERSIONS_FILE) and "
        "registered into the database. A registered version is backfilled beside the serving one (the version "
        "backfill sensor does it under `semindex dev`), evaluated on the judged query sets and against the "
        "serving version, and serves only after `promote` re-reads a passing stored verdict. `rollback` flips "
        "back to the version the last promotion replaced; `retire` drops a version's vectors and indexes.",
        epilog="examples:\n"
        "  semindex versions register mpnet-base-v2     probe the encoder, store the version\n"
        "  semindex versions backfill mpnet-base-v2     embed, index, evaluate (resumable)\n"
        "  semindex versions list                       states, serving version, verdicts\n"
        "  semindex versions promote mpnet-base-v2      serve it, if its verdict passed\n"
        "  semindex versions rollback                   serve the previous version again\n"
        "  semindex versions retire mpnet-base-v2       drop its storage (not if serving or rollback target)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    substrate = verbs.add_parser(
        "substrate",
        help="zvec ANN substrates: build, status",
        description="A version whose ann_engine is zvec is searched through immutable zvec generations built from "
        "its vector table. `build` makes and publishes the next one (the rows changed since the published one, or "
        "all with --full), then runs its recall check (the zvec plan serves a generation only once it passed); "
        "`status` shows each version's generation, pending changes and recall. The ann_substrate asset and the "
        "nightly and weekly schedules run the same build.",
    )
    substrate_verbs = substrate.add_subparsers(dest="substrate_verb", required=True, metavar="SUBSTRATE_VERB")
    substrate_build = substrate_verbs.add_parser("build", help="build, publish and check the next generation")
    substrate_build.add_argument("key", help="the version key")
    substrate_build.add_argument("--full", action="store_true", help="from scratch, not from the published generation")
    substrate_build.set_defaults(handler=command_substrate_build)
    substrate_status_verb = substrate_verbs.add_parser("status", help="generations, horizon, pending changes, recall")
    substrate_status_verb.add_argument("key", nargs="?", help="one version (default: every live one)")
    substrate_status_verb.add_argument("--json", action="store_true", help="print JSON")
    substrate_status_verb.set_defaults(handler=command_substrate_status)

    versions_verbs = versions.add_subparsers(dest="versions_verb", required=True, metavar="VERSIONS_VERB")
    listing = versions_verbs.add_parser("list", help="every version, its state, role and newest verdict")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=command_versions_list)
    register = versions_verbs.add_parser(
        "register",
        help="register declared versions (or update their thresholds)",
        description="Stores versions declared in the versions file. The encoder is loaded and its output "
        "dimension checked first: a mismatch is refused before anything is stored. Registering an existing "
        "key again updates its thresholds and promotion mode; its encoder identity cannot change.",
    )
    register.add_argument("keys", nargs="*", metavar="KEY", help="version keys declared in the file")
    register.add_argument("--all", action="store_true", help="every declared version")
    register.add_argument("--file", help="versions file (default: SEMINDEX_VERSIONS_FILE or ./embedding_versions.toml)")
    register.set_defaults(handler=command_versions_register)
    backfill = versions_verbs.add_parser(
        "backfill",
        help="run the index pipeline for one version now (resumes from its watermark)",
        description="Materializes the whole graph for the version: embeddings, vector column, indexes, evaluation, "
        "and promotion when the version is declared promotion = \"auto\" and its gates pass. With --workers N the "
        "embeddings run as N claiming steps in N processes (Dagster's multiprocess executor); more workers, on this "
        "machine or on others sharing the database, can join the same backfill at any time.",
    )
    backfill.add_argument("key", metavar="KEY")
    backfill.add_argument("--workers", type=int, default=1, metavar="N",
                          help="backfill workers, each a process claiming ranges of pending chunks (default 1: in this process)")
    backfill.add_argument("--torch-threads", type=int, default=0, metavar="T",
                          help="torch threads per worker (default 0: max(1, cores // N))")
    backfill.set_defaults(handler=command_versions_backfill)
    promote = versions_verbs.add_parser("promote", help="serve a version whose stored verdict passed",
                                        description="One transaction: re-reads the newest stored verdict, refuses "
                                        "unless it passed under the version's current thresholds, flips the serving version.")
    promote.add_argument("key", metavar="KEY")
    promote.set_defaults(handler=command_versions_promote)
    rollback = versions_verbs.add_parser("rollback", help="serve the version the last promotion replaced",
                                         description="One transaction flipping back to the rollback target.")
    rollback.set_defaults(handler=command_versions_rollback)
    retire = versions_verbs.add_parser("retire", help="drop a version's vectors and indexes",
                                       description="Refused for the serving version and the rollback target.")
    retire.add_argument("key", metavar="KEY")
    retire.set_defaults(handler=command_versions_retire)

    search = verbs.add_parser(
        "search",
        help="lexical, semantic or hybrid search (default hybrid)",
        description="Searches the index; one hit per record. lexical: BM25 over each record's fields; plain "
        "words are OR-ed and ranked (records holding every word rank first), \"quoted phrases\" must appear, "
        "-word and -\"phrase\" must not, OR joins alternatives; any other text is just text. semantic: nearest "
        "records by meaning under the active embedding version; hybrid (default): both, fused as the version "
        "declares. Scope flags repeat and combine; nothing outside the scope ever comes back.",
        epilog="examples:\n"
        "  semindex search 'election results' --mode semantic --k 5\n"
        "  semindex search '\"world cup\" -cricket' --mode lexical --stream sport --json\n"
        "  semindex search 'budget' --connector-instance bbc --stream business --stream politics\n"
        "  semindex search --mode lexical -- '-cricket \"world cup\"'    a query starting with a dash goes after --",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    search.add_argument("query", metavar="QUERY")
    search.add_argument("--mode", choices=["lexical", "semantic", "hybrid"], default="hybrid",
                        help="default: %(default)s")
    search.add_argument("--k", type=int, default=25, help="number of hits, 1..100 (default: %(default)s)")
    search.add_argument("--connector-instance", action="append", default=[], metavar="ID",
                        help="restrict to this connector instance (repeatable)")
    search.add_argument("--stream", action="append", default=[], metavar="NAME", help="restrict to this stream (repeatable)")
    search.add_argument("--field", action="append", default=[], metavar="NAME", help="restrict to this field (repeatable)")
    search.add_argument("--record-key", action="append", default=[], metavar="KEY",
                        help="restrict to these records (repeatable; exact paths)")
    search.add_argument("--version", default=None, help="embedding version key (default: the active one)")
    search.add_argument("--lexical-window", type=int, default=1000,
                        help="lexical candidates a search ranks: every match while they fit, 100..10000 "
                        "(default: %(default)s)")
    search.add_argument("--fusion", choices=["blend", "rrf", "interleave"], default=None,
                        help="hybrid fusion (default: the version's declared fusion)")
    search.add_argument("--unit", choices=["records", "chunks"], default="records",
                        help="a hit is a record (its best chunk gives the snippet) or a chunk (default: %(default)s)")
    search.add_argument("--json", action="store_true", help="print hits and meta as JSON")
    search.set_defaults(handler=command_search)

    serve = verbs.add_parser(
        "serve",
        help="the search HTTP service (FastAPI under uvicorn)",
        description="Serve search over HTTP: the reference server's GET /v1/search, /v1/search/semantic and "
        "/v1/search/hybrid, semindex's POST /v1/query, a search page at /, /docs, /livez, /readyz and "
        "/metrics. It only reads: run it with the reader role's DATABASE_URL. Clients send "
        "`Authorization: Bearer <token>` (semindex tokens create).",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    serve.add_argument("--port", type=int, default=8080, help="port (default: %(default)s)")
    serve.add_argument("--workers", type=int, default=1, help="worker processes (default: %(default)s)")
    serve.set_defaults(handler=command_serve)

    tokens = verbs.add_parser("tokens", help="bearer tokens of the HTTP service",
                              description="Create, list and revoke the HTTP service's bearer tokens (run with the "
                              "writer's DATABASE_URL). A token is shown once; only its SHA-256 is stored.")
    tokens_verbs = tokens.add_subparsers(dest="tokens_verb", required=True, metavar="VERB")
    create = tokens_verbs.add_parser(
        "create", help="a new token: --owner, or --grant JSON",
        description="A new token, printed once on stdout. --owner searches everything; --grant limits a "
        "client to a scope, applied before any matching. Grant keys (all optional): connections, streams "
        "(lists of names), fields ({stream: [field, ...]}), since and until (ISO 8601 times on the record's "
        "updated_at, half-open), record_keys (a list).",
        epilog="example: semindex tokens create --label crm-app --grant "
        "'{\"connections\": [\"gmail-ann\"], \"streams\": [\"messages\"], \"fields\": {\"messages\": [\"subject\"]}}'",
    )
    create.add_argument("--label", required=True, help="who or what the token is for")
    create.add_argument("--owner", action="store_true", help="a token that searches everything")
    create.add_argument("--grant", help="a client token's grant, as JSON")
    create.add_argument("--expires", help="when the token stops working (ISO 8601, with a time zone)")
    create.add_argument("--json", action="store_true", help="print the token and its row as JSON")
    create.set_defaults(handler=command_tokens_create)
    token_list = tokens_verbs.add_parser("list", help="every token: id, state, label, grant")
    token_list.add_argument("--json", action="store_true")
    token_list.set_defaults(handler=command_tokens_list)
    revoke = tokens_verbs.add_parser("revoke", help="revoke a token (takes effect on its next request)")
    revoke.add_argument("token_id", type=int, help="the id `semindex tokens list` shows")
    revoke.set_defaults(handler=command_tokens_revoke)
    return parser


# Commands whose work commits as it goes, so a stopped one resumes where it stopped.
RESUMABLE = {"run", "ingest", "versions backfill", "versions register", "db migrate"}


def _command(args: argparse.Namespace) -> str:
    words = [args.verb, *(getattr(args, f"{args.verb}_verb", None) or "").split()]
    return " ".join(word for word in words if word)


# Refused as asked (re-running the same command cannot help): exit 2. Everything else that fails: 1.
def _exit_code(error: BaseException) -> int:
    from semindex.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthenticated

    refused = (InvalidInput, NotFound, Conflict, Forbidden, Unauthenticated, FileNotFoundError, IsADirectoryError,
               NotADirectoryError)
    return 2 if isinstance(error, refused) else 1


def _error_line(error: BaseException, debug: bool) -> str:
    from semindex.errors import SemindexError
    from semindex_app.logs import one_line_error

    if isinstance(error, SemindexError):
        return " ".join(str(error).split())
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        return f"{error.strerror.lower()}: {error.filename}"
    return one_line_error(error) + ("" if debug else " (unexpected: --debug prints the traceback)")


def main(argv: list[str] | None = None) -> int:
    from semindex import settings
    from semindex_app import logs
    from semindex_app.shutdown import Shutdown, exit_code_for, signal_name

    args = build_parser().parse_args(argv)  # a usage error exits 2 with one line
    command = _command(args)
    debug = getattr(args, "debug", False)
    shutdown = None
    restore_logging = None
    exported = {name: os.environ.get(name) for name in ("SEMINDEX_DEBUG", "SEMINDEX_LOG_FORMAT")}
    try:
        # Exported, so the processes this one starts (dagster dev, its runs, serve's workers) agree.
        if debug:
            os.environ["SEMINDEX_DEBUG"] = "1"
        if getattr(args, "log_format", None):
            os.environ["SEMINDEX_LOG_FORMAT"] = args.log_format
        debug = settings.debug()
        restore_logging = logs.configure(settings.log_format())
        # The HTTP service stops the way uvicorn does (graceful, bounded), noted here; every other
        # command stops here.
        shutdown = Shutdown(command, settings.shutdown_timeout(), resumable=command in RESUMABLE)
        shutdown.install(handle=args.verb != "serve")
        args.shutdown = shutdown
        code = args.handler(args)
    except KeyboardInterrupt:
        code = None
    except Exception as error:
        # One line, no traceback (unless --debug): the message names the bad value or what to do.
        print(f"semindex {command}: {_error_line(error, debug)}", file=sys.stderr)
        if debug:
            traceback.print_exception(error)
        code = _exit_code(error)
    finally:
        if shutdown is not None:
            shutdown.uninstall()
        if restore_logging is not None:
            restore_logging()
        for name, value in exported.items():  # main() may be called in a process that lives on
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    if code is None or (shutdown is not None and shutdown.signal is not None):
        signum = shutdown.signal if shutdown is not None and shutdown.signal is not None else 2
        resume = "; committed work is kept, run again to resume" if command in RESUMABLE else ""
        print(f"semindex {command}: stopped by {signal_name(signum)}{resume}", file=sys.stderr)
        return exit_code_for(signum)
    return code


if __name__ == "__main__":
    sys.exit(main())
