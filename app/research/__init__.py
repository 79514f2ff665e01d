"""Data researchers load: typed tables of each kind, merged across parts, and the compacted archive.

- `schema`: the Arrow schema of each line kind (demand, summation, price) and lines → columns;
- `merge`: one device's hours, parts merged, duplicates dropped, in time order, counted per hour;
- `parquet`: a streaming Parquet writer (zstd, row groups, flat memory);
- `compact`: `rainforest compact`: closed days as Hive-partitioned Parquet beside the hourly objects;
- `days`: finding and reading the compacted days back (carts use them when they exist).
"""
