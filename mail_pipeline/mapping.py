"""Mapping (spec §3 "Mapping"): which column of the file feeds which subscriber field."""
from dataclasses import dataclass, field

from mail_pipeline.errors import MailPipelineError
from mail_pipeline.options import ImportOptions

# Fields the store keeps as columns; any other mapped name is a custom field, kept in attributes.
FIELDS = ("email", "name", "status", "attributes")


@dataclass(frozen=True)
class Mapping:
    """Column index of each field, and of each custom field by name, in file order."""

    fields: dict[str, int]
    custom: dict[str, int] = field(default_factory=dict)

    def describe(self, columns: list[str]) -> list[str]:
        """One line per mapped column, for the import log ("column 'E-mail' → email")."""
        named = [(i, f) for f, i in self.fields.items()] + [
            (i, f"custom field {name!r}") for name, i in self.custom.items()]
        return [f"column {columns[i]!r} → {target}" for i, target in sorted(named)]


def resolve(columns: list[str], options: ImportOptions) -> Mapping:
    """Map the file's columns (its header, or positions when it has none) to fields."""
    names = options.mapping if options.mapping else columns
    if options.mapping and len(options.mapping) > len(columns):
        raise MailPipelineError(
            f"the mapping names {len(options.mapping)} columns but the file has {len(columns)}: "
            + ", ".join(columns))
    fields: dict[str, int] = {}
    custom: dict[str, int] = {}
    for index, raw in enumerate(names):
        name = (raw or "").strip()
        if not name:
            continue  # an empty mapping slot skips that column
        key = name.lower()
        if key in FIELDS:
            fields.setdefault(key, index)  # a repeated header name: the first column wins
        else:
            custom.setdefault(name, index)
    if "email" not in fields:
        if options.mapping:
            raise MailPipelineError("the mapping has no email column")
        raise MailPipelineError("the file has no email column; its columns are: " + ", ".join(columns))
    return Mapping(fields, custom)
