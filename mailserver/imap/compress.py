"""COMPRESS=DEFLATE (RFC 4978): raw deflate (RFC 1951, no zlib header) in both directions
of one connection, from the tagged OK of the COMPRESS command on."""

from __future__ import annotations

import zlib

# A small input may inflate to much more: inflate it a slice at a time.
INFLATE_SLICE = 256 * 1024


class Deflate:
    def __init__(self) -> None:
        self._out = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
        self._in = zlib.decompressobj(-15)
        self._unflushed = False

    def compress(self, data: bytes) -> bytes:
        self._unflushed = True
        return self._out.compress(data)

    def flush(self) -> bytes:
        """The end of a response burst: everything compressed so far, decodable now
        (RFC 4978 §4: Z_SYNC_FLUSH, the stream goes on); nothing when nothing is owed."""
        if not self._unflushed:
            return b""
        self._unflushed = False
        return self._out.flush(zlib.Z_SYNC_FLUSH)

    @property
    def backlog(self) -> bool:
        """Received input not inflated yet (see `INFLATE_SLICE`)."""
        return bool(self._in.unconsumed_tail)

    def inflate(self, data: bytes) -> bytes:
        try:
            return self._in.decompress(self._in.unconsumed_tail + data, INFLATE_SLICE)
        except zlib.error as exc:
            raise ConnectionError(f"invalid deflate stream from the client: {exc}") from exc
