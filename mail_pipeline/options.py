"""The import options: one canonical model, and the adapter from listmonk's `params` body.

The model is plain Pydantic so the core stays free of Dagster; the Dagster layer subclasses it as
the import job's `Config`, which is why the launchpad shows exactly these fields.
"""
import json
from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, ValidationError

from mail_pipeline.errors import MailPipelineError

MODES = ("subscribe", "blocklist")
SUBSCRIPTION_STATUSES = ("unconfirmed", "confirmed", "unsubscribed")
ENCODINGS = ("utf-8", "iso-8859-1")


class OverwriteWhat(BaseModel):
    """What an overwrite may change (GreenArrow's `overwrite_what`, with its defaults)."""

    model_config = ConfigDict(extra="forbid")

    custom_fields: bool = True  # name, attributes and custom fields
    status: bool = False
    confirmed: bool = False
    format: bool = False


class OverwriteWhenStatus(BaseModel):
    """Which current subscription statuses an overwrite may touch (GreenArrow's defaults)."""

    model_config = ConfigDict(extra="forbid")

    active: bool = True
    unsubscribed: bool = False
    bounced: bool = False
    deactivated: bool = False
    scomp: bool = False


class ImportOptions(BaseModel):
    """Everything an import runs with. Field names follow the spec's vocabulary."""

    model_config = ConfigDict(extra="forbid")

    source: str = ""
    lists: list[str] = []
    mode: str = "subscribe"
    subscription_status: Optional[str] = None  # default depends on mode (listmonk)
    overwrite: bool = False
    overwrite_what: OverwriteWhat = OverwriteWhat()
    overwrite_when_status: OverwriteWhenStatus = OverwriteWhenStatus()
    subscribe_unsubscribed: bool = False
    delimiter: str = ","
    quote: str = '"'
    encoding: str = "utf-8"
    header: bool = True
    mapping: Optional[list[str]] = None  # positional (GreenArrow `column_mapping`)
    subscriber_limit: Optional[int] = None
    # Rows per transaction: each batch costs a pass over the store, so batches are large; a
    # crash still loses at most one batch of work (about a second) and progress shows per batch.
    batch_size: int = 500_000

    def effective_subscription_status(self) -> str:
        """listmonk's default: unconfirmed when subscribing, unsubscribed when blocklisting."""
        if self.subscription_status:
            return self.subscription_status
        return "unsubscribed" if self.mode == "blocklist" else "unconfirmed"


def normalize_delimiter(value: str) -> str:
    """`tab` and a typed backslash-t both mean a tab."""
    return "\t" if value in ("tab", "\\t") else value


def check(options: ImportOptions) -> ImportOptions:
    """Refuse options that cannot work, with listmonk's wording where it has one."""
    options = options.model_copy(update={"delimiter": normalize_delimiter(options.delimiter)})
    if len(options.delimiter) != 1 or options.delimiter in "\r\n":
        raise MailPipelineError("invalid delimiter: must be a single character")
    if options.quote not in ('"', "'"):
        raise MailPipelineError("invalid quote: must be \" or '")
    if options.quote == options.delimiter:
        raise MailPipelineError("invalid delimiter: must differ from the quote character")
    if options.mode not in MODES:
        raise MailPipelineError("invalid mode: must be 'subscribe' or 'blocklist'")
    if options.subscription_status and options.subscription_status not in SUBSCRIPTION_STATUSES:
        raise MailPipelineError(
            "invalid subscription_status: must be 'unconfirmed', 'confirmed' or 'unsubscribed'")
    if options.encoding.lower().replace("_", "-") not in ENCODINGS:
        raise MailPipelineError("invalid encoding: must be 'utf-8' or 'iso-8859-1'")
    if not options.header and not options.mapping:
        raise MailPipelineError("a file without a header needs a positional mapping (--mapping)")
    if options.batch_size < 1:
        raise MailPipelineError("invalid batch_size: must be at least 1")
    if options.subscriber_limit is not None and options.subscriber_limit < 0:
        raise MailPipelineError("invalid subscriber_limit: must not be negative")
    if any(not name.strip() for name in options.lists):
        raise MailPipelineError("invalid list name: a list name cannot be empty")
    return options.model_copy(update={"encoding": options.encoding.lower().replace("_", "-")})


LISTMONK_KEYS = {"mode", "delim", "lists", "overwrite", "subscription_status"}


def from_listmonk(params: dict[str, Any]) -> dict[str, Any]:
    """listmonk's `params` object → canonical fields. Its list ids become list names. listmonk's
    overwrite "updates status if provided", so it also turns on `overwrite_what.status`."""
    fields: dict[str, Any] = {}
    if "mode" in params:
        fields["mode"] = params["mode"]
    if "delim" in params:
        fields["delimiter"] = params["delim"]
    if "lists" in params:
        if not isinstance(params["lists"], list):
            raise MailPipelineError("invalid params: 'lists' must be an array")
        fields["lists"] = [str(item) for item in params["lists"]]
    if "overwrite" in params:
        fields["overwrite"] = params["overwrite"]
        fields["overwrite_what"] = {"custom_fields": True, "status": True}
    if params.get("subscription_status"):
        fields["subscription_status"] = params["subscription_status"]
    return fields


def read_params(path: str) -> dict[str, Any]:
    """Read a `--params` file and return canonical fields, recognising the body by its keys."""
    try:
        body = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MailPipelineError(f"params file not found: {path}") from None
    except (OSError, ValueError) as exc:
        raise MailPipelineError(f"params file is not valid JSON: {path} ({exc})") from None
    if not isinstance(body, dict):
        raise MailPipelineError("params file must hold a JSON object")
    # The canonical form may come as the launchpad's whole run config.
    ops = body.get("ops")
    if isinstance(ops, dict) and isinstance(ops.get("raw_file"), dict):
        body = ops["raw_file"].get("config") or {}
        if not isinstance(body, dict):
            raise MailPipelineError("params file: ops.raw_file.config must be a JSON object")
    # listmonk's and the canonical keys overlap (mode, lists, overwrite); listmonk's `delim` or
    # its numeric list ids tell them apart.
    lists = body.get("lists")
    listmonk_like = "delim" in body or (isinstance(lists, list) and any(not isinstance(x, str) for x in lists))
    if set(body) <= LISTMONK_KEYS and listmonk_like:
        return from_listmonk(body)
    unknown = set(body) - set(ImportOptions.model_fields)
    if not unknown:
        return body
    raise MailPipelineError(f"unknown key in params: {sorted(unknown)[0]!r}")


def build(fields: dict[str, Any]) -> ImportOptions:
    """Canonical fields → checked options; a wrong type names the key."""
    try:
        options = ImportOptions.model_validate(fields)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(part) for part in error["loc"]) or "options"
        raise MailPipelineError(f"invalid option {key!r}: {error['msg']}") from None
    return check(options)
