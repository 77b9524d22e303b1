"""Request and response bodies of the catalog."""

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel
from pydantic import ConfigDict
from pydantic import Field
from pydantic import field_validator

CategoryName = Annotated[str, Field(min_length=1, max_length=100, pattern=r"\S")]
ProductName = Annotated[str, Field(min_length=1, max_length=200, pattern=r"\S")]
PriceCents = Annotated[int, Field(ge=0, le=100_000_000)]


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

    category_id: int = Field(gt=0)
    name: ProductName
    price_cents: PriceCents


class ProductUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: ProductName | None = None
    price_cents: PriceCents | None = None

    @field_validator("name", "price_cents")
    @classmethod
    def _not_null(cls, value: object) -> object:
        # Leaving a field out keeps it; sending null would try to erase a required column.
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
