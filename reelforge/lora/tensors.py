"""A safetensors file's header and raw tensor bytes, without torch (numpy only).

The format: 8 bytes little-endian header length N, N bytes of JSON ``{name: {dtype, shape, data_offsets}, ...,
"__metadata__": {str: str}}``, then the data; ``data_offsets`` are ``[begin, end)`` relative to byte 8 + N.

* ``open_header(path)``: the ``safetensors`` library's ``safe_open`` is the judge of whether the file is a valid
  safetensors file at all (it checks the header, the offsets, that the data covers the file exactly); the
  offsets it does not expose are then read from the header here.
* ``non_finite(...)``: NaN / inf found by the IEEE exponent bits of the raw little-endian bytes, so ``bfloat16``
  (not a numpy dtype) is checked like the others and no tensor is ever decoded or loaded whole.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open

__all__ = [
    "FLOAT_DTYPES",
    "ITEM_SIZES",
    "Header",
    "TensorInfo",
    "count_non_finite",
    "describe_parse_error",
    "non_finite",
    "open_header",
    "read_scalars",
]

# Element sizes of every dtype safetensors defines.
ITEM_SIZES: dict[str, int] = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}

# dtype -> (unsigned view, exponent mask, mantissa mask). A value is inf or NaN when all its exponent bits are
# set; NaN when the mantissa is not zero as well. F8_E4M3 (the "fn" variant) has no inf: only S.1111.111 is NaN,
# so its "exponent" mask is the whole magnitude and its mantissa test is skipped (mask 0).
_BITS: dict[str, tuple[str, int, int]] = {
    "F16": ("<u2", 0x7C00, 0x03FF),
    "BF16": ("<u2", 0x7F80, 0x007F),
    "F32": ("<u4", 0x7F800000, 0x007FFFFF),
    "F64": ("<u8", 0x7FF0000000000000, 0x000FFFFFFFFFFFFF),
    "F8_E5M2": ("u1", 0x7C, 0x03),
    "F8_E4M3": ("u1", 0x7F, 0x00),
}
FLOAT_DTYPES = frozenset(_BITS)

_CHUNK_BYTES = 8 * 1024 * 1024  # bytes scanned per read: bounded memory whatever the tensor's size


@dataclass(frozen=True)
class TensorInfo:
    """One tensor as the header declares it; ``begin``/``end`` are absolute file offsets."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def numel(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count


@dataclass(frozen=True)
class Header:
    """A parsed safetensors header: tensors by name (file order) and the string metadata."""

    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]
    data_start: int


def open_header(path: Path) -> Header:
    """The header of a valid safetensors file; ``SafetensorError`` / ``OSError`` / ``ValueError`` otherwise."""
    # safe_open validates everything (lengths, offsets, coverage, dtypes) and raises SafetensorError.
    with safe_open(str(path), framework="numpy") as opened:
        names = list(opened.keys())
        metadata = dict(opened.metadata() or {})
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        raw = json.loads(handle.read(length))
    data_start = 8 + length
    tensors: dict[str, TensorInfo] = {}
    for name, entry in sorted(
        ((n, e) for n, e in raw.items() if n != "__metadata__"), key=lambda item: item[1]["data_offsets"][0]
    ):
        begin, end = entry["data_offsets"]
        tensors[name] = TensorInfo(
            name=name,
            dtype=str(entry["dtype"]),
            shape=tuple(int(d) for d in entry["shape"]),
            begin=data_start + int(begin),
            end=data_start + int(end),
        )
    if set(tensors) != set(names):  # the two readers must agree, or the offsets above mean nothing
        raise ValueError("the header lists other tensors than safetensors reads")
    return Header(tensors=tensors, metadata={str(k): str(v) for k, v in metadata.items()}, data_start=data_start)


def count_non_finite(data: bytes | memoryview, dtype: str) -> tuple[int, int, bool]:
    """``(count, first flat index or -1, first is NaN)`` of non-finite values in little-endian ``data``."""
    view, exponent, mantissa = _BITS[dtype]
    bits = np.frombuffer(data, dtype=np.dtype(view))
    exp_mask = bits.dtype.type(exponent)
    bad = (bits & exp_mask) == exp_mask
    count = int(np.count_nonzero(bad))
    if not count:
        return 0, -1, False
    first = int(np.argmax(bad))
    is_nan = mantissa == 0 or bool(int(bits[first]) & mantissa)
    return count, first, is_nan


def non_finite(path: Path, tensors: list[TensorInfo]) -> dict[str, tuple[int, int, bool]]:
    """Float tensors of ``path`` holding NaN or inf: ``name -> (count, first flat index, first is NaN)``.

    Reads each tensor's byte range in chunks of whole elements; non-float dtypes are skipped.
    """
    found: dict[str, tuple[int, int, bool]] = {}
    buffer = bytearray(_CHUNK_BYTES)
    with open(path, "rb", buffering=0) as handle:
        for tensor in tensors:
            if tensor.dtype not in _BITS:
                continue
            item = ITEM_SIZES[tensor.dtype]
            handle.seek(tensor.begin)
            remaining = tensor.end - tensor.begin
            offset = 0  # elements scanned so far in this tensor
            total, first, first_nan = 0, -1, False
            while remaining > 0:
                want = min(remaining, _CHUNK_BYTES - _CHUNK_BYTES % item)
                view = memoryview(buffer)[:want]
                got = handle.readinto(view)
                if not got:
                    raise ValueError(f"tensor {tensor.name!r} ends past the end of the file")
                got -= got % item  # a short read mid-element: the rest comes with the next read
                if not got:
                    raise ValueError(f"tensor {tensor.name!r} ends past the end of the file")
                handle.seek(tensor.begin + offset * item + got)
                count, index, is_nan = count_non_finite(view[:got], tensor.dtype)
                if count and first < 0:
                    first, first_nan = offset + index, is_nan
                total += count
                offset += got // item
                remaining -= got
            if total:
                found[tensor.name] = (total, first, first_nan)
    return found


_SCALAR_DTYPES = {"F16": "<f2", "F32": "<f4", "F64": "<f8"}


def read_scalars(path: Path, tensors: list[TensorInfo]) -> dict[str, float | None]:
    """The values of one-element float tensors (alphas), bfloat16 included; None for any other or non-finite."""
    values: dict[str, float | None] = {}
    with open(path, "rb") as handle:
        for tensor in tensors:
            value: float | None = None
            if tensor.numel == 1 and (tensor.dtype == "BF16" or tensor.dtype in _SCALAR_DTYPES):
                handle.seek(tensor.begin)
                raw = handle.read(tensor.end - tensor.begin)
                if tensor.dtype == "BF16":  # the upper half of a float32
                    value = float((np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)[0])
                else:
                    value = float(np.frombuffer(raw, dtype=_SCALAR_DTYPES[tensor.dtype])[0])
                value = value if np.isfinite(value) else None
            values[tensor.name] = value
    return values


def describe_parse_error(exc: BaseException) -> str:
    """What made a file unparseable, in words (the library's own message where it has one)."""
    if isinstance(exc, SafetensorError):
        return str(exc)
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, IsADirectoryError):
        return "is a directory"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return f"{type(exc).__name__}: {exc}"
