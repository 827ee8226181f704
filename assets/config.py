"""The import job's `Config`, generated from the core's `ImportOptions` so the launchpad shows and
validates exactly the canonical options, with one definition of them."""
import dagster as dg
from pydantic import BaseModel, Field, create_model

from mail_pipeline.options import ImportOptions


def config_class(model: type[BaseModel], name: str, required: tuple[str, ...] = ()) -> type[dg.Config]:
    """A dg.Config twin of a Pydantic model (Dagster wants nested models to be Config too), every
    field with its description; `required` fields lose their default, so the launchpad flags a
    config without them before launch."""
    fields = {}
    for key, info in model.model_fields.items():
        annotation, default = info.annotation, info.default
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            annotation = config_class(annotation, annotation.__name__ + "Config")
            default = annotation(**default.model_dump())
        if key in required:
            default = ...
        fields[key] = (annotation, Field(default, description=info.description))
    return create_model(name, __base__=dg.Config, __doc__=model.__doc__, **fields)


# `source` is required in the launchpad (give "" with `content`): a config with neither is
# flagged there, before it can launch. The command line and the sensors always fill it in.
ImportConfig = config_class(ImportOptions, "ImportConfig", required=("source",))
