"""Software-defined assets, one module per pipeline stage. Each is a thin call into the library."""
