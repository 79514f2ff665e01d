"""A running `rainforest server` for API tests, plus OpenAPI response validation."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import requests

from app.store import Store
from app.tokens import Tokens
from app.web.openapi import document
from tests.conftest import free_port, wait_until


@dataclass
class ApiServer:
    url: str
    proc: subprocess.Popen[bytes]
    log_dir: Path
    redis_url: str

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(15)

    def logs(self) -> str:
        text = ""
        for path in self.log_dir.rglob("*.log"):
            text += path.read_text()
        return text + (self.log_dir / "stderr.log").read_text()


def start_api(
    redis_url: str,
    secret_key: str,
    eagle_url: str = "http://127.0.0.1:9/none",
    port: int = 0,
    **extra_env: str,
) -> ApiServer:
    port = port or free_port()
    workdir = Path(tempfile.mkdtemp(prefix="rf-api-"))
    env = {**os.environ, "REDIS_URL": redis_url, "SECRET_KEY": secret_key, "DATA_DIR": str(workdir),
           "EAGLE_CLOUD_URL": eagle_url, "POLL_INTERVAL_S": "2", "POLL_TIMEOUT_S": "1",
           "GATEWAY_ALLOW_NETWORKS": "127.0.0.0/8",  # the simulator's local gateways
           **extra_env}  # fmt: skip
    with (workdir / "stderr.log").open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "server", "--port", str(port)],
            cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
    server = ApiServer(f"http://127.0.0.1:{port}", proc, workdir, redis_url)

    def up() -> bool:
        assert proc.poll() is None, f"server exited: {(workdir / 'stderr.log').read_text()}"
        try:
            return requests.get(server.url + "/healthz", timeout=10).status_code in (200, 503)
        except (requests.ConnectionError, requests.Timeout):  # still starting (a loaded machine)
            return False

    wait_until(up, what="the API server")
    return server


def make_token(redis_url: str, name: str, read_only: bool = False) -> str:
    async def go() -> str:
        store = Store.from_url(redis_url)
        try:
            return await Tokens(store).create(name, read_only)
        finally:
            await store.close()

    return asyncio.run(go())


def revoke_token(redis_url: str, name: str) -> None:
    async def go() -> None:
        store = Store.from_url(redis_url)
        try:
            await Tokens(store).revoke(name)
        finally:
            await store.close()

    asyncio.run(go())


def _jsonschema(node: Any) -> Any:
    """OpenAPI 3.0 schema → JSON Schema: `nullable` becomes a null type."""
    if isinstance(node, dict):
        out = {k: _jsonschema(v) for k, v in node.items() if k not in ("nullable", "example", "writeOnly")}
        if node.get("nullable") and "type" in node:
            out["type"] = [node["type"], "null"]
        if "$ref" in node:
            out["$ref"] = node["$ref"].replace("#/components/schemas/", "#/$defs/")
        return out
    if isinstance(node, list):
        return [_jsonschema(v) for v in node]
    return node


DOC = document()
DEFS = _jsonschema(DOC["components"]["schemas"])


def conforms(resp: requests.Response, path: str, method: str) -> None:
    """Assert the response's status is documented and its JSON body fits the documented schema."""
    operation = DOC["paths"][path][method.lower()]
    documented = operation["responses"]
    assert str(resp.status_code) in documented, f"{method} {path} answered undocumented {resp.status_code}"
    content = documented[str(resp.status_code)].get("content", {})
    if "application/json" in content:
        assert resp.headers["Content-Type"].startswith("application/json")
        schema = {**_jsonschema(content["application/json"]["schema"]), "$defs": DEFS}
        jsonschema.validate(resp.json(), schema)
