"""Offline builders of the data shipped in semindex/data (the sample corpus, the judged sets) and the
iterators over the full source corpora that benchmarks use. The pipeline never imports them."""
