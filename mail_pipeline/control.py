"""Pause and cancel (GreenArrow), honoured between batches.

Where a request comes from is the caller's business (a run tag, in the Dagster layer): the stages
only ask `requested()` between batches and at each stage's start. The batch in progress commits or
rolls back whole, then the run stops. A paused import resumes (a new run of the same import, which
skips committed batches); a cancelled one is done for good.
"""
from typing import Callable, Optional

from mail_pipeline.errors import MailPipelineError

# What a stage asks between batches: "pause", "cancel" or None.
Requested = Callable[[], Optional[str]]


class Stopped(MailPipelineError):
    """The run stopped on a pause or cancel request (`request` says which)."""

    def __init__(self, message: str, request: str):
        super().__init__(message)
        self.request = request


def stopped(what: str, import_id: str, again: str = "resume") -> Stopped:
    """The stop that honours a pause or a cancel of the import (or of its revert, which the
    command `imports revert` carries on: `again`)."""
    if what == "pause":
        return Stopped(f"paused on request; resume with: mail-pipeline imports {again} {import_id}", what)
    return Stopped("cancelled on request", what)


def check(requested: Optional[Requested], import_id: str, again: str = "resume") -> None:
    """Stop here if a pause or a cancel was asked for."""
    what = requested() if requested else None
    if what in ("pause", "cancel"):
        raise stopped(what, import_id, again)
