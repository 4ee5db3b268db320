"""Verilog of a network's hardware."""

from amaranth.back import verilog

from .network import Network

__all__ = ["to_verilog"]


def to_verilog(network, folding=None, *, name="qnnfab_network", style="folded",
               weights_in="ebr"):
    """Verilog text of :class:`~qnnfab.rtl.network.Network` for ``network`` (``style``: one
    style per layer, or ``"folded"``/``"unrolled"``, see
    :func:`~qnnfab.rtl.network.resolve_styles`; ``weights_in``: ``"ebr"``, ``"spram"`` or one
    per layer, :func:`~qnnfab.rtl.network.resolve_weights_in`: SPRAM layers are memories
    that start with their weights, and the module gets the ``load__addr``, ``load__data``,
    ``load__en`` ports).

    Ports: ``clk rst i__payload i__valid i__ready o__payload o__valid o__ready`` (see
    :class:`~qnnfab.rtl.network.Network` for the payload layouts).
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"name must be a Verilog identifier, not {name!r}")
    top = Network(network, folding, style=style, weights_in=weights_in)
    return verilog.convert(top, name=name, emit_src=False)
