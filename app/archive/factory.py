"""The archive ARCHIVE_URL names: a folder (`file://`) or a bucket (`s3://`)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from app.archive.backend import Archive
from app.archive.files import FileArchive
from app.errors import ConfigError
from app.settings import Settings


def open_archive(settings: Settings) -> Archive:
    """The backend ARCHIVE_URL names: file:///path or s3://bucket[/prefix]."""
    parts = urlsplit(settings.archive_url)
    if parts.scheme == "file":
        return FileArchive(Path(parts.path))
    if parts.scheme == "s3":
        from app.archive.s3 import S3Archive  # boto3 is imported only for an S3 archive

        if not parts.netloc:
            raise ConfigError(
                f"ARCHIVE_URL must name a bucket, as in s3://bucket/prefix, got {settings.archive_url!r}."
            )
        return S3Archive(settings, parts.netloc, parts.path.strip("/"))
    raise ConfigError(f"ARCHIVE_URL must start with file:// or s3://, got {settings.archive_url!r}.")
