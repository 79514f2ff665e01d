"""Carts: researchers ask for devices × a time range, cartd stages and bundles it, they download a tar.

- `model`: the request (validated), the cart record, states and reason codes.
- `registry`: carts in Redis: create, claim (single-flight), progress, space reservations, LRU.
- `plan`: what a cart holds: every archived part in range plus hours not yet rotated.
- `stage`: fetch and verify each part against the archive's checksums; CSV merging.
- `bundle`: the tar (MANIFEST.json, SHA256SUMS, then the files), written zero-copy.
- `build`: one cart's build from waiting to ready or error, with a deadline and cancellation.
- `worker`: `rainforest cartd`: arq workers, the eviction and stuck-cart watchdog jobs.
- `retention`: expiry by last access, purge, and removing a cart's files.
"""
