"""Host side: run one inference on a board over its UART (pyserial), frames as in
:mod:`qnnfab.boards.protocol`."""

import os
import time

import numpy as np

from .protocol import (LOAD_ACK, RESPONSE_SYNC, SELFTEST_LENGTH, SELFTEST_RESPONSE_SYNC,
                       SELFTEST_SYNC, FrameFormat, ProtocolError, decode_selftest_response,
                       encode_load)

__all__ = ["infer", "learn", "selftest", "load_weights", "open_port", "BoardTimeout",
           "ProtocolError"]


class BoardTimeout(TimeoutError):
    """The board did not answer in time."""


def open_port(port, *, baud, timeout):
    """Open serial ``port`` (8N1); FileNotFoundError with the name if there is no such port."""
    import serial
    try:
        return serial.Serial(port, baudrate=baud, bytesize=8, parity="N", stopbits=1,
                             timeout=timeout)
    except serial.SerialException as exc:
        if isinstance(port, str) and not port.startswith(("socket://", "loop://", "rfc2217://")) \
                and not os.path.exists(port):
            raise FileNotFoundError(f"serial port {port} does not exist (is the board plugged "
                                    f"in? list ports with `python -m serial.tools.list_ports`)"
                                    ) from None
        raise OSError(f"serial port {port}: cannot open ({exc})") from None


def _read_response(ser, fmt, timeout, *, sync=RESPONSE_SYNC, length=None, decode=None):
    """Skip bytes up to the response sync byte, then read the rest of the response."""
    deadline = time.monotonic() + timeout
    skipped = 0
    while True:
        if time.monotonic() > deadline:
            raise BoardTimeout(f"no response from the board within {timeout} s "
                               f"({skipped} stray bytes skipped)")
        byte = ser.read(1)
        if not byte:
            continue
        if byte[0] == sync:
            break
        skipped += 1
    length = fmt.response_length if length is None else length
    data = bytearray(byte)
    while len(data) < length:
        if time.monotonic() > deadline:
            raise BoardTimeout(f"incomplete response from the board within {timeout} s: got "
                               f"{len(data)} of {length} bytes ({bytes(data).hex(' ')})")
        data += ser.read(length - len(data))
    return (fmt.decode_response if decode is None else decode)(bytes(data))


def infer(port, codes, *, network=None, fmt=None, baud=115200, timeout=2.0):
    """Send one input vector to the board, return ``(cls, scores)``.

    Parameters
    ----------
    port : str (device path or pyserial URL) or an open serial-like object with ``write``,
        ``read``, ``reset_input_buffer`` (it is not closed then)
    codes : sequence of ints, ``input_features`` codes
    network : qnnfab.ir.Network, or ``fmt``: the :class:`FrameFormat` (sizes of the frames)
    baud : int
    timeout : float, seconds to wait for the whole response

    Returns ``(cls: int, scores: np.ndarray of int64)``. Raises FileNotFoundError if the port
    does not exist, :class:`BoardTimeout` if the board does not answer, and
    :class:`~qnnfab.boards.protocol.ProtocolError` on a malformed answer.
    """
    if fmt is None:
        if network is None:
            raise TypeError("infer: pass network= (the IR) or fmt= (a FrameFormat)")
        fmt = FrameFormat.from_network(network)
    return _exchange(port, fmt.encode_request(np.asarray(codes)), fmt, baud, timeout)


def learn(port, codes, label, *, fmt, baud=115200, timeout=2.0):
    """Send one labelled input vector to a board built with ``--learn``; the board answers
    the class and scores before the update and then updates its last layer. Returns
    ``(cls, scores)``; ``fmt`` is the board's :class:`FrameFormat` (its ``acc_width`` that of
    the learner's scores, as ``BoardTop(...).frame`` gives). Errors as :func:`infer`."""
    return _exchange(port, fmt.encode_learn_request(np.asarray(codes), label), fmt, baud,
                     timeout)


def selftest(port, *, baud=115200, timeout=10.0):
    """Ask a board built with ``--selftest N`` to run its stored vectors; returns
    ``(n, correct, cycles)`` (:func:`~qnnfab.boards.protocol.decode_selftest_response`).
    Errors as :func:`infer`; a board without a self-test does not answer (BoardTimeout)."""
    return _exchange(port, bytes([SELFTEST_SYNC]), None, baud, timeout,
                     sync=SELFTEST_RESPONSE_SYNC, length=SELFTEST_LENGTH,
                     decode=decode_selftest_response)


#: Bytes written per chunk of a weight load (progress is reported after each).
LOAD_CHUNK = 512


def load_weights(port, words, *, baud=115200, timeout=None, progress=None):
    """Write the weights of a board whose layers keep them in SPRAM (the 0x57 frame,
    :mod:`~qnnfab.boards.protocol`): ``words``, the network's 16-bit load words
    (:meth:`qnnfab.rtl.network.Network.load_words`), and wait for the board's ack byte.

    ``timeout``: seconds for the whole exchange (default: twice the frame's time on the line
    plus two seconds). ``progress(done, total)``: bytes written so far, after each chunk of
    :data:`LOAD_CHUNK` bytes. Returns the seconds it took. Raises :class:`BoardTimeout` when
    no ack comes (a board built without SPRAM layers ignores the frame)."""
    frame = encode_load(words)
    if timeout is None:
        timeout = 2.0 + 2 * len(frame) * 10 / baud
    own = isinstance(port, (str, os.PathLike))
    ser = open_port(os.fspath(port), baud=baud, timeout=0.1) if own else port
    started = time.monotonic()
    try:
        ser.reset_input_buffer()
        for k in range(0, len(frame), LOAD_CHUNK):
            ser.write(frame[k:k + LOAD_CHUNK])
            if progress is not None:
                progress(min(k + LOAD_CHUNK, len(frame)), len(frame))
        if hasattr(ser, "flush"):
            ser.flush()
        deadline = started + timeout
        skipped = 0
        while True:
            if time.monotonic() > deadline:
                raise BoardTimeout(f"no ack (0x{LOAD_ACK:02x}) to the weight load from the board "
                                   f"within {timeout:.1f} s ({skipped} stray bytes skipped; was "
                                   f"it built with its weights in SPRAM?)")
            byte = ser.read(1)
            if not byte:
                continue
            if byte[0] == LOAD_ACK:
                return time.monotonic() - started
            skipped += 1
    finally:
        if own:
            ser.close()


def _exchange(port, request, fmt, baud, timeout, **read):
    own = isinstance(port, (str, os.PathLike))
    ser = open_port(os.fspath(port), baud=baud, timeout=min(timeout, 0.1)) if own else port
    try:
        ser.reset_input_buffer()
        ser.write(request)
        if hasattr(ser, "flush"):
            ser.flush()
        return _read_response(ser, fmt, timeout, **read)
    finally:
        if own:
            ser.close()

