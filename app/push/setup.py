"""What an owner types into a gateway's uploader page to push to this server."""

from __future__ import annotations

from urllib.parse import urlsplit


def uploader_settings(cloud_id: str, base: str, key: str | None) -> str:
    """The URL and the uploader settings for an EAGLE-100 and an EAGLE-200, as text."""
    parts = urlsplit(base if "://" in base else f"https://{base}")
    scheme = parts.scheme or "https"
    host = parts.hostname or "localhost"
    port = parts.port or (443 if scheme == "https" else 80)
    path = f"{parts.path.rstrip('/')}/api/push/{cloud_id}"
    shown = key or "<the push key>"
    note = (
        "This is the device's new push key; it is shown only now (only its digest is kept)."
        if key
        else "The push key was shown once, when the device was registered; to make a new one: "
        f"rainforest users push-url {cloud_id} --new-key"
    )
    return f"""Uploader settings for push device {cloud_id}
  URL (for uploaders that take only a URL):
    {scheme}://{host}{"" if port in (80, 443) else f":{port}"}{path}?key={shown}

  EAGLE-200 / EAGLE-3 (web page: Settings > Cloud > Add Cloud Provider, "Custom"):
    Protocol   {scheme.upper()}
    Hostname   {host}
    URL        {path}
    Port       {port}
    Format     JSON (or RFA XML)
    Username   {cloud_id}
    Password   {shown}

  EAGLE-100 (web page: Settings > Cloud > Add New Cloud > Manual):
    Provider   Custom
    Protocol   {scheme}
    Hostname   {host}
    URL        {path}?key={shown}
    Port       {port}

{note}
Check that it arrives: rainforest users list --json | grep {cloud_id}  (status ok, last_success_at)"""
