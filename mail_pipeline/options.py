"""The import options: one canonical model, checked once, whatever shape they came in.

The model is plain Pydantic so the core stays free of Dagster; the Dagster layer turns it into the
import job's `Config`, which is why the launchpad shows exactly these fields. The seed systems'
request bodies are translated into it by `params`.
"""
import codecs
import math
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mail_pipeline.errors import MailPipelineError

MODES = ("subscribe", "blocklist")
SUBSCRIPTION_STATUSES = ("unconfirmed", "confirmed", "unsubscribed", "bounced", "deactivated",
                         "complained")
EMAIL_FORMATS = ("html", "text", "both")
DATE_FORMATS = ("mdy", "dmy")
SMALLEST_DEFAULT_BATCH, LARGEST_DEFAULT_BATCH = 500_000, 1_000_000


class OverwriteWhat(BaseModel):
    """What an overwrite may change (GreenArrow's `overwrite_what`, with its defaults)."""

    model_config = ConfigDict(extra="forbid")

    custom_fields: bool = Field(True, description="Name, attributes, custom fields, tags and the subscription's times and IPs.")
    status: bool = Field(False, description="The subscriber status and the subscription status.")
    confirmed: bool = Field(False, description="Only unconfirmed <-> confirmed.")
    format: bool = Field(False, description="The subscriber's email_format.")
    autoresponder: bool = Field(True, description="Accepted for GreenArrow bodies; no effect (mail-pipeline sends no mail).")


class OverwriteWhenStatus(BaseModel):
    """Which current subscription statuses an overwrite may touch (GreenArrow's defaults)."""

    model_config = ConfigDict(extra="forbid")

    active: bool = Field(True, description="Overwrite active (unconfirmed or confirmed) subscriptions.")
    unsubscribed: bool = Field(False, description="Overwrite unsubscribed subscriptions.")
    bounced: bool = Field(False, description="Overwrite bounced subscriptions.")
    deactivated: bool = Field(False, description="Overwrite deactivated subscriptions.")
    scomp: bool = Field(False, description="Overwrite subscriptions that complained.")


class ImportOptions(BaseModel):
    """Everything an import runs with. Field names follow the spec's vocabulary."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field("", description="The file to import: a path on the run's host (.csv, .tsv, .txt, .zip) or an http(s) URL. Give this or `content`.")
    content: Optional[str] = Field(None, description="CSV text given inline instead of a source (GreenArrow json, Mailcoach, Mailrith).")
    lists: list[str] = Field([], description="Target lists by name, created on first use.")
    mode: str = Field("subscribe", description="subscribe, or blocklist (listmonk).")
    subscription_status: Optional[str] = Field(None, description="New subscriptions' status: unconfirmed (default when subscribing), confirmed or unsubscribed (default when blocklisting).")
    email_format: Optional[str] = Field(None, description="New subscribers' format: html, text or both (GreenArrow subscriber_defaults).")
    overwrite: bool = Field(False, description="Update existing subscribers (what changes: overwrite_what).")
    overwrite_what: OverwriteWhat = Field(OverwriteWhat(), description="What an overwrite may change (GreenArrow).")
    overwrite_when_status: OverwriteWhenStatus = Field(OverwriteWhenStatus(), description="Which current subscription statuses an overwrite may touch (GreenArrow).")
    subscribe_unsubscribed: bool = Field(False, description="Re-subscribe subscribers who had unsubscribed from a target list (Mailcoach).")
    unsubscribe_others: bool = Field(False, description="Unsubscribe the target lists' subscribers absent from the file, only when no row failed (Mailcoach).")
    replace_tags: bool = Field(False, description="The file's tags replace the stored ones (Mailcoach).")
    tags: list[str] = Field([], description="Tags given to every added or updated subscriber (Mailrith new_tag_name).")
    default_custom_fields: dict[str, Any] = Field({}, description="Custom field values for new subscribers that the file leaves empty (GreenArrow).")
    delimiter: Optional[str] = Field(None, description="The field separator, one character (tab: \"\\t\"); when not given, detected among , ; tab and | (a .tsv is tab-separated).")
    quote: str = Field('"', description="The quote character.")
    encoding: Optional[str] = Field(None, description="Any codec name Python knows (utf-8, iso-8859-1, cp1252, utf-16...); when not given, detected: UTF-8, UTF-16 with a BOM, else Windows-1252 or ISO-8859-1.")
    header: bool = Field(True, description="The first line names the columns.")
    mapping: Optional[list[str]] = Field(None, description="Positional mapping: one field or custom field name per column, empty to skip (GreenArrow column_mapping).")
    column_map: dict[str, str] = Field({}, description="Named mapping: CSV column -> field; only these columns are imported (Mailrith mappings).")
    date_format: str = Field("mdy", description="mdy or dmy: how 05/11/2014 reads (GreenArrow).")
    subscriber_limit: Optional[int] = Field(None, description="Add no subscribers beyond this total.")
    max_failed: Optional[str] = Field(None, description="Fail the import before any write when more rows than this fail validation: a number of rows (\"10\") or a percentage of the records read (\"5%\").")
    idempotency_key: Optional[str] = Field(None, description="The same key returns the import it first created (Mailrith).")
    public_urls_only: bool = Field(False, description="Fetch a URL source (and its redirects) only from public addresses; set for imports made over HTTP.")
    begins_at: Optional[str] = Field(None, description="When to start (GreenArrow begins_at); used by the command line, a run starts at once.")
    # Rows per transaction: each batch costs a pass over the store, so batches are large; a
    # crash still loses at most one batch of work (about a second) and progress shows per batch.
    batch_size: Optional[int] = Field(None, description="Rows per transaction of the merge (default: a tenth of the file's rows, at least 500,000 and at most 1,000,000).")

    def batch_rows(self, rows: int) -> int:
        """The rows per batch for a file of `rows` rows: `batch_size`, or by default a tenth of
        the file within [500k, 1M]. Each batch's insert leaves part-filled row groups that the
        store's closing checkpoint rewrites (2.0 s of a 10M import in 500k batches, 0.6 s in 1M
        ones, at the same peak memory); below 5M rows, a batch of a whole 1M file also gathers
        its skipped rows, 0.4 s slower and 180 MB bigger than two batches (bench/analysis.md)."""
        if self.batch_size is not None:
            return self.batch_size
        return min(max(-(-rows // 10), SMALLEST_DEFAULT_BATCH), LARGEST_DEFAULT_BATCH)

    @field_validator("max_failed", mode="before")
    @classmethod
    def _max_failed_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value

    def too_many_failed(self, failed: int, number_of_records: int) -> bool:
        """Whether `failed` rows of `number_of_records` are more than `max_failed` allows."""
        if self.max_failed is None:
            return False
        amount, percent = _max_failed(self.max_failed)
        return failed * 100 > amount * number_of_records if percent else failed > amount

    def effective_subscription_status(self) -> str:
        """listmonk's default: unconfirmed when subscribing, unsubscribed when blocklisting."""
        if self.subscription_status:
            return self.subscription_status
        return "unsubscribed" if self.mode == "blocklist" else "unconfirmed"


