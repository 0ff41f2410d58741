"""The building blocks of the site file schema: the strict base model and shared field types."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
Ratio = Annotated[float, Field(ge=0.0, le=1.0)]
# The largest power rating (kW) a site file may give a device: 100 MW, far beyond any one
# device behind a site gateway, and within what the bundled maps' registers hold.
MAX_RATING_KW = 100_000.0


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
