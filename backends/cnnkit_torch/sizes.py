"""The torch backend's size limits, importable without torch (its conformance cases are sized from them)."""

#: Bytes of im2col columns per batch chunk of the strided weight gradient (measured on W5).
COLUMNS_CHUNK_BYTES = 4 * 2**20
