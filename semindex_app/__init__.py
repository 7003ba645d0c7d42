"""The application layer over the semindex library: the `semindex` command (cli.py), the runner that
materializes the code location in-process (runner.py) and the Dagster code location itself
(definitions.py, with assets/, resources/, sensors/ and schedules/, which live at the top of the
repository and install under this package)."""
