"""The proof of an import: qonnx's own executor against qnnfab's golden model.

:func:`check_against_qonnx` runs the QONNX model with ``qonnx.core.onnx_exec.execute_onnx`` on
the raw inputs that its input quantizer maps to the given codes
(:func:`qnnfab.model.qonnx_import.raw_inputs`), runs the imported network's golden model on the
codes, and counts the inputs whose classes agree; the raw scores must agree up to the last
layer's affine map (``meta["output_affine"]``): the largest ``|score - (scale·acc + offset)|``
is reported, also in accumulator steps (divided by ``scale``).
"""

from dataclasses import dataclass

import numpy as np

from qnnfab import random_net
from qnnfab.spec import golden

from .qonnx_import import QonnxImportError, load_qonnx, output_scores, raw_inputs

__all__ = ["QonnxCheck", "check_against_qonnx", "check_codes", "execute_qonnx"]


@dataclass
class QonnxCheck:
    """The result of :func:`check_against_qonnx`.

    Attributes
    ----------
    n : int, inputs checked
    agree : int, inputs whose class (argmax, first index on ties) is the same both ways
    ties : int, inputs where the classes differ but the executor's class has the golden
        model's top integer score too (an exact tie, which the executor's float sums break
        by rounding): both are an argmax of the same scores
    max_deviation : float, largest ``|qonnx score - (scale·acc + offset)|``
    max_deviation_steps : float, the same in accumulator steps (``/ scale``)
    qonnx_classes, golden_classes : ndarray (n,)
    source : str, where the inputs came from
    ambiguous : int, thresholds within float rounding of a quantizer boundary
        (``meta["ambiguous_thresholds"]``): where an input reaches one, the executor's float
        sums may round either way
    """
    n: int
    agree: int
    max_deviation: float
    max_deviation_steps: float
    qonnx_classes: np.ndarray
    golden_classes: np.ndarray
    source: str = ""
    ambiguous: int = 0
    ties: int = 0

    @property
    def ok(self):
        """All classes agree."""
        return self.agree == self.n

    @property
    def ok_up_to_ties(self):
        """Every class agrees or is an exact tie (:attr:`ties`)."""
        return self.agree + self.ties == self.n

    def line(self):
        """One line for the CLI."""
        return (f"qonnx executor vs qnnfab golden on {self.n} inputs ({self.source}): classes "
                f"agree on {self.agree}/{self.n}"
                + (f" ({self.ties} more are exact ties of the integer scores, broken the "
                   f"other way by the executor's float sums)" if self.ties else "")
                + "; largest score deviation after the last "
                f"layer's affine map {self.max_deviation:.3g} "
                f"({self.max_deviation_steps:.3g} accumulator steps)"
                + (f"; {self.ambiguous} thresholds lie within float rounding of a quantizer "
                   f"boundary, where the executor may round either way" if self.ambiguous
                   else ""))


def execute_qonnx(model, x, *, batch=256):
    """The output of a (cleaned) qonnx model for float inputs ``x`` ``(n, ...)``, by
    ``execute_onnx``, ``batch`` inputs at a time (the last batch padded)."""
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.change_batchsize import ChangeBatchSize
    from qonnx.transformation.infer_shapes import InferShapes
    x = np.asarray(x, dtype=np.float32)
    batch = max(1, min(batch, len(x)))
    m = ModelWrapper(model.model.SerializeToString())
    m = m.transform(ChangeBatchSize(batch)).transform(InferShapes())
    iname, oname = m.graph.input[0].name, m.graph.output[0].name
    out = []
    for start in range(0, len(x), batch):
        chunk = x[start:start + batch]
        n = len(chunk)
        if n < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[:1], batch - n, axis=0)])
        out.append(np.asarray(execute_onnx(m, {iname: chunk})[oname])[:n])
    return np.concatenate(out).reshape(len(x), -1)


def check_codes(network, n, *, data=None, seed=0):
    """``(codes, source)``: ``n`` input codes for the check, the first ``n`` test images of
    data set ``data`` (a :func:`qnnfab.model.data.load_dataset` name) or random valid codes."""
    if n < 1:
        raise ValueError(f"--check-vectors must be >= 1, not {n}")
    if data is None:
        rng = np.random.default_rng(seed)
        return random_net.random_inputs(rng, network, n), f"random codes, seed {seed}"
    from .data import load_dataset
    ds = load_dataset(data, seed=seed)
    if ds.n_features != network.input_features:
        raise ValueError(f"data set {ds.name!r} has {ds.n_features} features, the network "
                         f"takes {network.input_features}")
    if ds.input_bits > network.input_bits:
        raise ValueError(f"data set {ds.name!r} has {ds.input_bits}-bit codes, the network's "
                         f"input quantizer takes {network.input_bits}-bit codes")
    return np.asarray(ds.x_test[:n], dtype=np.int64), f"{ds.name} test split"


def check_against_qonnx(network, source, codes, *, input_source="", batch=256):
    """Compare the qonnx executor on ``source`` (the QONNX file or model the network was
    imported from) with the golden model on ``codes`` ``(n, input_features)``; returns a
    :class:`QonnxCheck`."""
    codes = golden.check_inputs(network, codes)
    if "output_affine" not in network.meta:
        raise QonnxImportError("network was not imported from QONNX (no meta output_affine)")
    model = load_qonnx(source)
    scores = execute_qonnx(model, raw_inputs(network, codes), batch=batch)
    trace = golden.forward(network, codes)
    if scores.shape != trace.scores.shape:
        raise QonnxImportError(f"qonnx output shape {scores.shape} != golden scores "
                               f"{trace.scores.shape}")
    q_classes = np.argmax(scores, axis=1)
    dev = float(np.max(np.abs(scores - output_scores(network, trace.scores)))) if len(codes) \
        else 0.0
    step = network.meta["output_affine"]["scale"]
    bad = q_classes != trace.classes
    ties = int(np.sum(trace.scores[bad, q_classes[bad]] == trace.scores[bad].max(axis=1)))
    return QonnxCheck(n=len(codes), agree=int(np.sum(q_classes == trace.classes)), ties=ties,
                      max_deviation=dev, max_deviation_steps=dev / step,
                      qonnx_classes=q_classes, golden_classes=trace.classes,
                      source=input_source,
                      ambiguous=int(network.meta.get("ambiguous_thresholds", 0)))
