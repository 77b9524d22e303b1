"""Request and response bodies of the catalog."""

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel
from pydantic import BeforeValidator
from pydantic import ConfigDict
from pydantic import Field
from pydantic import field_validator
from pydantic.json_schema import SkipJsonSchema


def _json_number(value: object) -> object:
    # Python would read true as 1 and "5" as 5; JSON Schema's integer is neither, but it is 5.0.
    if isinstance(value, bool | str):
        raise ValueError("must be a JSON number")
    return value


# The bounds of the database are the bounds of the API, so that no input reaches a column that
# cannot hold it: ids are the tables' 32-bit integer keys, text has no NUL (a database may refuse
# it) and at least one visible character, numbers are finite and whole.
MAX_ID = 2_147_483_647
VISIBLE_TEXT = r"^[^\x00]*[^\s\x00][^\x00]*$"
# The validator after the bounds, or the bounds would be missing from the JSON Schema.
EntityId = Annotated[int, Field(gt=0, le=MAX_ID), BeforeValidator(_json_number)]
CategoryName = Annotated[str, Field(min_length=1, max_length=100, pattern=VISIBLE_TEXT)]
ProductName = Annotated[str, Field(min_length=1, max_length=200, pattern=VISIBLE_TEXT)]
PriceCents = Annotated[int, Field(ge=0, le=100_000_000), BeforeValidator(_json_number)]


class CategoryCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: CategoryName


class CategoryRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str


class CategorySummary(CategoryRead):
    product_count: int


class CategoryStatsRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    category_id: int
    product_count: int
    min_price_cents: int | None
    max_price_cents: int | None
    refreshed_at: datetime


class ProductCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    category_id: EntityId
    name: ProductName
    price_cents: PriceCents


class ProductUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Leaving a field out keeps it; null would erase a required column, so the schema offers no
    # null and the validator refuses it.
    name: ProductName | SkipJsonSchema[None] = None
    price_cents: PriceCents | SkipJsonSchema[None] = None

    @field_validator("name", "price_cents")
    @classmethod
    def _not_null(cls, value: object) -> object:
        if value is None:
            raise ValueError("may be left out, but not null")
        return value


class ProductRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    price_cents: int
    created_at: datetime
    category: CategoryRead


class ProductPage(BaseModel):
    """Offset pagination: simple, and `total` lets a UI show page numbers."""

    items: list[ProductRead]
    total: int
    limit: int
    offset: int


class ProductFeed(BaseModel):
    """Keyset pagination: constant cost per page however deep, stable under inserts."""

    items: list[ProductRead]
    next_after_id: int | None
