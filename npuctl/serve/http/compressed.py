"""Request bodies sent compressed (`Content-Encoding: gzip` or `deflate`, as Triton's client does on request),
inflated while they stream in, with the size limit applied to the inflated bytes: a small bomb that inflates
past the limit is refused at the limit, never held whole."""

from __future__ import annotations

import zlib

from npuctl.serve.http.errors import ApiError

_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def inflater(encoding: str | None, limit: int) -> Inflater | None:
    """What inflates a body sent with this Content-Encoding (None: sent as it is); 415 for an encoding other
    than gzip or deflate."""
    encoding = (encoding or "identity").strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding not in _WBITS:
        raise ApiError(415, f"Content-Encoding {encoding!r} is not supported (gzip, deflate or none)")
    return Inflater(encoding, limit)


class Inflater:
    """Feed it the body's chunks as they come; 413 as soon as the inflated bytes pass `limit`, 400 for a body
    that is not what its encoding says."""

    def __init__(self, encoding: str, limit: int) -> None:
        self.encoding = encoding
        self.limit = limit
        self.out = bytearray()
        self._received = 0
        self._wbits = _WBITS[encoding]
        self._started = False
        self._inflate = zlib.decompressobj(self._wbits)

    def feed(self, data: bytes) -> None:
        self._received += len(data)
        if self._received > self.limit:  # the sent bytes count too: empty deflate blocks inflate to nothing
            raise ApiError(413, f"request body is over the limit of {self.limit} bytes")
        while data:
            if self._inflate.eof:  # gzip allows several members one after the other
                self._inflate = zlib.decompressobj(self._wbits)
            try:
                self.out += self._inflate.decompress(data, self.limit + 1 - len(self.out))
            except zlib.error as exc:
                if self.encoding == "deflate" and not self._started:
                    # Some clients send raw deflate (no zlib header) under `deflate`: the header check fails at once.
                    self._started, self._wbits = True, -zlib.MAX_WBITS
                    self._inflate = zlib.decompressobj(self._wbits)
                    continue
                raise ApiError(400, f"the request body is not valid {self.encoding} data: {exc}") from exc
            self._started = True
            if len(self.out) > self.limit:
                raise ApiError(413, f"request body inflates past the limit of {self.limit} bytes")
            data = self._inflate.unused_data if self._inflate.eof else self._inflate.unconsumed_tail

    def finish(self) -> bytes:
        if not self._inflate.eof:
            raise ApiError(400, f"the request body ends before its {self.encoding} data does")
        return bytes(self.out)
