"""Staging: where an upload's body waits until it is completed, and how a completed one
is filed under its day in the source.

`base.py` is the interface; `s3.py` has clients PUT straight to the bucket through
presigned URLs and files with a server-side copy; `folder.py` (the embedded default)
receives the body through the service itself and files with a hard link; `memory.py` is
the twin for unit tests. Staging is never under a day prefix, so no listing (and so no
archive) ever sees a body that is not completed.
"""

from service.staging.base import Placed, Staged, Staging

__all__ = ["Placed", "Staged", "Staging"]
