"""The build's tool steps: a failed tool shows its own error lines (from whichever log holds
them), and an ECP5 synthesis whose ABC9 mapping fails is run again with the classic mapper
(issue: digits-tnn on the ULX3S-85F died in ``ABC_OPS_REINTEGRATE``)."""

import os
import stat
import sys
import time

import pytest

from qnnfab.boards.families import FAMILIES, get_family
from qnnfab.boards.families.base import failing_pass
from qnnfab.boards.toolchain import ToolError, error_lines, run_steps

#: The end of a real Yosys 0.70 log (``top.rpt``) of the failing ULX3S-85F build.
ABC9_LOG = """\
2.46.14.5. Executing ABC9.
Running ABC command: "/yosys-abc" -s -f <abc-temp-dir>/abc.script 2>&1

2.46.14.6. Executing AIGER frontend.
Removed 140675 unused cells and 252464 unused wires.

2.46.14.7. Executing ABC_OPS_REINTEGRATE pass (reintegrate ABC mapped design into module).
<suppressed ~102684 debug messages>
ERROR: Assert `GetSize(conn.first) == GetSize(conn.second)' failed in kernel/rtlil.cc:3091.
"""
SCRIPT = "read_rtlil top.il\n    synth_ecp5  -top top\nwrite_json top.json\n"


def test_failing_pass_names_the_section_and_error():
    section, error = failing_pass(ABC9_LOG)
    assert section.startswith("ABC_OPS_REINTEGRATE pass")
    assert error.startswith("ERROR: Assert `GetSize(conn.first)")
    assert failing_pass("2.1. Executing X.\nall fine\n") is None


def test_ecp5_falls_back_to_the_classic_mapper_only_for_abc9_failures():
    ecp5 = get_family("ecp5")
    script, reason = ecp5.synthesis_fallback(SCRIPT, ABC9_LOG)
    assert script.splitlines() == [
        "read_rtlil top.il",
        "synth_ecp5 -top top -run begin:map_luts",
        "techmap -map +/lattice/latches_map.v",
        "abc -lut 4:7 -dress",
        "clean",
        "synth_ecp5 -top top -run map_cells:",
        "write_json top.json"]
    assert "ABC9 failed" in reason and "ABC_OPS_REINTEGRATE" in reason
    # Other failures are not the mapper's: no fallback.
    parse_error = "1.2. Executing RTLIL frontend.\nERROR: Parser error in line 3: syntax error\n"
    assert ecp5.synthesis_fallback(SCRIPT, parse_error) is None
    assert ecp5.synthesis_fallback("read_rtlil top.il\n", ABC9_LOG) is None
    assert get_family("ice40").synthesis_fallback(SCRIPT, ABC9_LOG) is None


