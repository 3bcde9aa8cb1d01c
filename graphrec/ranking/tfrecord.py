"""TFRecord files of tf.train.Example read without TensorFlow: the record framing with both masked
CRC32Cs verified (``read_tfrecord``) and a minimal protobuf decoder for Example (``parse_example``).
The format DMT's published JD data comes in (``graphrec.ranking.jd`` maps it onto ranking data)."""

from __future__ import annotations

import functools
import struct
from collections.abc import Iterator
from pathlib import Path

from graphrec.errors import UserError


class TFRecordError(UserError, ValueError):
    """A file that is not valid TFRecord / tf.train.Example; the message names the file and record."""


# ------------------------------------------------------------------------------------------ CRC32C

_CRC32C_POLY = 0x82F63B78  # Castagnoli, reflected
_MASK_DELTA = 0xA282EAD8


@functools.cache
def _crc_table() -> tuple[int, ...]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ _CRC32C_POLY if c & 1 else c >> 1
        table.append(c)
    return tuple(table)


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC-32C (Castagnoli) of ``data``, continuing from ``crc`` (0 to start)."""
    table = _crc_table()
    c = crc ^ 0xFFFFFFFF
    for b in data:
        c = table[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC: rotate the CRC32C right by 15 bits, add 0xa282ead8 (mod 2^32)."""
    c = crc32c(data)
    return ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


# ------------------------------------------------------------------------------------------ TFRecord

def read_tfrecord(path: str | Path) -> Iterator[bytes]:
    """The payloads of a TFRecord file, in order. Each record is uint64 LE length, uint32 LE
    masked CRC32C of those 8 bytes, the payload, uint32 LE masked CRC32C of the payload; both CRCs
    are verified. A bad CRC or a truncated record raises TFRecordError naming the file, the record
    number (0-based) and the byte offset where that record starts."""
    path = Path(path)
    with open(path, "rb") as f:
        offset, number = 0, 0
        while True:
            head = f.read(12)
            if not head:
                return
            where = f"{path}: record {number} at byte offset {offset}"
            if len(head) < 12:
                raise TFRecordError(f"{where}: truncated record header ({len(head)} of 12 bytes)")
            length_bytes = head[:8]
            (length,) = struct.unpack("<Q", length_bytes)
            (length_crc,) = struct.unpack("<I", head[8:])
            if masked_crc32c(length_bytes) != length_crc:
                raise TFRecordError(f"{where}: bad CRC of the length field (stored {length_crc:#010x}, "
                                 f"computed {masked_crc32c(length_bytes):#010x})")
            payload = f.read(length)
            if len(payload) < length:
                raise TFRecordError(f"{where}: truncated record payload ({len(payload)} of {length} bytes)")
            foot = f.read(4)
            if len(foot) < 4:
                raise TFRecordError(f"{where}: truncated record: payload CRC missing ({len(foot)} of 4 bytes)")
            (payload_crc,) = struct.unpack("<I", foot)
            computed = masked_crc32c(payload)
            if computed != payload_crc:
                raise TFRecordError(f"{where}: bad CRC of the payload (stored {payload_crc:#010x}, "
                                 f"computed {computed:#010x})")
            yield payload
            offset += 16 + length
            number += 1


# ------------------------------------------------------------------------------------------ protobuf

_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        if i >= len(buf):
            raise TFRecordError("truncated varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, i
        shift += 7
        if shift >= 70:
            raise TFRecordError("varint longer than 10 bytes")


def _fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of a message: int for varints, bytes for the rest."""
    i, n = 0, len(buf)
    while i < n:
        key, i = _varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, i = _varint(buf, i)
        elif wire == _LEN:
            size, i = _varint(buf, i)
            if i + size > n:
                raise TFRecordError(f"truncated length-delimited field {field} ({n - i} of {size} bytes)")
            value, i = buf[i:i + size], i + size
        elif wire == _FIXED32 or wire == _FIXED64:
            size = 4 if wire == _FIXED32 else 8
            if i + size > n:
                raise TFRecordError(f"truncated fixed{size * 8} field {field}")
            value, i = buf[i:i + size], i + size
        else:
            raise TFRecordError(f"unsupported protobuf wire type {wire} (field {field})")
        yield field, wire, value


def _expect(field: int, wire: int, allowed: tuple[int, ...], what: str) -> None:
    if wire not in allowed:
        raise TFRecordError(f"{what}: field {field} has wire type {wire}, expected one of {allowed}")


def _int64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _feature(buf: bytes) -> list:
    """Feature: oneof {1: BytesList, 2: FloatList, 3: Int64List}, each {1: repeated values}."""
    values: list = []
    for kind, wire, lst in _fields(buf):
        if kind not in (1, 2, 3):
            continue
        _expect(kind, wire, (_LEN,), "Feature")
        values = []  # oneof: the last kind given wins
        for f, w, v in _fields(lst):
            if f != 1:
                continue
            if kind == 1:
                _expect(f, w, (_LEN,), "BytesList")
                values.append(bytes(v))
            elif kind == 2:
                _expect(f, w, (_LEN, _FIXED32), "FloatList")
                if w == _FIXED32:
                    values.append(struct.unpack("<f", v)[0])
                else:
                    if len(v) % 4:
                        raise TFRecordError(f"packed FloatList of {len(v)} bytes, not a multiple of 4")
                    values.extend(struct.unpack(f"<{len(v) // 4}f", v))
            else:
                _expect(f, w, (_LEN, _VARINT), "Int64List")
                if w == _VARINT:
                    values.append(_int64(v))
                else:
                    j = 0
                    while j < len(v):
                        x, j = _varint(v, j)
                        values.append(_int64(x))
    return values


def parse_example(payload: bytes) -> dict[str, list]:
    """tf.train.Example → {feature name: list of bytes / floats / ints}. Example{1: Features},
    Features{1: map<string, Feature>} (repeated entries {1: key, 2: Feature}); floats and int64s
    packed or not. Unknown fields are skipped; wire types other than varint, fixed64,
    length-delimited and fixed32 raise TFRecordError."""
    out: dict[str, list] = {}
    for f, w, features in _fields(payload):
        if f != 1:
            continue
        _expect(f, w, (_LEN,), "Example")
        for ff, ww, entry in _fields(features):
            if ff != 1:
                continue
            _expect(ff, ww, (_LEN,), "Features")
            key, value = b"", b""
            for ef, ew, ev in _fields(entry):
                if ef == 1:
                    _expect(ef, ew, (_LEN,), "Features map key")
                    key = ev
                elif ef == 2:
                    _expect(ef, ew, (_LEN,), "Features map value")
                    value = ev
            out[bytes(key).decode("utf-8")] = _feature(value)
    return out
