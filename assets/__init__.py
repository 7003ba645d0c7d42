"""Software-defined assets, one module per pipeline stage. Each is a thin call into the library: the
stage function decides and reports, the asset turns its report into metadata."""
