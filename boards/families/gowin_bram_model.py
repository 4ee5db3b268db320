"""Behavioural Gowin block RAMs (BSRAM) for gate-level simulation: Yosys ships ``SP``,
``SPX9``, ``SDPB``, ``SDPX9B``, ``DPB`` and ``DPX9B`` (what its ``share/gowin/brams_map.v``
instantiates) only as black boxes (``share/gowin/cells_sim.v``, ``cells_xtra_gw1n.v``).
:func:`bsram_models` writes them; :func:`check_bsram` refuses a netlist that sets what the
models do not implement.

What the models implement (Gowin UG285, and what Yosys' ``share/gowin/brams_map.v`` asks of
them):

* storage: 2048 units of 9 bits (x9 primitives) or 2048 bytes (the others); ``INIT_RAM_00`` ..
  ``INIT_RAM_3F`` hold 32 units each (288 bits x9, 256 bits x8), unit ``32 * row + i`` at
  bits ``i * 9`` (``i * 8``);
* widths: ``BIT_WIDTH`` 1, 2, 4, 8, 16, 32 (x8) and 9, 18, 36 (x9). An entry narrower than a
  unit is bits ``AD[2:0]`` (low bits of the width cleared) of unit ``AD[13:3]``; a unit-wide
  entry is unit ``AD[13:3]``; a two-unit entry is units ``{AD[13:4], 0}`` (low) and
  ``{AD[13:4], 1}``, with ``AD[1:0]`` the byte enables of a write; a four-unit entry is units
  ``{AD[13:5], k}``, with ``AD[3:0]`` the byte enables;
* ``CE`` clocks a port (``SDPB``: ``CEA`` is the write enable of port A, port B reads;
  ``DPB``: two read-write ports, ``WREA``/``WREB``); ``BLKSEL`` must equal ``BLK_SEL``;
  ``WRITE_MODE`` 0 (the output keeps its value during a write), 1 (write-through: the new
  data) and 2 (read-before-write: the old data); ``READ_MODE`` 0 (bypass: data one
  cycle after the address) and 1 (pipeline: through a second register enabled by ``OCE``);
  ``RESET_MODE`` ``"SYNC"`` (not gated by ``CE``, as Yosys' ``rdsrst zero ungated``) and
  ``"ASYNC"``: both output registers reset to 0.

Checked against memories of every width and the networks' weight memories in
``tests/boards/test_gowin.py``.
"""

import re

__all__ = ["BSRAM_CELLS", "bsram_models", "check_bsram"]

#: Primitive → (unit bits, data bits of a port, port suffixes, kind: single / semi-dual /
#: dual port).
_PRIMS = {
    "SP": (8, 32, ("",), "sp"),
    "SPX9": (9, 36, ("",), "sp"),
    "SDPB": (8, 32, ("A", "B"), "sdp"),
    "SDPX9B": (9, 36, ("A", "B"), "sdp"),
    "DPB": (8, 16, ("A", "B"), "dp"),
    "DPX9B": (9, 18, ("A", "B"), "dp"),
}
#: The block RAM cells of the Gowin netlists Yosys writes.
BSRAM_CELLS = tuple(_PRIMS)
_WIDTHS = {8: (1, 2, 4, 8, 16, 32), 9: (9, 18, 36)}

_FUNCS = """
  // The entry of width w at address ad (see qnnfab.boards.families.gowin_bram_model).
  function [{dw}:0] read_word(input [13:0] ad, input integer w);
    reg [{u}:0] unit;
    begin
      unit = mem[ad[13:3]];
      if (w < {ub})
        read_word = (unit >> (ad[2:0] & ~(w - 1))) & ((1 << w) - 1);
      else if (w == {ub})
        read_word = unit;
      else if (w == 2 * {ub})
        read_word = {{mem[{{ad[13:4], 1'b1}}], mem[{{ad[13:4], 1'b0}}]}};
      else
        read_word = {{mem[{{ad[13:5], 2'd3}}], mem[{{ad[13:5], 2'd2}}],
                     mem[{{ad[13:5], 2'd1}}], mem[{{ad[13:5], 2'd0}}]}};
    end
  endfunction
  // The entry as it reads after writing data with the byte enables of ad.
  function [{dw}:0] merged(input [13:0] ad, input integer w, input [{dw}:0] data);
    reg [{dw}:0] old;
    integer k;
    begin
      old = read_word(ad, w);
      merged = old;
      if (w <= {ub})
        merged = data & ((1 << w) - 1);
      else if (w == 2 * {ub}) begin
        for (k = 0; k < 2; k = k + 1)
          if (ad[k]) merged[k * {ub} +: {ub}] = data[k * {ub} +: {ub}];
      end else begin
        for (k = 0; k < 4; k = k + 1)
          if (ad[k]) merged[k * {ub} +: {ub}] = data[k * {ub} +: {ub}];
      end
    end
  endfunction
  task automatic write_word(input [13:0] ad, input integer w, input [{dw}:0] data);
    reg [{u}:0] unit;
    reg [{u}:0] mask;
    integer k;
    begin
      if (w < {ub}) begin
        mask = ((1 << w) - 1) << (ad[2:0] & ~(w - 1));
        unit = mem[ad[13:3]];
        mem[ad[13:3]] <= (unit & ~mask) | ((data << (ad[2:0] & ~(w - 1))) & mask);
      end else if (w == {ub})
        mem[ad[13:3]] <= data[{u}:0];
      else if (w == 2 * {ub}) begin
        for (k = 0; k < 2; k = k + 1)
          if (ad[k]) mem[{{ad[13:4], k[0]}}] <= data[k * {ub} +: {ub}];
      end else begin
        for (k = 0; k < 4; k = k + 1)
          if (ad[k]) mem[{{ad[13:5], k[1:0]}}] <= data[k * {ub} +: {ub}];
      end
    end
  endtask
"""

