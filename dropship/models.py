"""Declarative base shared by every business area, and the full metadata for Alembic."""

from __future__ import annotations

from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def load_all_models() -> MetaData:
    """Import every models module so ``Base.metadata`` knows all tables."""
    from dropship.accounts import models as _accounts  # noqa: F401
    from dropship.catalog import models as _catalog  # noqa: F401
    from dropship.images import models as _images  # noqa: F401
    from dropship.listings import models as _listings  # noqa: F401
    from dropship.orders import models as _orders  # noqa: F401

    return Base.metadata
