"""Pending uploads: one record per `POST /v1/uploads`, from the signed URL to its
completion or abandonment.

`base.py` is the record and the store's interface; `redis.py` is shared by every process
(an index by age for the janitor), `sqlite.py` is the embedded default under
ZIPEDGE_DATA_DIR, `memory.py` the twin for unit tests.
"""

from service.pending.base import PendingStore, PendingUpload, UploadState

__all__ = ["PendingStore", "PendingUpload", "UploadState"]
