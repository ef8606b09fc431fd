"""Base of the documents that pass between the stages and the operator.

camelCase on the wire (as the status and the manifests have always been written),
snake_case in Python. Readers ignore fields they do not know, so an older operator
reads a newer trainer's result.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class Document(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True,
                              validate_by_alias=True, extra="ignore")

    def to_json(self, indent: int | None = None) -> str:
        return self.model_dump_json(by_alias=True, indent=indent)

    def to_dict(self) -> dict:
        return self.model_dump(by_alias=True, mode="json")
