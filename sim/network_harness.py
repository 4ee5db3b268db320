"""What every harness that drives a network's Verilog shares: the top-level module's name and
how long the hardware may keep an output waiting before a run counts as stuck.

Used by the cocotb path (:func:`qnnfab.sim.runner.simulate`), the bulk Verilator path
(:mod:`qnnfab.sim.bulk_network`) and the gate-level flow (through the runner's re-exports).
"""

__all__ = ["TOPLEVEL", "stall_limit"]

#: Name of the generated top-level Verilog module of a network
#: (``qnnfab.rtl.verilog.to_verilog(..., name=TOPLEVEL)``).
TOPLEVEL = "qnnfab_network"


def stall_limit(network, ready_probability, valid_probability):
    """Cycles without an output after which a run of ``network`` counts as stuck: longer than
    a fully serial network could take (one MAC per cycle per layer, all layers in a row),
    with a wide margin, scaled up for random stalls on either handshake."""
    serial = sum(max(layer.macs, layer.in_size) for layer in network.layers)
    return int((4 * serial + 10_000) / min(ready_probability, valid_probability))
