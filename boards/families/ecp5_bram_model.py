"""A behavioural ``DP16KD`` (ECP5 block RAM) for gate-level simulation: Yosys ships the cell only
as a black box. :func:`dp16kd_model` writes it; :func:`check_dp16kd` refuses a netlist that sets
what the model does not implement."""

import re

__all__ = ["dp16kd_model", "check_dp16kd"]


_DP16KD_PORT = """
  // -- port {p} --
  wire clk_{p} = (CLK{p}MUX == "INV") ? ~CLK{p} : CLK{p};
  wire [13:0] ad_{p} = {{{ad}}};
  wire sel_{p} = {{CS{p}2, CS{p}1, CS{p}0}} == {{CSDECODE_{p}[16 +: 8] == "1",
                                        CSDECODE_{p}[8 +: 8] == "1", CSDECODE_{p}[0 +: 8] == "1"}};
  wire ce_{p} = CE{p} & sel_{p};
  wire we_{p} = ce_{p} & WE{p};
  localparam WIDE_{p} = DATA_WIDTH_{p} == 36;
  localparam [2:0] MASK_{p} = DATA_WIDTH_{p} == 4 ? 3'b100 : DATA_WIDTH_{p} == 2 ? 3'b110
                          : DATA_WIDTH_{p} == 1 ? 3'b111 : 3'b000;
  localparam [17:0] ONES_{p} = DATA_WIDTH_{p} >= 18 ? 18'h3ffff : (18'd1 << DATA_WIDTH_{p}) - 18'd1;
  // x1..x18: the bit offset of the entry in its 18-bit word: 9-bit byte ad[3], then ad[2:0]
  // for x1/x2/x4; x18 writes take ad[1:0] as byte enables (ad[0]: bits 8:0).
  wire [4:0] off_{p} = (ad_{p}[3] ? 5'd9 : 5'd0) + {{2'b00, ad_{p}[2:0] & MASK_{p}}};
  wire [17:0] word_{p} = mem[ad_{p}[13:4]];
  wire [17:0] rd_{p} = DATA_WIDTH_{p} >= 18 ? word_{p} : (word_{p} >> off_{p}) & ONES_{p};
  wire [17:0] wmask_{p} = DATA_WIDTH_{p} >= 18 ? {{{{9{{ad_{p}[1]}}}}, {{9{{ad_{p}[0]}}}}}}
                                          : ONES_{p} << off_{p};
  wire [17:0] wword_{p} = (word_{p} & ~wmask_{p})
                        | ((DATA_WIDTH_{p} >= 18 ? di_{p} : di_{p} << off_{p}) & wmask_{p});
  wire [17:0] wr_{p} = DATA_WIDTH_{p} >= 18 ? wword_{p} : di_{p} & ONES_{p};
  // x36 (pseudo dual port: Yosys writes on A, reads on B): words ad[13:5], low half at
  // 18-bit word {{ad[13:5], 0}}; data in on {{DIB, DIA}}, out on {{DOB, DOA}}; ad[3:0] enable
  // the four 9-bit bytes of a write.
  wire [9:0] lo_{p} = {{ad_{p}[13:5], 1'b0}};
  wire [9:0] hi_{p} = {{ad_{p}[13:5], 1'b1}};
  wire [35:0] word36_{p} = {{mem[hi_{p}], mem[lo_{p}]}};
  wire [35:0] mask36_{p} = {{{{9{{ad_{p}[3]}}}}, {{9{{ad_{p}[2]}}}},
                           {{9{{ad_{p}[1]}}}}, {{9{{ad_{p}[0]}}}}}};
  wire [35:0] new36_{p} = (word36_{p} & ~mask36_{p}) | ({{di_B, di_A}} & mask36_{p});
  reg [35:0] do_{p} = 36'd0;
  reg [35:0] q_{p} = 36'd0;
  // NORMAL: the output keeps its value during a write; WRITETHROUGH: the new data;
  // READBEFOREWRITE: the old data. A synchronous reset is not gated by CE, and a write on
  // the port blocks it.
  task automatic read_{p};
    if (ce_{p}) begin
      if (!we_{p} || WRITEMODE_{p} == "READBEFOREWRITE")
        do_{p} <= WIDE_{p} ? word36_{p} : {{18'd0, rd_{p}}};
      else if (WRITEMODE_{p} == "WRITETHROUGH")
        do_{p} <= WIDE_{p} ? new36_{p} : {{18'd0, wr_{p}}};
    end
  endtask
  generate
    if (RESETMODE == "ASYNC") begin : reset_{p}
      always @(posedge clk_{p} or posedge RST{p})
        if (RST{p}) do_{p} <= 36'd0;
        else read_{p};
    end else begin : reset_{p}
      always @(posedge clk_{p})
        if (RST{p} && !we_{p}) do_{p} <= 36'd0;
        else read_{p};
    end
  endgenerate
  always @(posedge clk_{p})
    if (RST{p}) q_{p} <= 36'd0;
    else if (OCE{p}) q_{p} <= do_{p};
  wire [35:0] out_{p} = REGMODE_{p} == "OUTREG" ? q_{p} : do_{p};
  always @(posedge clk_{p})
    if (we_{p}) begin
      if (WIDE_{p}) begin
        mem[lo_{p}] <= new36_{p}[17:0];
        mem[hi_{p}] <= new36_{p}[35:18];
      end else
        mem[ad_{p}[13:4]] <= wword_{p};
    end
"""


def _bits(prefix, n):
    return ", ".join(f"{prefix}{i}" for i in range(n - 1, -1, -1))


