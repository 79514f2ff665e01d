"""The archive: where closed hours live for years, behind one interface with two backends.

- `layout`: the archive key of a device-hour and of its further parts (one spelling).
- `backend`: the `Archive` interface, `StoredObject`, and `open_archive(settings)`.
- `files`: `file://` backend: a folder, atomic no-overwrite via link(2).
- `s3`: `s3://bucket/prefix` backend with boto3: checksummed, conditional puts.
"""