# One port: {p} the port suffix ("" / "A" / "B"), {w} its width parameter, {rm} its read mode
# parameter, {wm} its write mode (or None: a read-only port), {we} its write enable, {oce}.
_PORT = """
  // -- port {p} --
  wire ce_{n} = {ce} & (BLKSEL{p} == {blk});
  wire we_{n} = ce_{n} & {we};
  reg [{dw}:0] do_{n} = 0;
  reg [{dw}:0] q_{n} = 0;
  task automatic access_{n};
    begin
      if (ce_{n}) begin
        if (!we_{n} || {wm} == 2)
          do_{n} <= {rd};
        else if ({wm} == 1)
          do_{n} <= merged(AD{p}, {w}, DI{pi});
        if (we_{n})
          write_word(AD{p}, {w}, DI{pi});
      end
    end
  endtask
  generate
    if (RESET_MODE == "ASYNC") begin : reset_{n}
      always @(posedge CLK{p} or posedge RESET{p})
        if (RESET{p}) begin
          do_{n} <= 0;
          q_{n} <= 0;
        end else begin
          access_{n};
          if ({oce}) q_{n} <= do_{n};
        end
    end else begin : reset_{n}
      always @(posedge CLK{p})
        if (RESET{p}) begin
          do_{n} <= 0;
          q_{n} <= 0;
        end else begin
          access_{n};
          if ({oce}) q_{n} <= do_{n};
        end
    end
  endgenerate
"""


