"""zipedge benchmarks: `python -m bench` (see docs/benchmarks.md).

Not part of the installed package: it drives the service as a subprocess, the way a
client and an S3 server would see it, and measures the ceilings it is compared with in
the same run.
"""
