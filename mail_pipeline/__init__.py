"""mail-pipeline's domain core: reading, mapping, validation, merge rules, logs, the command line.

Nothing here imports Dagster; the Dagster layer lives in the top-level `assets` package.
"""
