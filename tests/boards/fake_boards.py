"""Serial-like stand-ins for built boards, answering as a correct board would: inference frames
from the golden model, learning frames from the integer learning rule. ``corrupt_at``: the
answer to that request (0-based) gets a wrong score, to see that a host notices."""

import numpy as np

from qnnfab.boards import protocol
from qnnfab.spec import golden
from qnnfab.spec import learn_rule as lr


class FakeBoard:
    """A board built without ``--learn``."""

    def __init__(self, net, *, noise=b"", corrupt=False, corrupt_at=None):
        self.net, self.fmt = net, protocol.FrameFormat.from_network(net)
        self.noise, self.corrupt, self.corrupt_at = noise, corrupt, corrupt_at
        self.out = bytearray()
        self.requests = []

    def reset_input_buffer(self):
        self.out.clear()

    def close(self):
        pass

    def answer(self, data):
        assert data[0] == protocol.REQUEST_SYNC
        codes = np.frombuffer(bytes(data[1:]), dtype=np.uint8).astype(np.int64)
        trace = golden.forward(self.net, codes[None, :])
        return int(trace.classes[0]), trace.scores[0]

    def write(self, data):
        self.requests.append(bytes(data))
        cls, scores = self.answer(bytes(data))
        scores = np.array(scores, dtype=np.int64)
        if self.corrupt_at == len(self.requests) - 1:
            scores[0] += 1
        resp = bytearray(self.fmt.encode_response(cls, scores))
        if self.corrupt:
            resp[1] = 0xEE
        self.out += self.noise + resp

    def read(self, n):
        data, self.out[:] = bytes(self.out[:n]), self.out[n:]
        return data


class FakeLearningBoard(FakeBoard):
    """A board built with ``--learn``: the frozen layers, then the last layer as the integer
    rule from ``init`` (a LearnState); 0x4C frames update it, 0x51 frames do not."""

    def __init__(self, net, rule, init, fmt, **kwargs):
        super().__init__(net, **kwargs)
        self.rule, self.state, self.fmt = rule, init, fmt

    def answer(self, data):
        learn = data[0] == protocol.LEARN_SYNC
        label = data[1] if learn else 0
        codes = np.frombuffer(data[2 if learn else 1:], dtype=np.uint8).astype(np.int64)
        x = codes[None, :]
        for layer in self.net.layers[:-1]:
            _, x = golden.layer_forward(layer, x)
        r = lr.step(self.rule, self.state, x[0], int(label), self.net.layers[-1].in_bits,
                    learn=learn)
        self.state = r.state
        return r.cls, r.scores
