"""Electronic invoice formats, all built from one EN 16931 mapping (``en16931``)."""