def normalize_delimiter(value: Optional[str]) -> Optional[str]:
    """`tab` and a typed backslash-t both mean a tab (None, not given, means detect it)."""
    return "\t" if value in ("tab", "\\t") else value


# Python's names for the two encodings the spec names, spelt as the spec does.
_SPELLINGS = {"iso8859-1": "iso-8859-1", "utf-8-sig": "utf-8"}


def normalize_encoding(name: str) -> str:
    """A codec name Python knows (`latin1`, `windows-1252`, `UTF_16`...) as one spelling of it
    (`iso-8859-1`, `cp1252`, `utf-16`); refused in one sentence when Python knows none."""
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError, TypeError):
        raise MailPipelineError(f"invalid encoding {name!r}: Python knows no codec of that name "
                                "(e.g. utf-8, iso-8859-1, cp1252, utf-16)") from None
    if not getattr(info, "_is_text_encoding", True):  # base64, zlib, rot13...
        raise MailPipelineError(f"invalid encoding {name!r}: not a text encoding")
    return _SPELLINGS.get(info.name, info.name)


def _max_failed(value: str) -> tuple[float, bool]:
    """`max_failed` as (amount, is a percentage): `10` rows or `5%` of the records read."""
    text = value.strip()
    percent = text.endswith("%")
    try:
        amount = float(text[:-1]) if percent else int(text)
    except ValueError:
        amount = -1
    if not 0 <= amount <= (100 if percent else math.inf):
        raise MailPipelineError(f"invalid max_failed {value!r}: give a number of rows (10) or a "
                                "percentage of the records read (5%)")
    return amount, percent


def _one_of(name: str, value: Optional[str], allowed: tuple[str, ...]) -> None:
    if value is not None and value not in allowed:
        raise MailPipelineError(f"invalid {name} {value!r}: must be " + ", ".join(
            repr(a) for a in allowed[:-1]) + f" or {allowed[-1]!r}")


def check(options: ImportOptions) -> ImportOptions:
    """Refuse options that cannot work, with listmonk's wording where it has one."""
    options = options.model_copy(update={
        "delimiter": normalize_delimiter(options.delimiter),
        "encoding": None if options.encoding is None else normalize_encoding(options.encoding),
    })
    if options.delimiter is not None and (len(options.delimiter) != 1
                                          or options.delimiter in "\r\n"):
        raise MailPipelineError("invalid delimiter: must be a single character")
    if options.quote not in ('"', "'"):
        raise MailPipelineError("invalid quote: must be \" or '")
    if options.quote == options.delimiter:
        raise MailPipelineError("invalid delimiter: must differ from the quote character")
    if options.mode not in MODES:
        raise MailPipelineError("invalid mode: must be 'subscribe' or 'blocklist'")
    _one_of("subscription_status", options.subscription_status, SUBSCRIPTION_STATUSES)
    _one_of("email_format", options.email_format, EMAIL_FORMATS)
    _one_of("date_format", options.date_format, DATE_FORMATS)
    if not options.header and not options.mapping:
        raise MailPipelineError("a file without a header needs a positional mapping (--mapping)")
    if options.mapping and options.column_map:
        raise MailPipelineError("give either a positional mapping or a named one, not both")
    if options.batch_size is not None and options.batch_size < 1:
        raise MailPipelineError("invalid batch_size: must be at least 1")
    if options.max_failed is not None:
        _max_failed(options.max_failed)
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
