"""Reader for the IDX format of the MNIST files (LeCun, Cortes, Burges).

An IDX file is a header followed by the array, row-major, big-endian::

    0x00 0x00 TYPE NDIM     magic: two zero bytes, a type code, the number of dimensions
    SIZE_0 .. SIZE_{NDIM-1}  one unsigned 32-bit big-endian size per dimension
    DATA                     prod(SIZE) items of TYPE, big-endian, last index fastest

Type codes (:data:`IDX_TYPES`): 0x08 unsigned byte, 0x09 signed byte, 0x0B 16-bit, 0x0C 32-bit
integers, 0x0D 32-bit and 0x0E 64-bit floats. MNIST uses 0x08 only: images are ``(n, 28, 28)``
bytes (``idx3``), labels ``(n,)`` bytes (``idx1``).

Files as distributed are gzipped; :func:`read_idx` reads both, telling them apart by the gzip
magic ``1f 8b`` rather than by the name (a plain IDX file always starts with ``00 00``). The
data length must match the header exactly: short data and trailing bytes are both errors.

numpy only.
"""

import gzip
import os
import zlib

import numpy as np

__all__ = ["IDX_TYPES", "read_idx"]

#: numpy dtype (big-endian) of each IDX type code.
IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"


def _types():
    return ", ".join(f"0x{code:02X} {dtype.name}" for code, dtype in IDX_TYPES.items())


def read_idx(path):
    """The array stored in IDX file ``path`` (plain or gzipped), in native byte order.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    ndarray
        Shape from the header, dtype from the type code (:data:`IDX_TYPES`; ``uint8`` for
        MNIST), a fresh writable array.

    Raises
    ------
    ValueError
        Naming the file and the fault: corrupt gzip, bad magic, unsupported type code,
        truncated header or data (expected N bytes, got M), trailing bytes.
    OSError
        If the file cannot be read (``FileNotFoundError`` and the like).
    """
    name = os.fspath(path)
    with open(name, "rb") as f:
        raw = f.read()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise ValueError(f"{name}: corrupt gzip data: {e}") from None
    return _parse(name, raw)


def _parse(name, raw):
    if len(raw) < 4:
        raise ValueError(f"{name}: truncated header: expected at least 4 bytes, "
                         f"got {len(raw)}")
    if raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{name}: bad magic {raw[:4].hex(' ')}: an IDX file starts with "
                         f"00 00, a type code and the number of dimensions")
    code, ndim = raw[2], raw[3]
    dtype = IDX_TYPES.get(code)
    if dtype is None:
        raise ValueError(f"{name}: unsupported type code 0x{code:02X}; known: {_types()}")
    if ndim == 0:
        raise ValueError(f"{name}: bad header: 0 dimensions")
    start = 4 + 4 * ndim
    if len(raw) < start:
        raise ValueError(f"{name}: truncated header: expected {start} bytes for {ndim} "
                         f"dimensions, got {len(raw)}")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=object)) * dtype.itemsize
    got = len(raw) - start
    if got < expected:
        raise ValueError(f"{name}: truncated data: expected {expected} bytes for shape "
                         f"{shape} of {dtype.name}, got {got}")
    if got > expected:
        raise ValueError(f"{name}: {got - expected} trailing bytes after the {expected} bytes "
                         f"of data for shape {shape} of {dtype.name}")
    data = np.frombuffer(raw, dtype=dtype, count=expected // dtype.itemsize, offset=start)
    data = data.reshape(shape)
    return data.astype(dtype.newbyteorder("="))
