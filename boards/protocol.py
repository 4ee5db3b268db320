"""The UART frame format between a host and :class:`qnnfab.boards.top.BoardTop`.

Serial settings: 8N1, the board's baud rate (115200 by default), no flow control.

Request (host → board), ``1 + input_features`` bytes::

    0x51, code[0], code[1], ..., code[input_features - 1]

one input code per byte (``0 .. 2**input_bits - 1``).

Response (board → host), ``2 + n_outputs * score_bytes`` bytes::

    0x52, class, score[0], ..., score[n_outputs - 1]

``class`` is the argmax of the scores (first index on ties). Each score is the last layer's
accumulator as little-endian two's complement in ``score_bytes = ceil(acc_width / 8)`` bytes
(sign-extended to whole bytes).

Learning request (host → board), for a board built with ``qnnfab build --learn`` (a
:class:`~qnnfab.rtl.learner.LearningNetwork`: the last layer learns on chip),
``2 + input_features`` bytes::

    0x4C, label, code[0], ..., code[input_features - 1]

The answer is the same response frame: the class and scores *before* the sample's weight
update. A label of ``n_outputs`` or more aborts the frame (error LED). A board without
learning ignores 0x4C outside a frame.

Self-test request (host → board), for a board built with ``qnnfab build --selftest N``
(test vectors stored on chip, :class:`~qnnfab.boards.selftest.SelfTest`), one byte::

    0x54

The board runs its N stored vectors through the network back to back and answers
(:data:`SELFTEST_LENGTH` bytes)::

    0x53, n (2 bytes), correct (2 bytes), cycles (4 bytes)

little-endian unsigned: the vectors run, the outputs whose class equals the stored label, and
the cycles from the first vector offered to the last output taken. A board without a self-test
ignores 0x54.

Weight load request (host → board), for a board whose weights are in SPRAM (``qnnfab build
--weights-in spram|auto``; the UP5K's SPRAMs start empty after configuration), ``1 + 2·W``
bytes::

    0x57, word[0] (2 bytes), ..., word[W - 1] (2 bytes)

exactly the ``W`` 16-bit words of the network's load address space, little-endian
(:meth:`qnnfab.rtl.network.Network.load_words`; layout in :attr:`~qnnfab.rtl.network.Network.
spram_layout`: the SPRAM layers in order, each block-major). Every byte is data (none can be
refused); the board answers the single byte :data:`LOAD_ACK` after the last one, and a gap of
more than :data:`TIMEOUT_BYTES` byte times aborts the frame (error LED, no answer; the words
written so far stay written: send the whole frame again). A board without SPRAM layers
ignores 0x57. Send it before the first inference (``qnnfab run`` does); the answers before a
complete load are wrong.

Robustness (the board never wedges on garbage):

- Outside a frame, every byte but the sync bytes (0x51; 0x4C, 0x54, 0x57 on boards that take
  them) is ignored.
- Inside a frame, a byte above ``2**input_bits - 1`` aborts the frame (the error LED lights);
  if that byte is 0x51 a new frame starts with it. (For ``input_bits`` >= 7, 0x51 is a valid
  code and is read as data: the timeout below resynchronizes instead.)
- A gap of more than :data:`TIMEOUT_BYTES` byte times between two bytes of a frame aborts it.
- Bytes arriving while the board computes or answers are dropped: a host waits for the answer
  (or its own timeout) before the next request.
- A framing error (stop bit low, e.g. a break) drops that byte; the receiver waits for the line
  to go idle.
"""

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["REQUEST_SYNC", "LEARN_SYNC", "RESPONSE_SYNC", "SELFTEST_SYNC",
           "SELFTEST_RESPONSE_SYNC", "SELFTEST_LENGTH", "TIMEOUT_BYTES", "FrameFormat",
           "ProtocolError", "encode_selftest_response", "decode_selftest_response",
           "LOAD_SYNC", "LOAD_ACK", "encode_load"]

REQUEST_SYNC = 0x51
#: First byte of a learning request (a labelled sample).
LEARN_SYNC = 0x4C
RESPONSE_SYNC = 0x52
#: The self-test request (one byte) and the first byte of its answer.
SELFTEST_SYNC = 0x54
SELFTEST_RESPONSE_SYNC = 0x53
#: Bytes of the self-test answer.
SELFTEST_LENGTH = 9
#: First byte of a weight load request, and the board's one-byte answer to a complete one.
LOAD_SYNC = 0x57
LOAD_ACK = 0x41
#: Byte times of silence after which the board drops a half-received frame.
TIMEOUT_BYTES = 16


class ProtocolError(ValueError):
    """A response from the board does not follow the frame format."""


