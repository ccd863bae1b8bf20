"""What the S3 adapters share: one client bundle per process (`client.py`), the lean data
plane for object bodies and listings (`getter.py`), one error classifier (`errors.py`) and
one refreshing credentials provider (`credentials.py`)."""
