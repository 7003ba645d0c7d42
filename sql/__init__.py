"""semindex's SQL statements, one statement family per file (`-- name:` sections). Installed as the
package semindex.sql (package data) and read with importlib.resources by semindex.sql_files."""
