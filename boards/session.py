"""Host sessions with a built board over its UART: inference on test vectors, and on-chip
learning on a board built with ``--learn``. Each answer is checked against the golden model
(inference) or the integer learning rule (learning), and the session measures the frames per
second the serial link achieved, to set beside the chip's own figure from ``report.json``.

The functions take a ``port`` as :func:`qnnfab.boards.driver.infer` does (a device path, a
pyserial URL, or an open serial-like object), so they run against a real board or a model of
one (the tests use a golden-model stand-in).
"""

import dataclasses
import hashlib
import json
import os
import time

import numpy as np

from qnnfab import ir
from qnnfab.spec import golden

from . import driver, protocol

__all__ = ["BuildInfo", "load_build", "InferenceSession", "LearningSession", "run_inference",
           "run_learning", "load_words", "load_weights"]


@dataclasses.dataclass
class BuildInfo:
    """What a build folder's ``report.json`` says that a host session needs."""
    path: str
    board: str
    inferences_per_s: "float | None"
    baud: int
    learning: "dict | None"
    ir_sha256: "str | None"
    clock_mhz: "float | None" = None
    selftest: "dict | None" = None
    #: Where the layers keep their weights (None: all in block RAM) and the folding built.
    weights_in: "list | None" = None
    folding: "list | None" = None

    @property
    def needs_load(self):
        """The board keeps weights in SPRAM: load them (:func:`load_weights`) before the first
        inference after configuration."""
        return bool(self.weights_in) and "spram" in self.weights_in


def load_build(build_dir, network):
    """Read ``build_dir/report.json`` (a folder or the file itself); ValueError naming the file
    if it is missing or malformed, or if it was built from another network than ``network``."""
    path = build_dir if str(build_dir).endswith(".json") else os.path.join(build_dir,
                                                                           "report.json")
    try:
        with open(path, encoding="utf-8") as f:
            report = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no build report (give the folder `qnnfab build` "
                                f"wrote)") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not a build report ({exc})") from None
    if not isinstance(report, dict) or "board" not in report:
        raise ValueError(f"{path}: not a build report (no 'board' field)")
    want = (report.get("inputs") or {}).get("ir_sha256")
    have = hashlib.sha256(ir.to_bytes(network)).hexdigest()
    if want is not None and want != have:
        raise ValueError(f"{path}: this board was built from another network (ir_sha256 "
                         f"{want[:12]}…, the given network is {have[:12]}…)")
    uart = report.get("uart") or {}
    return BuildInfo(path=path, board=str(report["board"]),
                     inferences_per_s=report.get("inferences_per_s"),
                     baud=int(uart.get("baud", 115200)), learning=report.get("learning"),
                     ir_sha256=want, clock_mhz=report.get("clock_mhz"),
                     selftest=report.get("selftest"), weights_in=report.get("weights_in"),
                     folding=_folding_of(report.get("folding")))


def _folding_of(entry):
    if not isinstance(entry, list):
        return None
    try:
        return [(int(f["pe"]), int(f["simd"])) if isinstance(f, dict) else tuple(map(int, f))
                for f in entry]
    except (KeyError, TypeError, ValueError):
        return None


def load_words(network, build):
    """The 16-bit words a board built as ``build`` (a :class:`BuildInfo`) loads into its SPRAM:
    :meth:`qnnfab.rtl.network.Network.load_words` at the build's folding and placement."""
    from qnnfab.rtl.network import Network
    if not build.needs_load:
        return []
    if build.folding is None:
        raise ValueError(f"{build.path}: no folding in the report: cannot lay out the weights")
    return Network(network, build.folding, weights_in=build.weights_in).load_words()


def load_weights(port, network, build, *, baud=None, timeout=None, progress=None):
    """Send ``network``'s SPRAM weights to a board built as ``build`` (the 0x57 frame,
    :func:`qnnfab.boards.driver.load_weights`); ``progress(done, total)`` in bytes. Returns
    the seconds it took (0.0 and nothing sent when the board keeps no weights in SPRAM)."""
    words = load_words(network, build)
    if not words:
        return 0.0
    baud = build.baud if baud is None else baud
    with _opened(port, baud) as ser:
        return driver.load_weights(ser, words, baud=baud, timeout=timeout, progress=progress)


