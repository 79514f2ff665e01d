"""A withdrawn household's readings erased from every place they live, provably, for good.

- `marks`: the erased households as every process checks them (a keyed digest of the cloud_id
  and the moment before which nothing of it may be kept);
- `tombstone`: what the study keeps of an erasure (pseudonymous: counts, never readings);
- `hourly`, `parquet`, `carts`, `local`: one place each;
- `run`: the erasure itself, step by step, resumable; `report`: the receipt, re-checked.
"""
