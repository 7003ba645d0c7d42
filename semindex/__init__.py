"""semindex: keyword, semantic and hybrid search over personal and company records.

This package is the domain library. It imports and works without Dagster; the Dagster code
location (assets/, resources/, sensors/, definitions.py) is a thin layer on top of it.
"""
