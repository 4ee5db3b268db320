"""Test vectors for a network: its held-out data split if it records one, else random codes."""

from dataclasses import dataclass

import numpy as np

from qnnfab import random_net

__all__ = ["Vectors", "test_vectors"]


@dataclass
class Vectors:
    """Input codes ``(n, features)`` and, for a data set, their labels (None for random)."""
    codes: np.ndarray
    labels: "np.ndarray | None"
    source: str


def test_vectors(network, n=None, *, seed=0):
    """Up to ``n`` test vectors (all of the held-out split when ``n`` is None).

    A network trained by ``qnnfab train`` records its data set in ``meta["data"]``
    (``{"name": ..., "split_seed": ...}``); its held-out test split is used. Otherwise random
    codes from ``seed`` (``n`` defaults to 64 then).
    """
    if n is not None and n < 1:
        raise ValueError(f"--vectors must be >= 1, not {n}")
    data = network.meta.get("data") if isinstance(network.meta, dict) else None
    if data:
        from .data import load_dataset
        ds = load_dataset(data["name"], seed=data.get("split_seed", 0))
        codes, labels = ds.x_test, ds.y_test
        if codes.shape[1] != network.input_features:
            raise ValueError(f"data set {data['name']!r} has {codes.shape[1]} features, the "
                             f"network takes {network.input_features}")
        if n is not None:
            codes, labels = codes[:n], labels[:n]
        return Vectors(codes=np.asarray(codes, dtype=np.int64), labels=np.asarray(labels),
                       source=f"{data['name']} test split")
    rng = np.random.default_rng(seed)
    return Vectors(codes=random_net.random_inputs(rng, network, 64 if n is None else n),
                   labels=None, source=f"random (seed {seed})")