def _fake_tool(tmp_path, name, body):
    """An executable Python script standing in for a YoWASP tool."""
    path = tmp_path / name
    path.write_text(f"#!{sys.executable}\nimport sys, os\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


#: A Yosys stand-in: the ABC9 error goes to its ``-l`` log only (as the real one's does), and
#: a script with the classic mapper succeeds.
FAKE_YOSYS = f"""
log = sys.argv[sys.argv.index("-l") + 1]
script = open(sys.argv[-1]).read()
print("Running ABC command")
if "abc -lut" in script:
    open(log, "w").write("2.1. Executing ABC pass.\\nEnd of script.\\n")
    sys.exit(0)
open(log, "w").write({ABC9_LOG!r})
sys.exit(1)
"""


def _ecp5_env(tmp_path, yosys_body):
    return {**os.environ, "YOSYS": _fake_tool(tmp_path, "yosys", yosys_body),
            "NEXTPNR_ECP5": _fake_tool(tmp_path, "nextpnr", "sys.exit(0)"),
            "ECPPACK": _fake_tool(tmp_path, "ecppack", "sys.exit(0)")}


def test_abc9_failure_is_rerun_with_the_fallback_and_noted(tmp_path):
    build_dir = tmp_path / "gateware"
    build_dir.mkdir()
    (build_dir / "top.ys").write_text(SCRIPT)
    notes, steps = [], []
    seconds = run_steps([["yosys", "-l", "top.rpt", "top.ys"], ["nextpnr-ecp5"], ["ecppack"]],
                        str(build_dir), _ecp5_env(tmp_path, FAKE_YOSYS), "ecp5",
                        progress=steps.append, notes=notes)
    assert steps == ["synthesis", "place and route", "bitstream"] and set(seconds) == set(steps)
    assert len(notes) == 1 and "classic ABC mapper" in notes[0]
    assert "abc -lut 4:7" in (build_dir / "top.ys").read_text()
    # The failed attempt is kept beside the new one.
    assert (build_dir / "top.ys.failed").read_text() == SCRIPT
    assert "ERROR: Assert" in (build_dir / "top.rpt.failed").read_text()


def test_a_failed_tool_shows_its_own_error_lines(tmp_path):
    """The error is in the ``-l`` log, not in the step's output: it must reach the message."""
    build_dir = tmp_path / "gateware"
    build_dir.mkdir()
    (build_dir / "top.ys").write_text("read_rtlil top.il\nsynth_ice40 -top top\n")
    yosys = """
log = open(sys.argv[sys.argv.index("-l") + 1], "w")
log.write("3.1. Executing X.\\nERROR: No such module top\\n")
print("Running ...")
sys.exit(1)
"""
    env = {**os.environ, "YOSYS": _fake_tool(tmp_path, "yosys", yosys)}
    with pytest.raises(ToolError) as info:
        run_steps([["yosys", "-l", "top.rpt", "top.ys"]], str(build_dir), env, "ice40",
                  progress=lambda step: None)
    message = str(info.value)
    assert message.startswith("synthesis failed: yosys exited with 1\n  ERROR: No such module top")
    assert "top.rpt" in message and "Running ..." in message


def test_error_lines_are_distinct_and_bounded(tmp_path):
    log = tmp_path / "a.log"
    log.write_text("ok\nERROR: one\nERROR: one\nfoo.v:3: error: two\n"
                   + "".join(f"ERROR: {i}\n" for i in range(20)))
    lines = error_lines(log, tmp_path / "missing.log", limit=4)
    assert lines == ["ERROR: one", "foo.v:3: error: two", "ERROR: 0", "ERROR: 1"]


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_family_is_complete(name):
    """What the build, the top, the report and gate-level simulation ask of a family."""
    family = get_family(name)
    assert [t.step for t in family.tools] == ["synthesis", "place and route", "bitstream"]
    assert family.bitstream_suffix.startswith(".") and family.bram_port_bits > 0
    assert {"lut", "bram", "dsp", "ff", "ff_cells"} <= set(family.cell_types)
    assert family.block_ram_cell and family.sim_models
    assert family.synth_command("top") == f"synth_{name} -top top"
    fin, fout = (12e6, 48e6) if name == "ice40" else (25e6, 50e6)
    params, actual = family.pll_solve(fin, fout)
    assert params and abs(actual - fout) <= 0.01 * fout
    with pytest.raises(ValueError, match=r"unknown FPGA family 'nope'; known families: "):
        get_family("nope")


def test_an_overfull_place_and_route_is_stopped_after_packing(tmp_path):
    """nextpnr prints the utilisation after packing and then places for hours a design that
    cannot fit: the build stops at that line and names the overfull cell type."""
    build_dir = tmp_path / "gateware"
    build_dir.mkdir()
    nextpnr = """
import time
log = open(sys.argv[sys.argv.index("-l") + 1], "w")
log.write("Info: Device utilisation:\\nInfo:   TRELLIS_COMB: 118308/ 83640   141%\\n")
log.flush()
time.sleep(600)
"""
    env = {**os.environ, "NEXTPNR_ECP5": _fake_tool(tmp_path, "nextpnr", nextpnr)}
    start = time.monotonic()
    with pytest.raises(ToolError) as info:
        run_steps([["nextpnr-ecp5", "-l", "top.tim"]], str(build_dir), env, "ecp5",
                  progress=lambda step: None)
    assert time.monotonic() - start < 60
    message = str(info.value)
    assert message.startswith("place and route failed: nextpnr stopped after packing; the "
                              "design does not fit the device: TRELLIS_COMB 118308/83640")