@dataclass(frozen=True)
class FrameFormat:
    """The sizes a frame depends on; :meth:`from_network` reads them from an IR network.

    Attributes
    ----------
    input_features : int
    input_bits : int
    n_outputs : int, at most 256 (the class is one byte)
    acc_width : int, bits of each score (signed)
    """
    input_features: int
    input_bits: int
    n_outputs: int
    acc_width: int

    def __post_init__(self):
        for name in ("input_features", "input_bits", "n_outputs", "acc_width"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        if self.input_bits > 8:
            raise ValueError(f"input_bits must be at most 8 (one code per byte), "
                             f"not {self.input_bits}")
        if self.n_outputs > 256:
            raise ValueError(f"n_outputs must be at most 256 (the class is one byte), "
                             f"not {self.n_outputs}")

    @classmethod
    def from_network(cls, network):
        last = network.layers[-1]
        return cls(input_features=int(network.input_features),
                   input_bits=int(network.input_bits), n_outputs=int(last.out_features),
                   acc_width=int(last.acc_width))

    @property
    def max_code(self):
        return (1 << self.input_bits) - 1

    @property
    def score_bytes(self):
        return math.ceil(self.acc_width / 8)

    @property
    def request_length(self):
        return 1 + self.input_features

    @property
    def response_length(self):
        return 2 + self.n_outputs * self.score_bytes

    def encode_request(self, codes):
        """The request bytes for one input vector of codes."""
        codes = np.asarray(codes)
        if codes.shape != (self.input_features,):
            raise ValueError(f"codes: expected shape ({self.input_features},), got {codes.shape}")
        if not np.issubdtype(codes.dtype, np.integer):
            raise ValueError(f"codes: expected integer codes, got dtype {codes.dtype}")
        if codes.size and (codes.min() < 0 or codes.max() > self.max_code):
            bad = int(np.argwhere((codes < 0) | (codes > self.max_code))[0, 0])
            raise ValueError(f"codes: must lie in 0..{self.max_code} ({self.input_bits} bits), "
                             f"got {int(codes[bad])} at index {bad}")
        return bytes([REQUEST_SYNC]) + bytes(int(c) for c in codes)

    def encode_learn_request(self, codes, label):
        """The learning request bytes for one labelled input vector."""
        label = int(label)
        if not 0 <= label < self.n_outputs:
            raise ValueError(f"label: expected 0..{self.n_outputs - 1}, got {label}")
        return bytes([LEARN_SYNC, label]) + self.encode_request(codes)[1:]

    def encode_response(self, cls, scores):
        """The response bytes the board sends for ``cls`` and ``scores`` (what tests expect)."""
        scores = [int(s) for s in scores]
        if len(scores) != self.n_outputs:
            raise ValueError(f"scores: expected {self.n_outputs}, got {len(scores)}")
        if not 0 <= int(cls) < self.n_outputs:
            raise ValueError(f"cls: expected 0..{self.n_outputs - 1}, got {cls}")
        out = bytearray([RESPONSE_SYNC, int(cls)])
        lo, hi = -(1 << (self.acc_width - 1)), (1 << (self.acc_width - 1)) - 1
        for k, s in enumerate(scores):
            if not lo <= s <= hi:
                raise ValueError(f"scores[{k}]: {s} does not fit {self.acc_width} signed bits")
            out += s.to_bytes(self.score_bytes, "little", signed=True)
        return bytes(out)

    def decode_response(self, data):
        """``(cls, scores)`` from the response bytes; :class:`ProtocolError` if malformed."""
        data = bytes(data)
        if len(data) != self.response_length:
            raise ProtocolError(f"response: expected {self.response_length} bytes, got "
                                f"{len(data)}: {data.hex(' ')}")
        if data[0] != RESPONSE_SYNC:
            raise ProtocolError(f"response: expected first byte 0x{RESPONSE_SYNC:02x}, got "
                                f"0x{data[0]:02x}")
        cls = data[1]
        if cls >= self.n_outputs:
            raise ProtocolError(f"response: class {cls} out of range 0..{self.n_outputs - 1}")
        nb = self.score_bytes
        scores = np.array([int.from_bytes(data[2 + k * nb:2 + (k + 1) * nb], "little",
                                          signed=True) for k in range(self.n_outputs)],
                          dtype=np.int64)
        return int(cls), scores


def encode_selftest_response(n, correct, cycles):
    """The self-test answer bytes (what a board sends; tests expect it)."""
    return (bytes([SELFTEST_RESPONSE_SYNC]) + int(n).to_bytes(2, "little")
            + int(correct).to_bytes(2, "little") + int(cycles).to_bytes(4, "little"))


def decode_selftest_response(data):
    """``(n, correct, cycles)`` from the self-test answer; :class:`ProtocolError` if
    malformed."""
    data = bytes(data)
    if len(data) != SELFTEST_LENGTH or data[0] != SELFTEST_RESPONSE_SYNC:
        raise ProtocolError(f"self-test answer: expected {SELFTEST_LENGTH} bytes starting "
                            f"0x{SELFTEST_RESPONSE_SYNC:02x}, got {data.hex(' ')}")
    n = int.from_bytes(data[1:3], "little")
    correct = int.from_bytes(data[3:5], "little")
    if correct > n:
        raise ProtocolError(f"self-test answer: {correct} correct of {n} vectors")
    return n, correct, int.from_bytes(data[5:9], "little")


def encode_load(words):
    """The weight load request bytes for ``words``, 16-bit words (``0x57``, then each word
    little-endian)."""
    out = bytearray([LOAD_SYNC])
    for k, w in enumerate(words):
        w = int(w)
        if not 0 <= w <= 0xFFFF:
            raise ValueError(f"words[{k}]: {w} is not a 16-bit word")
        out += w.to_bytes(2, "little")
    return bytes(out)
