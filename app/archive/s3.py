"""`s3://bucket/prefix` archive with boto3 (S3, MinIO, or a test server via S3_ENDPOINT_URL).

- Small objects go up in one PutObject with Content-MD5 and x-amz-checksum-sha256, both of
  which S3 verifies before it stores anything, and `If-None-Match: *`, so an existing key is
  never replaced (412 instead).
- Objects over MULTIPART_THRESHOLD go through s3transfer's multipart upload with per-part
  SHA-256 checksums. S3 has no conditional multipart write through s3transfer, so the key is
  checked first; rotate runs one pass at a time per host, which keeps that window closed.
- S3 answers a PutObject with the ETag (the MD5 of what it stored) and the SHA-256 checksum it
  verified; rotate takes that reply as its confirmation, or reads the object back (HEAD) when
  the reply proves nothing (multipart, SSE-KMS) or ROTATE_READBACK is on.
- Every object carries our own digests in its metadata (`sha256`, `source-sha256`), which is
  how `stat` confirms an upload and how a later pass recognises content it already shipped.
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import hashlib
import io
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from app.archive.backend import Erased, StoredObject, Upload, gunzip_sha256
from app.archive.layout import ROOT
from app.errors import ArchiveError
from app.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MULTIPART_THRESHOLD = 16 * 1024 * 1024
_CREDENTIAL_CODES = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "ExpiredToken", "InvalidToken", "403"}
)
_INTEGRITY_CODES = frozenset({"BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch", "InvalidRequest"})


class S3Archive:
    def __init__(
        self, settings: Settings, bucket: str, prefix: str, multipart_threshold: int = MULTIPART_THRESHOLD
    ) -> None:
        self.bucket = bucket
        self.prefix = f"{prefix}/" if prefix else ""
        self.url = f"s3://{bucket}/{prefix}".rstrip("/")
        config = Config(
            connect_timeout=5,
            read_timeout=settings.archive_timeout_s,
            retries={"mode": "standard", "max_attempts": 3},
            max_pool_connections=max(10, settings.rotate_concurrency * 2),
        )
        session = boto3.session.Session(
            aws_access_key_id=settings.aws_access_key_id or None,
            aws_secret_access_key=settings.aws_secret_access_key or None,
            region_name=settings.aws_region or None,
        )
        self.client: S3Client = session.client("s3", endpoint_url=settings.s3_endpoint_url, config=config)
        self.multipart_threshold = multipart_threshold
        self.transfer = TransferConfig(
            multipart_threshold=multipart_threshold,
            multipart_chunksize=max(5 * 1024 * 1024, multipart_threshold // 2),  # S3's smallest part is 5 MiB
            max_concurrency=4,
        )

    def check(self) -> None:
        with self._translated("reach the bucket"):
            self.client.head_bucket(Bucket=self.bucket)

    def put_new(self, key: str, upload: Upload) -> StoredObject | None:
        if upload.size >= self.multipart_threshold:
            return self._put_multipart(key, upload)
        with self._translated(f"store {key}"), upload.path.open("rb") as body:
            try:
                reply = self.client.put_object(
                    Bucket=self.bucket,
                    Key=self.prefix + key,
                    Body=body,
                    ContentLength=upload.size,
                    ContentMD5=base64.b64encode(upload.md5).decode(),
                    ChecksumSHA256=_b64(upload.sha256),
                    IfNoneMatch="*",
                    ContentType="application/gzip",
                    Metadata=upload.metadata(),
                )
            except ClientError as exc:
                if _status(exc) == 412 or _code(exc) == "PreconditionFailed":
                    return None
                raise
        etag = str(reply.get("ETag", "")).strip('"')
        checksum = reply.get("ChecksumSHA256")
        return StoredObject(
            key,
            upload.size,
            sha256=upload.sha256 if checksum == _b64(upload.sha256) else None,
            md5=etag if len(etag) == 32 else None,  # a multipart or SSE-KMS ETag is not an MD5
        )

    def _put_multipart(self, key: str, upload: Upload) -> StoredObject | None:
        """A large object in parts (SHA-256 per part), completed only if the key is still free:
        CompleteMultipartUpload with If-None-Match, so two hosts racing on one key never replace
        each other's object. The key is looked at first only to spare a useless upload."""
        if self.stat(key) is not None:
            return None
        with self._translated(f"store {key}"):
            created = self.client.create_multipart_upload(
                Bucket=self.bucket, Key=self.prefix + key, ChecksumAlgorithm="SHA256",
                ContentType="application/gzip", Metadata=upload.metadata(),
            )  # fmt: skip
            upload_id = created["UploadId"]
            try:
                parts = self._upload_parts(key, upload, upload_id)
                try:
                    self.client.complete_multipart_upload(
                        Bucket=self.bucket, Key=self.prefix + key, UploadId=upload_id,
                        MultipartUpload={"Parts": parts}, IfNoneMatch="*",  # type: ignore[typeddict-item]
                    )  # fmt: skip
                except ClientError as exc:
                    if _status(exc) == 412 or _code(exc) == "PreconditionFailed":
                        self._abort(key, upload_id)
                        return None
                    raise
            except BaseException:
                self._abort(key, upload_id)
                raise
        return StoredObject(key, upload.size)  # no whole-object digest comes back: rotate reads it back

    def _upload_parts(self, key: str, upload: Upload, upload_id: str) -> list[dict[str, Any]]:
        size = self.transfer.multipart_chunksize
        offsets = list(range(0, upload.size, size))

        def one(n: int) -> dict[str, Any]:
            with upload.path.open("rb") as f:
                f.seek(offsets[n])
                body = f.read(size)
            checksum = base64.b64encode(hashlib.sha256(body).digest()).decode()
            reply = self.client.upload_part(
                Bucket=self.bucket, Key=self.prefix + key, UploadId=upload_id, PartNumber=n + 1,
                Body=body, ChecksumSHA256=checksum,
            )  # fmt: skip
            return {"PartNumber": n + 1, "ETag": reply["ETag"], "ChecksumSHA256": checksum}

        with ThreadPoolExecutor(self.transfer.max_request_concurrency) as pool:
            return list(pool.map(one, range(len(offsets))))

    def _abort(self, key: str, upload_id: str) -> None:
        with contextlib.suppress(ClientError, BotoCoreError):
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.prefix + key, UploadId=upload_id)

    def stat(self, key: str) -> StoredObject | None:
        with self._translated(f"read {key}"):
            try:
                head = self.client.head_object(
                    Bucket=self.bucket, Key=self.prefix + key, ChecksumMode="ENABLED"
                )
            except ClientError as exc:
                if _status(exc) == 404 or _code(exc) in ("404", "NoSuchKey", "NotFound"):
                    return None
                raise
        meta = head.get("Metadata", {})
        sha = meta.get("sha256")
        checksum = head.get("ChecksumSHA256")
        whole = "-" not in str(head.get("ETag", "")) and head.get("ChecksumType") != "COMPOSITE"
        if sha and checksum and whole and _b64(sha) != checksum:  # multipart checksums cover parts
            raise ArchiveError(
                f"{key} carries two different SHA-256 digests; the object is suspect.", kind="integrity"
            )
        raw_bytes = meta.get("source-bytes", "")
        return StoredObject(
            key,
            int(head["ContentLength"]),
            sha256=sha,
            source_sha256=meta.get("source-sha256"),
            source_bytes=int(raw_bytes) if raw_bytes.isdigit() else None,
        )

    def source_sha256(self, key: str) -> str:
        found = self.stat(key)
        if found is None:
            raise ArchiveError(f"{key} vanished from {self.url} while being compared.", kind="error")
        if found.source_sha256:
            return found.source_sha256
        with self._translated(f"read {key}"):  # an object stored by another tool: read it
            body = self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)["Body"]
            try:
                return gunzip_sha256(_iter(body))
            except Exception as exc:  # zlib.error
                raise ArchiveError(
                    f"{key} in {self.url} is not a readable gzip file: {exc}", kind="integrity"
                ) from exc

    def list(self, prefix: str) -> list[StoredObject]:
        found = []
        with self._translated(f"list {prefix}"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix + prefix
            )
            for page in pages:
                for item in page.get("Contents", []):
                    found.append(StoredObject(item["Key"][len(self.prefix) :], int(item["Size"])))
        return sorted(found, key=lambda o: o.key)

    def fetch(self, key: str, dest: Path) -> None:
        with self._translated(f"read {key}"):
            self.client.download_file(self.bucket, self.prefix + key, str(dest), Config=self.transfer)

    def children(self, prefix: str) -> Sequence[str]:
        names: list[str] = []
        with self._translated(f"list {prefix}"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix + prefix, Delimiter="/"
            )
            for page in pages:
                names += [
                    p["Prefix"][len(self.prefix + prefix) :].rstrip("/")
                    for p in page.get("CommonPrefixes", [])
                ]
                names += [o["Key"][len(self.prefix + prefix) :] for o in page.get("Contents", [])]
        return sorted(names)

    def open_read(self, key: str) -> BinaryIO:
        with self._translated(f"read {key}"):
            size = int(self.client.head_object(Bucket=self.bucket, Key=self.prefix + key)["ContentLength"])
        return cast(BinaryIO, io.BufferedReader(_RangeReader(self, key, size), buffer_size=1024 * 1024))

    def delete(self, key: str) -> None:
        if key.startswith(ROOT + "/"):
            raise ArchiveError(f"refusing to delete an hourly object: {key}", kind="error")
        with self._translated(f"delete {key}"):
            self.client.delete_object(Bucket=self.bucket, Key=self.prefix + key)

    def erase(self, key: str) -> Erased:
        """Every version and delete marker of `key`; where the bucket's policy refuses to remove
        a version (object lock, no s3:DeleteObjectVersion), the current one is still deleted and
        the versions left are counted."""
        versions, size, kept = 0, 0, 0
        with self._translated(f"erase {key}"):
            found = self._versions(self.prefix + key)
            if not found:
                return Erased()
            for version_id, nbytes in found:
                try:
                    self.client.delete_object(Bucket=self.bucket, Key=self.prefix + key, VersionId=version_id)
                except ClientError as exc:
                    if exc.response.get("Error", {}).get("Code") not in ("AccessDenied", "MethodNotAllowed"):
                        raise
                    kept += 1
                    continue
                versions, size = versions + 1, size + nbytes
            if kept:
                self.client.delete_object(Bucket=self.bucket, Key=self.prefix + key)
        return Erased(versions, size, kept)

    def old_versions(self, prefix: str) -> Sequence[str]:
        current = {o.key for o in self.list(prefix)}
        found = set()
        with self._translated(f"list the versions under {prefix}"):
            pages = self.client.get_paginator("list_object_versions").paginate(
                Bucket=self.bucket, Prefix=self.prefix + prefix
            )
            for page in pages:
                entries: builtins.list[Any] = [*page.get("Versions", []), *page.get("DeleteMarkers", [])]
                for item in entries:
                    if not item.get("IsLatest") or item["Key"][len(self.prefix) :] not in current:
                        found.add(item["Key"][len(self.prefix) :])
        return sorted(found)

    def _versions(self, full_key: str) -> Sequence[tuple[str, int]]:
        """(version id, bytes) of every version and delete marker of exactly this key."""
        found: builtins.list[tuple[str, int]] = []
        pages = self.client.get_paginator("list_object_versions").paginate(
            Bucket=self.bucket, Prefix=full_key
        )
        for page in pages:
            for item in page.get("Versions", []):
                if item["Key"] == full_key:
                    found.append((str(item.get("VersionId") or "null"), int(item.get("Size", 0))))
            for marker in page.get("DeleteMarkers", []):
                if marker["Key"] == full_key:
                    found.append((str(marker.get("VersionId") or "null"), 0))
        return found

    def read_range(self, key: str, start: int, length: int) -> bytes:
        with self._translated(f"read {key}"):
            reply = self.client.get_object(
                Bucket=self.bucket, Key=self.prefix + key, Range=f"bytes={start}-{start + length - 1}"
            )
            return bytes(reply["Body"].read())

    @contextlib.contextmanager
    def _translated(self, action: str) -> Iterator[None]:
        """Turn boto3's errors into one ArchiveError sentence with a kind for metrics."""
        where = f"{self.url}" + (
            f" at {self.client.meta.endpoint_url}" if self.client.meta.endpoint_url else ""
        )
        try:
            yield
        except ArchiveError:
            raise
        except ClientError as exc:
            code, status = _code(exc), _status(exc)
            if code == "NoSuchBucket" or (status == 404 and action == "reach the bucket"):
                raise ArchiveError(
                    f"the bucket {self.bucket!r} does not exist ({where}).", kind="no_bucket"
                ) from exc
            if code in _CREDENTIAL_CODES or status == 403:
                raise ArchiveError(
                    f"the archive refused our credentials while trying to {action} ({code}; {where}).",
                    kind="credentials",
                ) from exc
            if code in _INTEGRITY_CODES:
                raise ArchiveError(
                    f"the archive rejected {action}: {code} ({where}).", kind="integrity"
                ) from exc
            raise ArchiveError(
                f"the archive failed to {action}: {code} {exc} ({where}).", kind="error"
            ) from exc
        except NoCredentialsError as exc:
            raise ArchiveError(
                "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or an instance role).",
                kind="credentials",
            ) from exc
        except (ConnectTimeoutError, ReadTimeoutError) as exc:
            raise ArchiveError(
                f"the archive timed out while trying to {action} ({where}).", kind="timeout"
            ) from exc
        except EndpointConnectionError as exc:
            raise ArchiveError(f"the archive is unreachable ({where}).", kind="unreachable") from exc
        except (BotoCoreError, OSError) as exc:
            raise ArchiveError(
                f"the archive failed to {action}: {exc} ({where}).", kind="unreachable"
            ) from exc


class _RangeReader(io.RawIOBase):
    """A seekable view of an S3 object: each read is a ranged GET (Parquet readers read a footer,
    then the row groups they need, and nothing else)."""

    def __init__(self, archive: S3Archive, key: str, size: int) -> None:
        super().__init__()
        self.archive, self.key, self.size, self.pos = archive, key, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, buffer: Any) -> int:
        length = min(len(buffer), self.size - self.pos)
        if length <= 0:
            return 0
        data = self.archive.read_range(self.key, self.pos, length)
        buffer[: len(data)] = data
        self.pos += len(data)
        return len(data)


def _b64(hex_digest: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_digest)).decode()


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def _iter(body: Any) -> Iterator[bytes]:
    yield from body.iter_chunks(1024 * 1024)
