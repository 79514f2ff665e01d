#!/usr/bin/env python3
"""Fetch the pages' third-party assets from the npm registry, verified, into app/web/static/vendor/.

The pages serve every asset themselves (deployments are often air-gapped), so `make demo`,
`make test` and the image fetch them once at install time. Each tarball is checked against the
integrity digest the registry published for that exact version, pinned here.

    python scripts/fetch_assets.py          # fetch what is missing
"""

from __future__ import annotations

import base64
import hashlib
import io
import sys
import tarfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENDOR = ROOT / "app" / "web" / "static" / "vendor"
REGISTRY = "https://registry.npmjs.org"

# name, version, sha512 integrity (npm view NAME@VERSION dist.integrity), files to keep
ASSETS = [
    ("uplot", "1.6.32",
     "sha512-KIMVnG68zvu5XXUbC4LQEPnhwOxBuLyW1AHtpm6IKTXImkbLgkMy+jabjLgSLMasNuGGzQm/ep3tOkyTxpiQIw==",
     ("package/dist/uPlot.iife.min.js", "package/dist/uPlot.min.css", "package/LICENSE")),
]  # fmt: skip


def fetch(name: str, version: str, integrity: str, keep: tuple[str, ...]) -> None:
    target = VENDOR / name
    if all((target / Path(member).name).exists() for member in keep):
        return
    url = f"{REGISTRY}/{name}/-/{name}-{version}.tgz"
    with urllib.request.urlopen(url, timeout=60) as resp:
        data = resp.read()
    algorithm, _, expected = integrity.partition("-")
    digest = base64.b64encode(hashlib.new(algorithm, data).digest()).decode()
    if digest != expected:
        raise SystemExit(f"{name}@{version} from {url} does not match its published {algorithm} digest.")
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in keep:
            source = tar.extractfile(member)
            if source is None:
                raise SystemExit(f"{name}@{version} has no {member}.")
            (target / Path(member).name).write_bytes(source.read())
    print(f"fetched {name}@{version} into {target.relative_to(ROOT)}")


def main() -> int:
    try:
        for asset in ASSETS:
            fetch(*asset)
    except OSError as exc:
        print(f"could not fetch the pages' assets from {REGISTRY}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