@dataclasses.dataclass
class InferenceSession:
    """The outcome of :func:`run_inference`.

    ``classes``/``scores``: the board's answers, ``golden_classes``/``golden_scores`` the
    golden model's; ``bit_exact``: per vector, the answer equals
    the golden model's; ``labels``: the data set's (None for random vectors); ``seconds``: wall
    time of the exchanges."""
    classes: np.ndarray
    scores: np.ndarray
    bit_exact: np.ndarray
    golden_classes: np.ndarray
    golden_scores: np.ndarray
    labels: "np.ndarray | None"
    seconds: float

    @property
    def frames_per_s(self):
        return len(self.classes) / self.seconds if self.seconds > 0 else float("inf")

    def accuracy(self, classes=None):
        """Fraction of labelled vectors classified right (None without labels)."""
        if self.labels is None or not len(self.labels):
            return None
        return float(np.mean((self.classes if classes is None else classes) == self.labels))


def run_inference(port, network, codes, labels=None, *, baud=115200, timeout=2.0,
                  on_answer=None):
    """Send each row of ``codes`` to the board (0x51 frames) and compare its answer with the
    golden model. ``on_answer(k, cls, same)`` is called after each vector. Returns an
    :class:`InferenceSession`; board errors (timeouts, malformed answers) propagate."""
    codes = np.asarray(codes, dtype=np.int64)
    trace = golden.forward(network, codes)
    fmt = protocol.FrameFormat.from_network(network)
    classes = np.zeros(len(codes), dtype=np.int64)
    scores = np.zeros((len(codes), fmt.n_outputs), dtype=np.int64)
    same = np.zeros(len(codes), dtype=bool)
    with _opened(port, baud) as ser:
        started = time.monotonic()
        for k, x in enumerate(codes):
            classes[k], scores[k] = driver.infer(ser, x, fmt=fmt, baud=baud, timeout=timeout)
            same[k] = (classes[k] == trace.classes[k]
                       and np.array_equal(scores[k], trace.scores[k]))
            if on_answer is not None:
                on_answer(k, int(classes[k]), bool(same[k]))
        seconds = time.monotonic() - started
    return InferenceSession(classes=classes, scores=scores, bit_exact=same,
                            golden_classes=np.asarray(trace.classes, dtype=np.int64),
                            golden_scores=np.asarray(trace.scores, dtype=np.int64),
                            labels=None if labels is None else np.asarray(labels),
                            seconds=seconds)


@dataclasses.dataclass
class LearningSession:
    """The outcome of :func:`run_learning`.

    ``agree``: per learning sample, the board's answer (class and scores before the update)
    equals the integer rule's; ``accuracy_before`` / ``accuracy_after``: the board's accuracy on
    the test vectors (0x51 frames, no update) before and after learning, with
    ``rule_accuracy_after`` the rule's own; ``test_agree``: test answers equal the rule's."""
    agree: np.ndarray
    first_mismatch: "str | None"
    accuracy_before: float
    accuracy_after: float
    rule_accuracy_before: float
    rule_accuracy_after: float
    test_agree: int
    test_total: int
    seconds: float

    @property
    def frames_per_s(self):
        frames = len(self.agree) + self.test_total
        return frames / self.seconds if self.seconds > 0 else float("inf")

    @property
    def all_agree(self):
        return bool(self.agree.all()) and self.test_agree == self.test_total


def learning_frame_format(network, rule):
    """The frame format of a learning board: the learner's scores are wider than the last
    layer's (the width :class:`~qnnfab.rtl.learner.OnlineLearner` gives them)."""
    from qnnfab import numerics
    last = network.layers[-1]
    bound = rule.score_bound(last.in_features, last.in_bits)
    return dataclasses.replace(protocol.FrameFormat.from_network(network),
                               acc_width=numerics.signed_width(-bound, bound))


