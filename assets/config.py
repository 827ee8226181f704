"""The import job's `Config`, generated from the core's `ImportOptions` so the launchpad shows and
validates exactly the canonical options, with one definition of them."""
import dagster as dg
from pydantic import BaseModel, Field, create_model

from mail_pipeline.options import ImportOptions


def config_class(model: type[BaseModel], name: str) -> type[dg.Config]:
    """A dg.Config twin of a Pydantic model (Dagster wants nested models to be Config too)."""
    fields = {}
    for key, info in model.model_fields.items():
        annotation, default = info.annotation, info.default
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            annotation = config_class(annotation, annotation.__name__ + "Config")
            default = annotation(**default.model_dump())
        fields[key] = (annotation, Field(default, description=info.description))
    return create_model(name, __base__=dg.Config, __doc__=model.__doc__, **fields)


ImportConfig = config_class(ImportOptions, "ImportConfig")
