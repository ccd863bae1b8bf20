"""Background builds for selections too large to stream: one job per archive id, run by
saq workers on Redis, or by an in-process runner in the embedded default."""
