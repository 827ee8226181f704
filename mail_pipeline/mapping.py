"""Mapping (spec §3 "Mapping"): which column of the file feeds which subscriber field.

Without a mapping, columns are recognised by name: a field's own name first, then the header
names other tools export (Mailchimp's `Email Address`, `OPTIN_TIME`, …); any other column is a
custom field. A positional mapping (GreenArrow) or a named one (Mailrith, `--map`) replaces that.
"""
import re
from dataclasses import dataclass, field

from mail_pipeline.errors import MailPipelineError
from mail_pipeline.options import ImportOptions

# Fields the store keeps as columns; any other mapped name is a custom field, kept in attributes.
FIELDS = ("email", "name", "status", "attributes", "tags", "email_format", "subscribe_time",
          "subscribe_ip", "confirm_time", "remove_time", "remove_ip", "created_at", "updated_at",
          "lists")  # an export's own list → subscription status object
TIME_FIELDS = ("subscribe_time", "confirm_time", "remove_time", "created_at", "updated_at")
IP_FIELDS = ("subscribe_ip", "remove_ip")

# Header names other tools write, compared without case, spaces, '_' or '-'.
ALIASES = {
    "email": ("emailaddress", "mail", "mailaddress", "subscriberemail"),
    "name": ("fullname", "subscribername", "displayname"),
    "tags": ("tag",),
    "email_format": ("emailtype", "preferredformat"),
    "subscribe_time": ("optintime", "subscribedat", "subscribedate", "signuptime", "signupdate"),
    "subscribe_ip": ("optinip", "signupip"),
    "confirm_time": ("confirmedat", "confirmationtime", "confirmdate"),
    "remove_time": ("unsubtime", "unsubscribetime", "unsubscribedat", "removedat"),
    "remove_ip": ("unsubip", "unsubscribeip"),
}
# Without a name column, a first and a last name column make the name (they stay custom fields).
FIRST_NAMES = ("firstname", "fname", "givenname")
LAST_NAMES = ("lastname", "lname", "surname", "familyname")


# A mapping target written `custom:Status` is the custom field "Status", not the field `status`.
CUSTOM_PREFIX = "custom:"


