"""``--input-buffer ff|ebr|auto`` on ``build``: passed to the build, shown in the summary when
the input is in block RAM, and a bad value is refused by the parser."""

import pytest

from qnnfab import cli


def _report(board, folding, input_buffer):
    return {"board": board, "device": "dev", "resources": {}, "fmax_mhz": 100.0,
            "clock_mhz": 12.0, "timing_met": True, "cycles_per_inference": 16,
            "inferences_per_s": 1.0, "inferences_per_s_at_fmax": 2.0,
            "folding": [{"pe": f.pe, "simd": f.simd} if hasattr(f, "pe")
                        else {"pe": f[0], "simd": f[1]} for f in folding],
            "folding_source": "board default", "input_buffer": input_buffer}


@pytest.mark.parametrize("given, expected", [(None, "auto"), ("ebr", "ebr"), ("ff", "ff")])
def test_build_passes_it_and_says_so(replace_public, small_qnn, tmp_path, capsys, given,
                                     expected):
    from qnnfab import flow
    seen = []

    def fake(network, board, out_dir, *, folding=None, input_buffer="auto", **kw):
        seen.append(input_buffer)
        return _report(board, folding, "ebr" if input_buffer == "ebr" else "ff")
    replace_public(flow, "build_board", fake)
    argv = ["build", str(small_qnn), "--board", "icebreaker", "--out", str(tmp_path / "b")]
    assert cli.main(argv + ([] if given is None else ["--input-buffer", given])) == 0
    assert seen == [expected]
    said = "input vector in block RAM" in capsys.readouterr().out
    assert said == (expected == "ebr")


def test_a_bad_value_is_refused(small_qnn, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["build", str(small_qnn), "--board", "icebreaker", "--out",
                  str(tmp_path / "b"), "--input-buffer", "sram"])
    assert exc.value.code == 2
    assert "--input-buffer: invalid choice: 'sram'" in capsys.readouterr().err
