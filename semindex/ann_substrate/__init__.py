"""zvec as a second ANN engine beside pgvector (../shared/reference/ann-substrate.md): immutable
generations built from PostgreSQL, a durable horizon, exact re-ranking in PostgreSQL.

  generations.py  where generations live, what PostgreSQL records of them, the zvec import guard
  capture.py      change-capture triggers on a version's vector table
  builder.py      build, verify, publish, clean up (the only read-write zvec code)
  recall.py       the recall gate the plan waits for, and the status `semindex substrate status` shows
  stage.py        the ann_substrate pipeline stage

The "zvec" plan itself (read-only handles per process, candidates, the delta, exact re-ranking) is
an engine on the search seam: semindex.search.zvec_engine.
"""