def learning_rule_of(learning):
    """The :class:`~qnnfab.spec.learn_rule.LearnRule` and initial seed a learning build's
    report recorded (``report["learning"]``)."""
    from qnnfab.spec import learn_rule
    if not isinstance(learning, dict) or "rule" not in learning or "init_seed" not in learning:
        raise ValueError("the build report has no learning rule: build the board with "
                         "`qnnfab build --learn`")
    return learn_rule.LearnRule(**learning["rule"]), int(learning["init_seed"])


def run_learning(port, network, learning, train_codes, train_labels, test_codes, test_labels,
                 *, baud=115200, timeout=2.0, on_sample=None):
    """Drive a board built with ``--learn``: test accuracy before, then one 0x4C frame per
    labelled training sample (the board answers before it updates), then test accuracy after.
    Every answer is compared with the integer rule (:mod:`qnnfab.spec.learn_rule`) started
    from the weights the build used (``learning``: the report's ``learning`` entry).
    ``on_sample(k, same)`` is called after each sample. Returns a :class:`LearningSession`."""
    from qnnfab.sim.learn_sim import learner_features
    from qnnfab.spec import learn_rule as lr
    rule, seed = learning_rule_of(learning)
    last = network.layers[-1]
    state = lr.init_state(np.random.default_rng(seed), last.out_features, last.in_features,
                          rule)
    fmt = learning_frame_format(network, rule)
    train_codes = np.asarray(train_codes, dtype=np.int64)
    test_codes = np.asarray(test_codes, dtype=np.int64)
    feats = learner_features(network, train_codes)
    test_feats = learner_features(network, test_codes)
    test_labels = np.asarray(test_labels)
    agree = np.zeros(len(train_codes), dtype=bool)
    first = [None]

    def check(what, cls, scores, want):
        same = cls == want.cls and np.array_equal(scores, want.scores)
        if not same and first[0] is None:
            first[0] = (f"{what}: board class {cls} scores {scores.tolist()}, rule class "
                        f"{want.cls} scores {want.scores.tolist()}")
        return same

    def evaluate(ser, state, when):
        right = rule_right = same = 0
        for k, (x, f, y) in enumerate(zip(test_codes, test_feats, test_labels)):
            cls, scores = driver.infer(ser, x, fmt=fmt, baud=baud, timeout=timeout)
            want = lr.step(rule, state, f, int(y), last.in_bits, learn=False)
            same += check(f"test vector {k} {when} learning", cls, scores, want)
            right += cls == int(y)
            rule_right += want.cls == int(y)
        n = max(1, len(test_codes))
        return right / n, rule_right / n, same

    with _opened(port, baud) as ser:
        started = time.monotonic()
        before, rule_before, same_before = evaluate(ser, state, "before")
        for k, (x, f, y) in enumerate(zip(train_codes, feats, train_labels)):
            cls, scores = driver.learn(ser, x, int(y), fmt=fmt, baud=baud, timeout=timeout)
            want = lr.step(rule, state, f, int(y), last.in_bits)
            agree[k] = check(f"learning sample {k}", cls, scores, want)
            state = want.state
            if on_sample is not None:
                on_sample(k, bool(agree[k]))
        after, rule_after, same_after = evaluate(ser, state, "after")
        seconds = time.monotonic() - started
    return LearningSession(agree=agree, first_mismatch=first[0], accuracy_before=before,
                           accuracy_after=after, rule_accuracy_before=rule_before,
                           rule_accuracy_after=rule_after,
                           test_agree=same_before + same_after,
                           test_total=2 * len(test_codes), seconds=seconds)


class _opened:
    """Open ``port`` once for a whole session (a path or URL), or use an open object as is."""

    def __init__(self, port, baud):
        self.port, self.baud, self.own = port, baud, isinstance(port, (str, os.PathLike))

    def __enter__(self):
        if self.own:
            self.ser = driver.open_port(os.fspath(self.port), baud=self.baud, timeout=0.1)
        else:
            self.ser = self.port
        return self.ser

    def __exit__(self, *exc):
        if self.own:
            self.ser.close()
