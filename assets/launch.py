"""`new_import`: start an import from the launchpad without choosing its id. Its one op takes the
import's options, gives the import the next id and queues a run of `import_job` for it, in the
same code location, through the run queue like any other."""
import dagster as dg
from dagster._core.origin import JobPythonOrigin
from dagster._core.remote_origin import RemoteJobOrigin

from assets.config import ImportConfig
from assets.names import IMPORT_JOB, IMPORTS_PARTITIONS, NEW_IMPORT_JOB, Tags, import_run_config, readable_tags
from mail_pipeline import home
from mail_pipeline.errors import MailPipelineError
from mail_pipeline.options import build


@dg.op(description="Give the import the next id and queue its run of import_job.")
def queue_import(context: dg.OpExecutionContext, config: ImportConfig) -> str:
    try:
        options = build(config.model_dump())
    except MailPipelineError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    if not options.source and options.content is None:
        raise dg.Failure(description="no source: give `source` (a file path or URL) or `content` "
                                     "(the CSV text)", allow_retries=False)
    instance, parent = context.instance, context.dagster_run
    import_id = home.new_import_id()
    instance.add_dynamic_partitions(IMPORTS_PARTITIONS, [import_id])
    remote = parent.remote_job_origin
    code = parent.job_code_origin
    run = instance.create_run_for_job(
        context.repository_def.get_job(IMPORT_JOB), run_config=import_run_config(options),
        tags={Tags.PARTITION: import_id, Tags.KIND: "import", **readable_tags(options)},
        status=dg.DagsterRunStatus.NOT_STARTED,
        remote_job_origin=RemoteJobOrigin(remote.repository_origin, IMPORT_JOB) if remote else None,
        job_code_origin=JobPythonOrigin(IMPORT_JOB, code.repository_origin) if code else None)
    instance.submit_run(run.run_id, workspace=None)
    context.log.info(f"import {import_id}: queued as run {run.run_id}")
    context.add_output_metadata({"import_id": import_id, "run_id": run.run_id})
    return import_id


@dg.job(name=NEW_IMPORT_JOB, executor_def=dg.in_process_executor,
        description="Start an import from the launchpad: give its options (at least `source` or "
                    "`content`); it gets the next import id and runs as import_job.")
def new_import_job():
    queue_import()
