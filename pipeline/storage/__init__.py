"""Archive storage backends behind one small protocol."""

from pipeline.storage.base import Storage, StoredObject
from pipeline.storage.local import LocalStorage

__all__ = ["Storage", "StoredObject", "LocalStorage"]
