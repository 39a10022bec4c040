"""Image settings (``DROPSHIP_IMAGES__*``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr


class ImageSettings(BaseModel):
    # Where processed images live. "local": a folder the stack serves over HTTP (the embedded
    # default); "s3": an S3-compatible bucket (MinIO in docker-compose.yml).
    store: Literal["local", "s3"] = "local"
    local_dir: Path | None = Field(None, description="default: <data_dir>/images")
    public_base_url: str | None = Field(
        None,
        description="URL the stored images are served under (markets download from it); "
        "default: the stack's image server, or the bucket's endpoint URL",
    )
    server_host: str = "127.0.0.1"
    server_port: int = Field(
        0, ge=0, le=65535, description="the stack's image server; 0 picks a free port"
    )
    s3_bucket: str = "dropship-images"
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key: SecretStr | None = None
    s3_secret_key: SecretStr | None = None
    # Markets download our URLs anonymously: the bucket needs a public-read policy (compose sets
    # one on MinIO), or, where object ACLs are enabled, each object the "public-read" ACL.
    s3_public_read_acl: bool = False

    # Download limits: every fetch is bounded in time and size.
    max_bytes: int = Field(15 * 1024 * 1024, ge=1024, description="largest source accepted")
    connect_timeout_s: float = Field(3.0, gt=0)
    read_timeout_s: float = Field(10.0, gt=0)
    total_timeout_s: float = Field(30.0, gt=0, description="one download, start to end")
    download_concurrency: int = Field(6, ge=1, le=64, description="parallel downloads per task")

    # Decoding limits.
    max_pixels: int = Field(
        40_000_000, ge=1_000_000, description="more pixels than this is a decompression bomb"
    )
    min_source_px: int = Field(300, ge=1, description="a longest side under this is too small")
    market_px: int = Field(1000, ge=600, le=5000, description="side of the square market JPEG")
    web_px: int = Field(860, ge=100, le=4000, description="longest side of the detail-page WebP")
    jpeg_quality: int = Field(88, ge=50, le=95)
    webp_quality: int = Field(80, ge=30, le=95)

    # Work and caching.
    batch_products: int = Field(50, ge=1, le=1000, description="product ids per image task")
    retry_failed_after_s: int = Field(
        86_400, ge=0, description="a refused image is looked at again after this long"
    )
    stale_claim_s: int = Field(600, ge=10, description="a claim untouched this long is retaken")
