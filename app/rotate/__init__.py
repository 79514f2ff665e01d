"""Rotate: ship closed hours to the archive, confirm them, and only then delete local copies.

- `scan`: which local hourly files are closed (hour end + ROTATE_GRACE_S) and may be taken.
- `claim`: take a file with an exclusive flock, so no writer is mid-append; gzip it streaming.
- `ship`: place it in the archive without overwriting (next part on a conflict), confirm it.
- `runner`: a pass over every closed file with bounded concurrency, Redis stats, metrics,
  progress and one summary line; `--every` repeats it.

Every step is safe to repeat: a pass killed anywhere leaves either the local file (shipped again
next time, recognised as identical and not stored twice) or nothing left to do.
"""
