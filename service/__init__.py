"""The job service: imports and exports as Dagster runs (launch, follow, control, documents), and
the `mail-pipeline` command line on top of it. It imports the core (`mail_pipeline`) and the
Dagster definitions (`assets`); neither imports it."""
