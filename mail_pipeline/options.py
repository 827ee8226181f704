"""The import options: one canonical model, checked once, whatever shape they came in.

The model is plain Pydantic so the core stays free of Dagster; the Dagster layer turns it into the
import job's `Config`, which is why the launchpad shows exactly these fields. The seed systems'
request bodies are translated into it by `params`.
"""
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, ValidationError

from mail_pipeline.errors import MailPipelineError

MODES = ("subscribe", "blocklist")
SUBSCRIPTION_STATUSES = ("unconfirmed", "confirmed", "unsubscribed", "bounced", "deactivated",
                         "complained")
ENCODINGS = ("utf-8", "iso-8859-1")
EMAIL_FORMATS = ("html", "text", "both")
DATE_FORMATS = ("mdy", "dmy")


class OverwriteWhat(BaseModel):
    """What an overwrite may change (GreenArrow's `overwrite_what`, with its defaults)."""

    model_config = ConfigDict(extra="forbid")

    custom_fields: bool = True  # name, attributes, custom fields, tags, subscription times/IPs
    status: bool = False        # subscriber status and subscription status
    confirmed: bool = False     # unconfirmed <-> confirmed only
    format: bool = False        # email_format
    autoresponder: bool = True  # accepted for GreenArrow bodies; mail-pipeline sends no mail


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

    source: str = ""  # a path; inline CSV text goes in `content` instead
    content: Optional[str] = None  # CSV text given inline (GreenArrow json, Mailcoach, Mailrith)
    lists: list[str] = []
    mode: str = "subscribe"
    subscription_status: Optional[str] = None  # default depends on mode (listmonk)
    email_format: Optional[str] = None  # new subscribers' format (GreenArrow subscriber_defaults)
    overwrite: bool = False
    overwrite_what: OverwriteWhat = OverwriteWhat()
    overwrite_when_status: OverwriteWhenStatus = OverwriteWhenStatus()
    subscribe_unsubscribed: bool = False  # Mailcoach
    unsubscribe_others: bool = False      # Mailcoach: only when no row failed
    replace_tags: bool = False            # Mailcoach
    tags: list[str] = []                  # Mailrith `new_tag_name`, `--tag`: on every added/updated
    default_custom_fields: dict[str, Any] = {}  # GreenArrow: fill new subscribers
    delimiter: str = ","
    quote: str = '"'
    encoding: str = "utf-8"
    header: bool = True
    mapping: Optional[list[str]] = None  # positional (GreenArrow `column_mapping`)
    column_map: dict[str, str] = {}      # named: CSV column -> field (Mailrith `mappings`, `--map`)
    date_format: str = "mdy"             # settles 05/11/2014 (GreenArrow)
    subscriber_limit: Optional[int] = None
    idempotency_key: Optional[str] = None
    begins_at: Optional[str] = None
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


def _one_of(name: str, value: Optional[str], allowed: tuple[str, ...]) -> None:
    if value is not None and value not in allowed:
        raise MailPipelineError(f"invalid {name} {value!r}: must be " + ", ".join(
            repr(a) for a in allowed[:-1]) + f" or {allowed[-1]!r}")


def check(options: ImportOptions) -> ImportOptions:
    """Refuse options that cannot work, with listmonk's wording where it has one."""
    options = options.model_copy(update={
        "delimiter": normalize_delimiter(options.delimiter),
        "encoding": options.encoding.lower().replace("_", "-").replace("latin-1", "iso-8859-1"),
    })
    if len(options.delimiter) != 1 or options.delimiter in "\r\n":
        raise MailPipelineError("invalid delimiter: must be a single character")
    if options.quote not in ('"', "'"):
        raise MailPipelineError("invalid quote: must be \" or '")
    if options.quote == options.delimiter:
        raise MailPipelineError("invalid delimiter: must differ from the quote character")
    if options.mode not in MODES:
        raise MailPipelineError("invalid mode: must be 'subscribe' or 'blocklist'")
    _one_of("subscription_status", options.subscription_status, SUBSCRIPTION_STATUSES)
    _one_of("encoding", options.encoding, ENCODINGS)
    _one_of("email_format", options.email_format, EMAIL_FORMATS)
    _one_of("date_format", options.date_format, DATE_FORMATS)
    if not options.header and not options.mapping:
        raise MailPipelineError("a file without a header needs a positional mapping (--mapping)")
    if options.mapping and options.column_map:
        raise MailPipelineError("give either a positional mapping or a named one, not both")
    if options.batch_size < 1:
        raise MailPipelineError("invalid batch_size: must be at least 1")
    if options.subscriber_limit is not None and options.subscriber_limit < 0:
        raise MailPipelineError("invalid subscriber_limit: must not be negative")
    if any(not name.strip() for name in options.lists):
        raise MailPipelineError("invalid list name: a list name cannot be empty")
    if any(not tag.strip() for tag in options.tags):
        raise MailPipelineError("invalid tag: a tag cannot be empty")
    if "\x00" in options.source:
        raise MailPipelineError("invalid source: a file name cannot hold a NUL character")
    if options.source and options.content is not None:
        raise MailPipelineError("give either a source file or inline CSV content, not both")
    return options.model_copy(update={"tags": [t.strip() for t in options.tags]})


def build(fields: dict[str, Any]) -> ImportOptions:
    """Canonical fields → checked options; an unknown key or a wrong type names the key."""
    try:
        options = ImportOptions.model_validate(fields)
    except ValidationError as exc:
        raise MailPipelineError(describe_error(exc)) from None
    return check(options)


def describe_error(exc: ValidationError, noun: str = "option") -> str:
    """Pydantic's first error as one sentence naming the key (`file_format.character_set`)."""
    errors = exc.errors()
    # An unknown key is usually a misspelt one, which also makes the right one look missing.
    error = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    key = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"unknown {noun} {key!r}"
    if error["type"] == "missing":
        return f"missing {noun} {key!r}"
    return f"invalid {noun} {key!r}: {error['msg']}"
