"""UTF-16 inputs (Excel's "Unicode Text", PowerShell's ``>``) read as the text they are.

Windows tools save text as UTF-16: every ASCII character followed (or preceded) by a NUL
byte, after a byte-order mark. Read as bytes, every line looked binary and was rejected.
Such a file is decoded as it is read and handed on as UTF-8, so the reader sees the same
lines a UTF-8 copy would give; its digest (the run's identity) stays that of its bytes.
"""

from __future__ import annotations

import codecs
from typing import BinaryIO

_BOMS = ((codecs.BOM_UTF32_LE, None), (codecs.BOM_UTF16_LE, "utf-16"),
         (codecs.BOM_UTF16_BE, "utf-16"))
_SNIFF_PAIRS = 8  # characters of ASCII text a file without a BOM must start with


def utf16_encoding(start: bytes) -> str | None:
    """The codec to read a file that starts with ``start`` as UTF-16, None if it isn't."""
    for bom, encoding in _BOMS:  # UTF-32's mark starts like UTF-16's: not ours to read
        if start.startswith(bom):
            return encoding
    pairs = len(start) // 2
    if pairs < _SNIFF_PAIRS:
        return None
    even, odd = start[0:2 * pairs:2], start[1:2 * pairs:2]
    if not odd.strip(b"\x00") and even.isascii() and b"\x00" not in even:
        return "utf-16-le"
    if not even.strip(b"\x00") and odd.isascii() and b"\x00" not in odd:
        return "utf-16-be"
    return None


class Utf16Reader:
    """``read()`` of a UTF-16 stream as UTF-8 bytes (a broken pair becomes U+FFFD)."""

    def __init__(self, raw: BinaryIO, encoding: str) -> None:
        self._raw = raw
        self._decoder = codecs.getincrementaldecoder(encoding)("replace")

    def read(self, size: int = -1) -> bytes:
        while True:
            data = self._raw.read(size)
            text = self._decoder.decode(data, final=not data)
            if text or not data:  # b"" only at the end
                return text.encode("utf-8")
