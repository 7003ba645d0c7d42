import dagster as dg

# One partition per embedding version; its key is the version_key in semindex.embedding_versions.
embedding_versions = dg.DynamicPartitionsDefinition(name="embedding_versions")
