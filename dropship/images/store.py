"""Content-addressed storage for processed images: a key is the SHA-256 of the bytes plus the
extension (``ab/cd/abcd....jpg``), so the same image is stored once however many products or
accounts use it, and a put of a key that exists does nothing.

Backends (``DROPSHIP_IMAGES__STORE``): :class:`LocalStore`, a folder that the stack serves over
HTTP (``dropship.images.server``); :class:`S3Store`, any S3-compatible bucket through boto3
(MinIO in docker-compose.yml)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, Protocol

from dropship.errors import PermanentError
from dropship.images.config import ImageSettings

CONTENT_TYPES = {"jpg": "image/jpeg", "webp": "image/webp"}


def content_key(data: bytes, ext: str) -> str:
    digest = hashlib.sha256(data).hexdigest()
    return f"{digest[:2]}/{digest[2:4]}/{digest}.{ext}"


class ImageStore(Protocol):
    def exists(self, key: str) -> bool: ...
    def put(self, key: str, data: bytes) -> bool: ...  # True when written now
    def get(self, key: str) -> bytes: ...
    def url(self, key: str) -> str: ...


class LocalStore:
    def __init__(self, root: Path, public_base_url: str) -> None:
        self.root = Path(root)
        self.public_base_url = public_base_url.rstrip("/")

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise ValueError(f"key outside the store: {key!r}")
        return path

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def put(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        if path.is_file():
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename: a reader (the image server, a market) never sees half a file, and
        # two workers storing the same key both end with the same complete file.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return True

    def get(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def url(self, key: str) -> str:
        return f"{self.public_base_url}/{key}"


class S3Store:
    def __init__(self, settings: ImageSettings, client: Any = None) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = settings.s3_bucket
        self.extra: dict[str, str] = {"ACL": "public-read"} if settings.s3_public_read_acl else {}
        self.client = client or boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint_url,
            region_name=settings.s3_region,
            aws_access_key_id=(
                settings.s3_access_key.get_secret_value() if settings.s3_access_key else None
            ),
            aws_secret_access_key=(
                settings.s3_secret_key.get_secret_value() if settings.s3_secret_key else None
            ),
            config=Config(
                connect_timeout=settings.connect_timeout_s,
                read_timeout=settings.read_timeout_s,
                retries={"max_attempts": 3, "mode": "standard"},
                s3={"addressing_style": "path"},
            ),
        )
        base = settings.public_base_url or (
            f"{(settings.s3_endpoint_url or 'https://s3.amazonaws.com').rstrip('/')}/{self.bucket}"
        )
        self.public_base_url = base.rstrip("/")

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def put(self, key: str, data: bytes) -> bool:
        if self.exists(key):
            return False
        self.client.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=data,
            ContentType=CONTENT_TYPES.get(key.rsplit(".", 1)[-1], "application/octet-stream"),
            CacheControl="public, max-age=31536000, immutable",
            **self.extra,
        )
        return True

    def get(self, key: str) -> bytes:
        body: bytes = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return body

    def url(self, key: str) -> str:
        return f"{self.public_base_url}/{key}"


def local_dir(settings: ImageSettings, data_dir: Path) -> Path:
    return settings.local_dir or (Path(data_dir) / "images")


def open_store(settings: ImageSettings | None = None) -> ImageStore:
    """The store the settings choose."""
    from dropship.settings import get_settings

    root = get_settings()
    settings = settings or root.images
    if settings.store == "s3":
        return S3Store(settings)
    if not settings.public_base_url:
        # `dropship up` sets it to its image server; without it markets could fetch nothing.
        raise PermanentError(
            "images: DROPSHIP_IMAGES__PUBLIC_BASE_URL is not set (start the stack with "
            "`dropship up`, or point it at the server that serves DROPSHIP_IMAGES__LOCAL_DIR)"
        )
    return LocalStore(local_dir(settings, root.data_dir), settings.public_base_url)
