"""The spec: what the hardware must compute, bit for bit, in numpy only.

* :mod:`qnnfab.spec.golden` — the integer forward pass of a network IR;
* :mod:`qnnfab.spec.learn_rule` — the integer on-chip learning rule.

Every other layer (``rtl/``, ``sim/``, ``boards/``, ``model/``) depends on these; they depend on
the core (:mod:`qnnfab.ir`, :mod:`qnnfab.numerics`) only: no torch, no Amaranth.
"""
