"""Image tasks (queue ``low``): thin wrappers over :mod:`dropship.images.services`.

From a shell: ``from tasks.images import process_sweep; process_sweep.delay()``. The sweep finds
active products with images not yet settled and publishes ``process_batch`` tasks of at most
``images.batch_products`` product ids; a batch claims its URLs before fetching them (two batches
sharing an image fetch it once), so a re-delivered batch redoes nothing that is settled.
Registration only lists products whose images are processed, so this runs ahead of it.
"""

from __future__ import annotations

from typing import Any

from dropship.celery_app import DropshipTask, app
from dropship.images import services
from dropship.settings import get_settings


def publish_batches(product_ids: list[int], batch_size: int | None = None) -> int:
    size = batch_size or get_settings().images.batch_products
    for start in range(0, len(product_ids), size):
        process_batch.delay(product_ids[start : start + size])
    return (len(product_ids) + size - 1) // size


@app.task(bind=True, name="tasks.images.process_sweep")
def process_sweep(self: DropshipTask, limit: int = 100_000) -> dict[str, int]:
    """Publish image batches for products with unsettled images; returns products, batches."""
    ids = services.pending_product_ids(limit)
    return {"products": len(ids), "batches": publish_batches(ids)}


@app.task(bind=True, name="tasks.images.process_batch")
def process_batch(self: DropshipTask, product_ids: list[int]) -> dict[str, Any]:
    """Fetch, check, normalise and store the unsettled images of these products."""
    return services.process_products(product_ids)
