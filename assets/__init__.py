"""mail-pipeline's Dagster layer: assets, jobs, resources and the code location's Definitions.

Each asset names a stage and calls the domain core in `mail_pipeline`.
"""