def _module(prim):
    unit, data, ports, kind = _PRIMS[prim]
    dw, u = data - 1, unit - 1
    x9 = unit == 9
    row_bits = 32 * unit
    params = ['  parameter RESET_MODE = "SYNC";']
    params += [f"  parameter [{row_bits - 1}:0] INIT_RAM_{i:02X} = {row_bits}'h0;"
               for i in range(64)]
    decl, body = [], []
    if kind == "sp":
        params += ["  parameter READ_MODE = 1'b0;", "  parameter [1:0] WRITE_MODE = 2'b00;",
                   f"  parameter BIT_WIDTH = {data};", "  parameter [2:0] BLK_SEL = 3'b000;"]
        decl = [f"  output [{dw}:0] DO;", f"  input [{dw}:0] DI;", "  input [2:0] BLKSEL;",
                "  input [13:0] AD;", "  input WRE, CLK, CE, OCE, RESET;"]
        body.append(_PORT.format(p="", n="a", pi="", dw=dw, ce="CE", blk="BLK_SEL",
                                 we="WRE", wm="WRITE_MODE", w="BIT_WIDTH",
                                 rd="read_word(AD, BIT_WIDTH)", oce="OCE"))
        body.append("  assign DO = READ_MODE ? q_a : do_a;")
        header = "DO, DI, BLKSEL, AD, WRE, CLK, CE, OCE, RESET"
    elif kind == "sdp":
        params += ["  parameter READ_MODE = 1'b0;",
                   f"  parameter BIT_WIDTH_0 = {data};", f"  parameter BIT_WIDTH_1 = {data};",
                   "  parameter [2:0] BLK_SEL_0 = 3'b000;", "  parameter [2:0] BLK_SEL_1 = 3'b000;"]
        decl = [f"  output [{dw}:0] DO;", f"  input [{dw}:0] DI;",
                "  input [2:0] BLKSELA, BLKSELB;", "  input [13:0] ADA, ADB;",
                "  input CLKA, CLKB, CEA, CEB, OCE, RESETA, RESETB;"]
        # Port A writes (CEA is its write enable), port B reads.
        body.append(_PORT.format(p="A", n="a", pi="", dw=dw, ce="CEA", blk="BLK_SEL_0",
                                 we="1'b1", wm="0", w="BIT_WIDTH_0",
                                 rd="read_word(ADA, BIT_WIDTH_0)", oce="1'b0"))
        body.append(_PORT.format(p="B", n="b", pi="", dw=dw, ce="CEB", blk="BLK_SEL_1",
                                 we="1'b0", wm="0", w="BIT_WIDTH_1",
                                 rd="read_word(ADB, BIT_WIDTH_1)", oce="OCE"))
        body.append("  assign DO = READ_MODE ? q_b : do_b;")
        header = "DO, DI, BLKSELA, BLKSELB, ADA, ADB, CLKA, CLKB, CEA, CEB, OCE, RESETA, RESETB"
    else:
        params += ["  parameter READ_MODE0 = 1'b0;", "  parameter READ_MODE1 = 1'b0;",
                   "  parameter [1:0] WRITE_MODE0 = 2'b00;",
                   "  parameter [1:0] WRITE_MODE1 = 2'b00;",
                   f"  parameter BIT_WIDTH_0 = {data};", f"  parameter BIT_WIDTH_1 = {data};",
                   "  parameter [2:0] BLK_SEL_0 = 3'b000;", "  parameter [2:0] BLK_SEL_1 = 3'b000;"]
        decl = [f"  output [{dw}:0] DOA, DOB;", f"  input [{dw}:0] DIA, DIB;",
                "  input [2:0] BLKSELA, BLKSELB;", "  input [13:0] ADA, ADB;",
                "  input CLKA, CLKB, CEA, CEB, OCEA, OCEB, RESETA, RESETB, WREA, WREB;"]
        for p, k in (("A", 0), ("B", 1)):
            body.append(_PORT.format(p=p, n=p.lower(), pi=p, dw=dw, ce=f"CE{p}",
                                     blk=f"BLK_SEL_{k}", we=f"WRE{p}", wm=f"WRITE_MODE{k}",
                                     w=f"BIT_WIDTH_{k}", rd=f"read_word(AD{p}, BIT_WIDTH_{k})",
                                     oce=f"OCE{p}"))
        body += ["  assign DOA = READ_MODE0 ? q_a : do_a;",
                 "  assign DOB = READ_MODE1 ? q_b : do_b;"]
        header = ("DOA, DOB, DIA, DIB, BLKSELA, BLKSELB, ADA, ADB, WREA, WREB, CLKA, CLKB, "
                  "CEA, CEB, OCEA, OCEB, RESETA, RESETB")
    init = [f"  reg [{u}:0] mem [0:2047];", "  integer i;", "  initial begin"]
    for row in range(64):
        init.append(f"    for (i = 0; i < 32; i = i + 1) mem[{row * 32} + i] = "
                    f"INIT_RAM_{row:02X}[i * {unit} +: {unit}];")
    init.append("  end")
    funcs = _FUNCS.format(dw=dw, u=u, ub=unit)
    assert x9 == (unit == 9)
    return "\n".join([f"module {prim}({header});", *params, *decl, *init, funcs, *body,
                      "endmodule", ""])


def bsram_models():
    """Verilog of behavioural ``SP``, ``SPX9``, ``SDPB``, ``SDPX9B``, ``DPB`` and ``DPX9B``
    (Gowin block RAMs) for netlist simulations; see the module docstring for what they
    cover."""
    return "\n".join(["// Behavioural Gowin BSRAM primitives for gate-level simulation; written by",
                      "// qnnfab.boards.families.gowin_bram_model (see its docstring).", ""]
                     + [_module(prim) for prim in _PRIMS])


_COMMON = {"RESET_MODE", *(f"INIT_RAM_{i:02X}" for i in range(64))}
_KNOWN = {
    "sp": _COMMON | {"READ_MODE", "WRITE_MODE", "BIT_WIDTH", "BLK_SEL"},
    "sdp": _COMMON | {"READ_MODE", "BIT_WIDTH_0", "BIT_WIDTH_1", "BLK_SEL_0", "BLK_SEL_1"},
    "dp": _COMMON | {"READ_MODE0", "READ_MODE1", "WRITE_MODE0", "WRITE_MODE1", "BIT_WIDTH_0",
                     "BIT_WIDTH_1", "BLK_SEL_0", "BLK_SEL_1"},
}


def check_bsram(netlist_text, path):
    """Raise RuntimeError if a BSRAM instance of the netlist sets a parameter the models do
    not implement or a width its primitive does not have."""
    names = "|".join(_PRIMS)
    for prim, block in re.findall(rf"\b({names})\s*#\((.*?)\)\s*\S+\s*\(", netlist_text, re.S):
        unit, bits, _, kind = _PRIMS[prim]
        params = set(re.findall(r"\.(\w+)\s*\(", block))
        unknown = sorted(params - _KNOWN[kind])
        widths = re.findall(r"\.BIT_WIDTH(?:_[01])?\((?:32'd|32'sd)?(\d+)\)", block)
        bad = sorted({w for w in widths if int(w) not in _WIDTHS[unit] or int(w) > bits})
        if unknown or bad:
            raise RuntimeError(f"{path}: a {prim} sets {', '.join(unknown + bad)}, which the "
                               f"block RAM models (qnnfab.boards.families.gowin_bram_model) "
                               f"do not implement")
