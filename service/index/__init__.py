"""The object index: the CRC-32 of objects, by (source, key, validator), learned once.

Every member whose CRC-32 is known before it is written gets CRC and sizes in its local
header and no data descriptor, the form every reader opens, streaming ones included; and
only then can a live stream answer a Range request without reading members outside it.
The index is filled by every stream or job that reads an object whole, by uploads (the CRC
is bound into the presigned PUT), and by `zipedge index`. An object that changes gets a
new validator (ETag, or inode/size/mtime for a folder), so a stale CRC is never used.

`base.py` is the interface; `redis.py` is shared by every process, `sqlite.py` is the
embedded default under ZIPEDGE_DATA_DIR, `memory.py` the twin for unit tests.
"""

from service.index.base import Known, ObjectIndex, group_of

__all__ = ["Known", "ObjectIndex", "group_of"]
