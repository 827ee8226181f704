"""`--params FILE`: the request body of any of the four seed systems, unchanged, or the canonical
options (spec §2). The shape is recognised by its keys; each shape is a strict Pydantic model, so an
unknown key or a wrong type is refused before anything runs, naming the key."""
import json
from pathlib import Path
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mail_pipeline import catalog, home
from mail_pipeline.errors import MailPipelineError
from mail_pipeline.mapping import CUSTOM_PREFIX
from mail_pipeline.options import ImportOptions, OverwriteWhat, OverwriteWhenStatus, describe_error

# An idempotency key may come with any shape (Mailrith sends it as a header of the same name).
IDEMPOTENCY_KEYS = ("Idempotency-Key", "idempotency_key")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


# --- listmonk: POST /api/import/subscribers, the `params` object ---------------------------------

class ListmonkParams(_Body):
    mode: str = "subscribe"
    subscription_status: Optional[str] = None
    delim: Optional[str] = None  # left out: detected
    lists: list[Union[int, str]] = []
    overwrite: bool = False

    def canonical(self) -> dict[str, Any]:
        # listmonk's overwrite "updates status if provided", so it also turns on overwrite_what.status.
        return {"mode": self.mode, "subscription_status": self.subscription_status or None,
                "delimiter": self.delim, "lists": self.list_names(),
                "overwrite": self.overwrite,
                "overwrite_what": {"custom_fields": True, "status": True} if self.overwrite else {}}

    def list_names(self) -> list[str]:
        """listmonk names lists by id: a number is a list's id in the catalog (an unknown one is
        refused); a string stays a list name."""
        ids = [x for x in self.lists if isinstance(x, int)]
        names = iter(catalog.names_for_ids(ids))
        return [next(names) if isinstance(x, int) else x for x in self.lists]


# --- GreenArrow: POST /ga/api/v2/mailing_lists/:id/subscriber_imports -----------------------------

class GreenArrowFileSource(_Body):
    type: Literal["json", "upload_directory", "url"]
    content: Optional[str] = None
    filename: Optional[str] = None
    url: Optional[str] = None


class GreenArrowFileFormat(_Body):
    csv_has_headers: bool = True
    character_set: Optional[str] = None  # these two left out: detected
    csv_field_separator: Optional[str] = None
    csv_field_enclosure: str = '"'
    date_format: str = "mdy"


class GreenArrowDefaults(_Body):
    status: Optional[str] = None      # active, unsubscribed, bounced, deactivated, scomp
    confirmed: Optional[bool] = None
    format: Optional[str] = None      # html, text, both


# GreenArrow's status words → our subscription statuses (`active` is confirmed unless
# `confirmed: false` says otherwise).
_GREENARROW_STATUS = {"active": "confirmed", "unsubscribed": "unsubscribed", "bounced": "bounced",
                      "deactivated": "deactivated", "scomp": "complained"}


class GreenArrowImport(_Body):
    begins_at: Optional[str] = None
    overwrite: bool = False
    overwrite_what: OverwriteWhat = OverwriteWhat()
    overwrite_when_status: OverwriteWhenStatus = OverwriteWhenStatus()
    column_mapping: list[str]
    default_custom_fields: dict[str, Any] = {}
    file_source: GreenArrowFileSource
    file_format: GreenArrowFileFormat = GreenArrowFileFormat()
    subscriber_defaults: GreenArrowDefaults = GreenArrowDefaults()

    def canonical(self) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "overwrite": self.overwrite, "overwrite_what": self.overwrite_what.model_dump(),
            "overwrite_when_status": self.overwrite_when_status.model_dump(),
            "mapping": self.column_mapping, "default_custom_fields": self.default_custom_fields,
            "header": self.file_format.csv_has_headers,
            "encoding": self.file_format.character_set and self.file_format.character_set.lower(),
            "delimiter": self.file_format.csv_field_separator,
            "quote": self.file_format.csv_field_enclosure,
            "date_format": self.file_format.date_format.lower(),
            "email_format": self.subscriber_defaults.format,
        }
        if self.begins_at not in (None, "now"):
            fields["begins_at"] = self.begins_at
        status = self.subscriber_defaults.status
        if status is not None:
            if status.lower() not in _GREENARROW_STATUS:
                raise MailPipelineError(
                    f"invalid 'subscriber_import.subscriber_defaults.status' {status!r}: must be "
                    + ", ".join(_GREENARROW_STATUS))
            status = _GREENARROW_STATUS[status.lower()]
            if status == "confirmed" and self.subscriber_defaults.confirmed is False:
                status = "unconfirmed"
            fields["subscription_status"] = status
        source = self.file_source
        needed = {"json": "content", "upload_directory": "filename", "url": "url"}[source.type]
        if getattr(source, needed) is None:
            raise MailPipelineError(
                f"missing key 'subscriber_import.file_source.{needed}' for a {source.type} source")
        if source.type == "json":
            fields["content"] = source.content
        elif source.type == "upload_directory":
            fields["source"] = str(home.upload_path(source.filename))
        else:
            fields["source"] = source.url
        return fields


class GreenArrowBody(_Body):
    subscriber_import: GreenArrowImport

    def canonical(self) -> dict[str, Any]:
        return self.subscriber_import.canonical()


# --- Mailcoach: POST /api/subscriber-imports ---------------------------------------------------------