def dp16kd_model():
    """Verilog of a behavioural ``DP16KD`` (ECP5 block RAM) for netlist simulations.

    Yosys ships ``DP16KD`` only as a black box (no outputs). This model implements what
    ``synth_ecp5`` instantiates (``share/lattice/brams_map_16kd.v``): widths 1, 2, 4, 9 and 18
    per port and the 36-bit pseudo dual port mode (``$__PDPW16KD_``: 36-bit writes on port A
    with data on ``{DIB, DIA}``, 36-bit reads on port B with data on ``{DOB, DOA}``),
    ``WRITEMODE`` NORMAL / WRITETHROUGH / READBEFOREWRITE, ``RESETMODE`` SYNC / ASYNC (the read
    data reset to 0), ``REGMODE`` NOREG / OUTREG, ``CSDECODE``, ``CLK?MUX`` "INV"; other
    ``*MUX`` inversions are not modelled (:func:`check_dp16kd` refuses a netlist that sets
    them). Contents: ``INITVAL_00`` .. ``INITVAL_3F`` hold 16 words each, 18 bits in every
    20-bit slot; a 36-bit entry is 18-bit words ``2a`` (low) and ``2a + 1``, a 9-bit entry is
    half ``ad[3]`` of word ``ad[13:4]``, and the 1-, 2- and 4-bit entries pack the low 8 bits
    of each 9-bit half (the layout Yosys' ``memory_libmap`` writes for this RAM, ``byte 9``).
    Tested against memories of every width in ``tests/boards/test_gate_level.py``.
    """
    ports = []
    for p in "AB":
        ports += [f"  input {_bits('DI' + p, 18)},", f"  input {_bits('AD' + p, 14)},",
                  f"  input CE{p}, OCE{p}, CLK{p}, WE{p}, RST{p},",
                  f"  input CS{p}2, CS{p}1, CS{p}0,", f"  output {_bits('DO' + p, 18)},"]
    ports[-1] = ports[-1].rstrip(",")
    params = ['  parameter DATA_WIDTH_A = 18;', '  parameter DATA_WIDTH_B = 18;',
              '  parameter REGMODE_A = "NOREG";', '  parameter REGMODE_B = "NOREG";',
              '  parameter RESETMODE = "SYNC";', '  parameter ASYNC_RESET_RELEASE = "SYNC";',
              '  parameter CSDECODE_A = "0b000";', '  parameter CSDECODE_B = "0b000";',
              '  parameter WRITEMODE_A = "NORMAL";', '  parameter WRITEMODE_B = "NORMAL";',
              '  parameter WID = 0;', '  parameter GSR = "ENABLED";',
              '  parameter INIT_DATA = "STATIC";']
    for p in "AB":
        names = ([f"DI{p}{i}" for i in range(17, -1, -1)]
                 + [f"AD{p}{i}" for i in range(13, -1, -1)]
                 + [f"{n}{p}" for n in ("CE", "OCE", "CLK", "WE", "RST")]
                 + [f"CS{p}{i}" for i in range(2, -1, -1)]
                 + [f"DO{p}{i}" for i in range(17, -1, -1)])
        params += [f'  parameter {name}MUX = "{name}";' for name in names]
    params += [f"  parameter INITVAL_{i:02X} = 320'h0;" for i in range(64)]
    body = ["  reg [17:0] mem [0:1023];",
            "  task automatic load(input integer row, input [319:0] value);",
            "    integer i;",
            "    for (i = 0; i < 16; i = i + 1) mem[row * 16 + i] = value[i * 20 +: 18];",
            "  endtask",
            "  initial begin"]
    body += [f"    load({i}, INITVAL_{i:02X});" for i in range(64)]
    body += ["  end"]
    body += [f"  wire [17:0] di_{p} = {{{_bits('DI' + p, 18)}}};" for p in "AB"]
    for p in "AB":
        body.append(_DP16KD_PORT.format(p=p, ad=_bits("AD" + p, 14)))
    body += [f"  assign {{{_bits('DOA', 18)}}} = DATA_WIDTH_B == 36 ? out_B[17:0] : out_A[17:0];",
             f"  assign {{{_bits('DOB', 18)}}} = DATA_WIDTH_B == 36 ? out_B[35:18] : out_B[17:0];"]
    return "\n".join([
        "// Behavioural DP16KD (ECP5 block RAM) for gate-level simulation; written by",
        "// qnnfab.boards.families.ecp5_bram_model (see dp16kd_model for what it covers).",
        "module DP16KD(", *ports, ");", *params, *body, "endmodule", ""])


#: DP16KD parameters the model implements (anything else set on an instance is refused).
_DP16KD_PARAMS = {"DATA_WIDTH_A", "DATA_WIDTH_B", "REGMODE_A", "REGMODE_B", "RESETMODE",
                  "ASYNC_RESET_RELEASE", "CSDECODE_A", "CSDECODE_B", "WRITEMODE_A",
                  "WRITEMODE_B", "WID", "GSR", "INIT_DATA", "CLKAMUX", "CLKBMUX",
                  *(f"INITVAL_{i:02X}" for i in range(64))}


def check_dp16kd(netlist_text, path):
    for block in re.findall(r"\bDP16KD\s*#\((.*?)\)\s*\S+\s*\(", netlist_text, re.S):
        names = set(re.findall(r"\.(\w+)\s*\(", block))
        unknown = sorted(names - _DP16KD_PARAMS)
        widths = re.findall(r"\.DATA_WIDTH_[AB]\((?:32'd)?(\d+)\)", block)
        bad = sorted({w for w in widths if int(w) not in (1, 2, 4, 9, 18, 36)})
        if unknown or bad:
            raise RuntimeError(f"{path}: a DP16KD sets {', '.join(unknown + bad)}, which the "
                               f"block RAM model (qnnfab.boards.families.ecp5_bram_model) "
                               f"does not implement")
