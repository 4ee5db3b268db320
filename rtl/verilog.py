"""Verilog of a network's hardware."""

from amaranth.back import verilog

from .network import Network

__all__ = ["to_verilog"]


def to_verilog(network, folding=None, *, name="qnnfab_network"):
    """Verilog text of :class:`~qnnfab.rtl.network.Network` for ``network``.

    Ports: ``clk rst i__payload i__valid i__ready o__payload o__valid o__ready`` (see
    :class:`~qnnfab.rtl.network.Network` for the payload layouts).
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"name must be a Verilog identifier, not {name!r}")
    top = Network(network, folding)
    return verilog.convert(top, name=name, emit_src=False)