def squash(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", name.strip().lower())


# alias → (field, rank): a field's own name ranks first, then its aliases in the order above,
# so `Mail, Email Address` takes `Email Address` as the email column.
_BY_ALIAS = {squash(f): (f, 0) for f in FIELDS} | {
    a: (f, rank) for f, names in ALIASES.items() for rank, a in enumerate(names, start=1)}


@dataclass(frozen=True)
class Mapping:
    """Column index of each field, and of each custom field by name, in file order."""

    fields: dict[str, int]
    custom: dict[str, int] = field(default_factory=dict)
    name_parts: tuple[int, ...] = ()  # first and last name columns joined into `name`
    ignored: tuple[int, ...] = ()     # columns a named mapping leaves out

    def describe(self, columns: list[str]) -> list[str]:
        """One line per column, for the import log ("column 'Email Address' → email")."""
        named = [(i, f) for f, i in self.fields.items()] + [
            (i, f"custom field {name!r}") for name, i in self.custom.items()] + [
            (i, "not imported") for i in self.ignored]
        lines = [f"column {columns[i]!r} → {target}" for i, target in sorted(named)]
        if self.name_parts:
            parts = " + ".join(repr(columns[i]) for i in self.name_parts)
            lines.append(f"columns {parts} → name")
        return lines


def listed(columns: list[str], limit: int = 20) -> str:
    """The file's columns for an error message; a very wide header is cut short."""
    shown = ", ".join(columns[:limit])
    return shown if len(columns) <= limit else f"{shown}, … ({len(columns)} columns in all)"


def _field_of(name: str) -> str:
    """A mapping entry: a field by its own name (any case), else a custom field of that name."""
    name = name.strip()
    if name.lower().startswith(CUSTOM_PREFIX):
        return name[len(CUSTOM_PREFIX):].strip()
    return name.lower() if name.lower() in FIELDS else name


def _assign(fields: dict[str, int], custom: dict[str, int], entry: str, index: int,
            columns: list[str]) -> None:
    """Map column `index` to the field or custom field `entry` names; a target named twice is
    refused, naming both columns (one of them would be lost without a word)."""
    target = _field_of(entry)
    if not target:
        raise MailPipelineError(f"the mapping gives column {columns[index]!r} an empty field name")
    forced_custom = entry.strip().lower().startswith(CUSTOM_PREFIX)
    into = fields if target in FIELDS and not forced_custom else custom
    if target in into:
        first, second = into[target], index
        raise MailPipelineError(f"the mapping sends both column {first + 1} ({columns[first]!r}) and "
                                f"column {second + 1} ({columns[second]!r}) to {target!r}")
    into[target] = index


def resolve(columns: list[str], options: ImportOptions) -> Mapping:
    """Map the file's columns (its header, or positions when it has none) to fields."""
    if options.column_map:
        return _named(columns, options)
    if options.mapping:
        return _positional(columns, options)
    return _recognised(columns)


def _positional(columns: list[str], options: ImportOptions) -> Mapping:
    if len(options.mapping) > len(columns):
        raise MailPipelineError(
            f"the mapping names {len(options.mapping)} columns but the file has {len(columns)}: "
            + listed(columns))
    fields: dict[str, int] = {}
    custom: dict[str, int] = {}
    for index, raw in enumerate(options.mapping):
        if (raw or "").strip():  # an empty mapping slot skips that column
            _assign(fields, custom, raw, index, columns)
    return _checked(Mapping(fields, custom), columns, "the mapping has no email column")


def _named(columns: list[str], options: ImportOptions) -> Mapping:
    if not options.header:
        raise MailPipelineError("a named mapping (--map) needs a header row; use a positional mapping")
    by_name: dict[str, int] = {}
    for index, column in enumerate(columns):
        by_name.setdefault(column.strip().lower(), index)
    fields: dict[str, int] = {}
    custom: dict[str, int] = {}
    mapped: set[int] = set()
    for column, target in options.column_map.items():
        index = by_name.get(column.strip().lower())
        if index is None:
            raise MailPipelineError(f"the mapping names column {column!r}, which the file lacks; "
                                    "its columns are: " + listed(columns))
        if index in mapped:
            raise MailPipelineError(f"the mapping names column {columns[index]!r} twice")
        mapped.add(index)
        _assign(fields, custom, target, index, columns)
    used = set(fields.values()) | set(custom.values())
    ignored = tuple(i for i in range(len(columns)) if i not in used)
    return _checked(Mapping(fields, custom, ignored=ignored), columns, "the mapping has no email column")


def _recognised(columns: list[str]) -> Mapping:
    _refuse_repeated(columns)
    fields: dict[str, int] = {}
    # A field's exact name wins over an alias of it.
    for index, column in enumerate(columns):
        key = column.strip().lower()
        if key in FIELDS:
            fields.setdefault(key, index)
    candidates = []
    for index, column in enumerate(columns):
        target, rank = _BY_ALIAS.get(squash(column), (None, 0))
        if target and index not in fields.values():
            candidates.append((rank, index, target))
    for _rank, index, target in sorted(candidates):
        fields.setdefault(target, index)
    taken = set(fields.values())
    custom: dict[str, int] = {}
    for index, column in enumerate(columns):
        if index not in taken and column.strip():
            custom.setdefault(column.strip(), index)
    name_parts: tuple[int, ...] = ()
    if "name" not in fields:
        first = next((i for i in custom.values() if squash(columns[i]) in FIRST_NAMES), None)
        last = next((i for i in custom.values() if squash(columns[i]) in LAST_NAMES), None)
        name_parts = tuple(i for i in (first, last) if i is not None)
    return _checked(Mapping(fields, custom, name_parts), columns,
                    "the file has no email column; its columns are: " + listed(columns))


def _refuse_repeated(columns: list[str]) -> None:
    """A header naming one column twice: one of the two would be lost without a word."""
    seen: dict[str, int] = {}
    for index, column in enumerate(columns):
        key = column.strip().lower()
        if key and key in seen:
            raise MailPipelineError(
                f"the header names column {column!r} twice (columns {seen[key] + 1} and "
                f"{index + 1}): rename one, or choose the columns to import with --map")
        seen[key] = index


def _checked(mapping: Mapping, columns: list[str], missing_email: str) -> Mapping:
    if "email" not in mapping.fields:
        raise MailPipelineError(missing_email)
    return mapping