class MailcoachBody(_Body):
    subscribers_csv: str
    email_list_uuid: str
    subscribe_unsubscribed: bool = False
    unsubscribe_others: bool = False
    replace_tags: bool = False

    def canonical(self) -> dict[str, Any]:
        # Mailcoach updates the subscribers it finds (there is no overwrite switch to turn off).
        return {"content": self.subscribers_csv, "lists": [self.list_name()], "overwrite": True,
                "subscribe_unsubscribed": self.subscribe_unsubscribed,
                "unsubscribe_others": self.unsubscribe_others, "replace_tags": self.replace_tags}

    def list_name(self) -> str:
        """The list whose uuid `email_list_uuid` is; a value that is no known list's uuid is
        taken as the list's name."""
        known = catalog.list_by_uuid(self.email_list_uuid)
        return known.name if known else self.email_list_uuid


# --- Mailrith: POST /v1/jobs/subscriber-imports ------------------------------------------------------

MAILRITH_FIELD_TYPES = ("email", "name", "tags", "status", "email_format", "subscribe_time",
                        "subscribe_ip", "confirm_time", "remove_time", "remove_ip", "attributes",
                        "custom_field")


class MailrithField(_Body):
    type: str
    key: Optional[str] = Field(default=None, description="the custom field's name")
    name: Optional[str] = None  # accepted as a synonym of `key`


class MailrithMapping(_Body):
    csv_column: str
    field: MailrithField


class MailrithBody(_Body):
    csv_text: str
    mappings: list[MailrithMapping]
    new_tag_name: Optional[str] = None

    def canonical(self) -> dict[str, Any]:
        column_map: dict[str, str] = {}
        for i, mapping in enumerate(self.mappings):
            kind = mapping.field.type.lower().replace("-", "_")
            if kind in ("tag",):
                kind = "tags"
            if kind not in MAILRITH_FIELD_TYPES:
                raise MailPipelineError(f"invalid 'mappings.{i}.field.type' {mapping.field.type!r}: "
                                        "must be " + ", ".join(MAILRITH_FIELD_TYPES))
            if kind == "custom_field":  # `custom:` keeps a name like "Status" a custom field
                kind = CUSTOM_PREFIX + (mapping.field.key or mapping.field.name or mapping.csv_column)
            column_map[mapping.csv_column] = kind
        # Mailrith's import is an upsert: subscribers it finds are updated.
        return {"content": self.csv_text, "column_map": column_map, "overwrite": True,
                "tags": [self.new_tag_name] if self.new_tag_name else []}


# --- recognising the shape ------------------------------------------------------------------------

def _shape(body: dict[str, Any]) -> tuple[str, Optional[type[_Body]]]:
    if "subscriber_import" in body:
        return "GreenArrow", GreenArrowBody
    if "subscribers_csv" in body or "email_list_uuid" in body:
        return "Mailcoach", MailcoachBody
    if {"csv_text", "mappings", "new_tag_name"} & set(body):
        return "Mailrith", MailrithBody
    # listmonk's and the canonical keys overlap (mode, lists, overwrite); listmonk's `delim` or
    # its numeric list ids tell them apart.
    lists = body.get("lists")
    if set(body) <= set(ListmonkParams.model_fields) and (
            "delim" in body or (isinstance(lists, list) and any(not isinstance(x, str) for x in lists))):
        return "listmonk", ListmonkParams
    return "canonical", None


_SYSTEMS: dict[str, type[_Body]] = {"listmonk": ListmonkParams, "GreenArrow": GreenArrowBody,
                                     "Mailcoach": MailcoachBody, "Mailrith": MailrithBody}


def from_body(body: Any, system: Optional[str] = None) -> tuple[str, dict[str, Any]]:
    """A parsed `--params` body → (the system it was recognised as, canonical fields). A route of
    one system's API names it (`system`), so its body is read as that system's only."""
    if not isinstance(body, dict):
        raise MailPipelineError("invalid params: the file must hold a JSON object")
    # The canonical form may come as the launchpad's whole run config.
    ops = body.get("ops")
    if isinstance(ops, dict) and isinstance(ops.get("raw_file"), dict):
        body = ops["raw_file"].get("config") or {}
        if not isinstance(body, dict):
            raise MailPipelineError("invalid params: ops.raw_file.config must be a JSON object")
    body = dict(body)
    key = next((body.pop(k) for k in IDEMPOTENCY_KEYS if k in body), None)
    system, model = (system, _SYSTEMS[system]) if system else _shape(body)
    if model is None:
        fields = body
        try:  # validated here too, so the message says it came from the params file
            ImportOptions.model_validate(fields, strict=True)
        except ValidationError as exc:
            raise MailPipelineError(f"invalid params: {describe_error(exc, 'key')}") from None
    else:
        try:
            parsed = model.model_validate(body, strict=True)  # nested models too
        except ValidationError as exc:
            raise MailPipelineError(f"invalid {system} params: {describe_error(exc, 'key')}") from None
        try:
            fields = parsed.canonical()
        except MailPipelineError as exc:
            raise MailPipelineError(f"invalid {system} params: {str(exc).removeprefix('invalid ')}") from None
    if key is not None:
        if not isinstance(key, str) or not key.strip():
            raise MailPipelineError("invalid params: 'Idempotency-Key' must be a non-empty string")
        fields = {**fields, "idempotency_key": key}
    return system, fields


def read_params(path: str) -> dict[str, Any]:
    """Read a `--params` file and return canonical fields."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MailPipelineError(f"params file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MailPipelineError(f"params file cannot be read: {path} ({exc})") from None
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        near = exc.doc[max(0, exc.pos - 20):exc.pos + 20].replace("\n", "\\n")
        raise MailPipelineError(f"params file is not valid JSON: {path}: {exc.msg} at line "
                                f"{exc.lineno}, column {exc.colno}, near {near!r}") from None
    except RecursionError:
        raise MailPipelineError(f"params file nests too deep to be a request body: {path}") from None
    return from_body(body)[1]
