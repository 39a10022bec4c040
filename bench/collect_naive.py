"""The design a user would write first, for ``bench/collect.py`` to compare against: one Celery
task per product, the product's fields in the message, an ORM select-then-insert-or-update and a
commit per product. Loaded into a worker with ``celery ... worker -I bench.collect_naive``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from dropship.catalog.models import Product
from dropship.celery_app import DropshipTask, app


@app.task(bind=True, name="bench.naive.upsert_product")
def upsert_product(self: DropshipTask, data: dict[str, Any]) -> bool:
    session = self.session
    product = session.execute(
        select(Product).where(
            Product.supplier == data["supplier"], Product.supplier_sku == data["supplier_sku"]
        )
    ).scalar_one_or_none()
    if product is None:
        session.add(Product(**data))
        return True
    for key, value in data.items():
        setattr(product, key, value)
    return False
