"""The README's command blocks, run as a reader runs them, so the guide cannot drift from the tool.

Fences of README.md (the first word is the language, for GitHub; the rest tells this test):

- ```` ```sh ````: commands, one per line (``&&`` chains, ``#`` starts a comment, a trailing
  ``\\`` continues the line). ``test_readme_commands`` runs them.
- ```` ```sh slow ````: commands that take minutes (long trainings, Brevitas); only the slow
  test (``test_readme_commands_slow``, which runs every block) takes them.
- ```` ```python run ````: Python run in the same folder, after the commands above it.
- ```` ```text output ````: right after a runnable block: every line of it is in that block's
  standard output.
- ```` ```verilog ````: the module, port widths and payload packing of the Verilog the last
  ``qnnfab verilog`` of the README wrote.
- ```` ```python FILE ````: an excerpt of FILE; every line but ``...`` is in FILE.
- Any other fence (```` ```text ````, ```` ```python ````) is an illustration.

The blocks run in order in one temporary working folder, so a block uses the files an earlier
one wrote. How each command is checked:

- ``qnnfab ...``: in-process through :func:`qnnfab.cli.main`; it must exit 0.
- Commands that place and route — ``qnnfab build``, ``qnnfab flow`` and ``make demo`` (the
  Makefile's recipe) — are parsed by the CLI's own parser and taken up to the pre-build check
  instead of a full build: :func:`qnnfab.boards.build.plan_build` (fit, tools, the board top
  and the platform's files), and for ``flow`` first its tool checks and
  :func:`qnnfab.flow.flow_precheck` on the network the flow trains (one epoch: the fit does
  not depend on the weights). Real bitstreams of every preset on ``icebreaker`` and
  ``ulx3s-12f`` are built by ``tests/boards/test_build_matrix.py`` (slow), so this test does
  not build them again.
- ``qnnfab run`` needs a board: it is parsed, and its network must exist and its ``--build``
  folder be one the README built (``--learn``: a learning build).
- ``iceprog``, ``openFPGALoader``, ``fujprog``: the file is the bitstream a README build of a
  board of that family writes (:attr:`qnnfab.boards.build.BuildPlan.bitstream`).
- Set-up lines (``python3 -m venv``, ``source .venv/bin/activate``, ``pip install``): the venv
  folder and the torch pin are the Makefile's, the extras are ``pyproject.toml``'s.
- ``rm -rf`` only of the simulator cache, which must be
  :func:`qnnfab.sim.runner.default_cache_dir`'s default.
- ``python SCRIPT ARGS`` runs the repository's script in-process (``runpy``).
- Anything else fails the test: teach this file the new kind of command.

Files the README takes as the reader's own (``my.npz``, ``mlp.onnx``) are made by the test;
commands with ``--data fashion-mnist`` run only where that data set is installed.

Besides: the README stays within :data:`README_LIMIT` bytes, every relative link (and heading
anchor) of the README and ``docs/`` resolves, every ``make TARGET`` they name exists, every
``qnnfab`` line of a ``sh`` block in ``docs/`` parses, and the marked tables of
``docs/results.md`` are exactly the ones the benchmarks write (their ``DOC_TABLES``).
The non-slow part takes about 25 s of one core (`pytest --durations`; more on a busy machine).
"""

import ast
import os
import re
import runpy
import shlex
import sys
import time
from dataclasses import dataclass, field

import pytest

from qnnfab import cli, ir

from .benchmark_modules import load

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO, "README.md")
DOCS = os.path.join(REPO, "docs")
MAKEFILE = os.path.join(REPO, "Makefile")
#: The README is a guide, not the manual: methods and results live in docs/ (17 KiB since the
#: side-by-side table of the unrolled style, which its issue asked for in the README).
README_LIMIT = 17 * 1024

#: Board loaders and the FPGA families they program.
PROGRAMMERS = {"iceprog": {"ice40"}, "openFPGALoader": {"ice40", "ecp5"}, "fujprog": {"ecp5"}}


# -- reading Markdown ------------------------------------------------------------------------

def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


@dataclass
class Block:
    lang: str
    tags: list
    lines: list
    line: int   # where the fence opens (1-based)

    @property
    def text(self):
        return "\n".join(self.lines)


def fenced_blocks(text):
    """The fenced code blocks of a Markdown text (fences may be indented, as in list items)."""
    blocks, lines, k = [], text.split("\n"), 0
    while k < len(lines):
        m = re.match(r"^( *)```(.*)$", lines[k])
        if not m:
            k += 1
            continue
        indent, info = m.group(1), m.group(2).split()
        body, k0 = [], k
        k += 1
        while k < len(lines) and not re.match(rf"^{indent}```\s*$", lines[k]):
            body.append(lines[k][len(indent):] if lines[k].startswith(indent) else lines[k])
            k += 1
        assert k < len(lines), f"line {k0 + 1}: fence never closed"
        blocks.append(Block(info[0] if info else "", info[1:], body, k0 + 1))
        k += 1
    return blocks


def commands(block):
    """The commands of a ``sh`` block: argv lists (comments and ``&&`` handled)."""
    joined, buf = [], ""
    for line in block.lines:
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        joined.append(buf + line)
        buf = ""
    out = []
    for line in joined:
        words = shlex.split(line, comments=True)
        cmd = []
        for w in words:
            if w == "&&":
                out.append(cmd)
                cmd = []
            else:
                cmd.append(w)
        if cmd:
            out.append(cmd)
    return out


def makefile():
    """``(variables, targets)``: the ``VAR ?= value`` defaults and ``target: deps`` recipes of
    the Makefile (``{target: [recipe lines]}``)."""
    variables, targets, current = {}, {}, None
    for line in read(MAKEFILE).split("\n"):
        m = re.match(r"^([A-Z_]+)\s*\?=\s*(.*)$", line)
        if m:
            variables[m.group(1)] = m.group(2).strip()
            continue
        m = re.match(r"^([a-z][\w-]*):", line)
        if m:
            current = targets.setdefault(m.group(1), [])
            continue
        if line.startswith("\t") and current is not None:
            current.append(line[1:])
        elif line.strip() and not line.startswith("#"):
            current = None
    return variables, targets


def expand(text, variables):
    return re.sub(r"\$\((\w+)\)", lambda m: variables.get(m.group(1), ""), text)


def optional_dependencies():
    """The extras of pyproject.toml."""
    try:
        import tomllib
    except ImportError:   # Python 3.10
        section = read(os.path.join(REPO, "pyproject.toml")) \
            .split("[project.optional-dependencies]")[1].split("\n[")[0]
        return set(re.findall(r"^([\w-]+)\s*=", section, re.MULTILINE))
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        return set(tomllib.load(f)["project"]["optional-dependencies"])


# -- the session ----------------------------------------------------------------------------

@dataclass
class Session:
    """The README's commands, run one after the other in ``cwd``."""
    cwd: str
    capsys: object
    monkeypatch: object
    builds: dict = field(default_factory=dict)       # out dir -> BuildPlan
    bitstreams: dict = field(default_factory=dict)   # path -> Board
    verilog: list = field(default_factory=list)      # (file, network)
    notes: list = field(default_factory=list)

    def fail(self, block, cmd, why):
        pytest.fail(f"README.md line {block.line}: `{shlex.join(cmd)}`: {why}", pytrace=False)

    # Each handler returns the command's standard output ("" when it does not run).

    def run(self, block, cmd):
        name = cmd[0]
        if name in ("qnnfab", ".venv/bin/qnnfab"):
            return self.qnnfab(block, cmd)
        if name == "make":
            return self.make(block, cmd)
        if name in PROGRAMMERS:
            return self.program(block, cmd)
        if name in ("python", "python3") and cmd[1:3] == ["-m", "venv"]:
            return self.venv_folder(block, cmd, cmd[3])
        if name in ("source", "."):
            return self.venv_folder(block, cmd, cmd[1].removesuffix("/bin/activate"))
        if name == "pip":
            return self.pip(block, cmd)
        if name == "rm":
            return self.remove(block, cmd)
        if name in ("python", "python3"):
            return self.script(block, cmd)
        self.fail(block, cmd, "a command tests/test_readme.py does not know: teach it how to "
                              "check this one")

    def parse(self, block, cmd):
        try:
            return cli.build_parser().parse_args(cmd[1:])
        except SystemExit:
            err = self.capsys.readouterr().err.strip()
            self.fail(block, cmd, f"the CLI refuses it: {err}")

    def qnnfab(self, block, cmd):
        args = self.parse(block, cmd)
        if args.command == "build":
            return self.plan(block, cmd, args)
        if args.command == "flow":
            return self.flow(block, cmd, args)
        if args.command == "run":
            return self.board_run(block, cmd, args)
        if getattr(args, "data", None) == "fashion-mnist" and not fashion_mnist():
            self.notes.append(f"skipped (no Fashion-MNIST here): {shlex.join(cmd)}")
            return ""
        self.capsys.readouterr()
        code = cli.main(cmd[1:])
        out, err = self.capsys.readouterr()
        if code != 0:
            self.fail(block, cmd, f"exit {code}\n{out}{err[-3000:]}")
        if args.command == "verilog":
            self.verilog.append((os.path.join(args.out, f"{args.name}.v"),
                                 ir.load(args.model)))
        return out

    def plan(self, block, cmd, args, network=None):
        from qnnfab.boards.build import plan_build
        if network is None:
            network = ir.load(args.model)
        folding = cli.resolve_folding(args, network)
        plan = plan_build(network, args.board, args.out, folding=folding,
                          clock_mhz=args.clock_mhz, seed=args.pnr_seed,
                          learn=getattr(args, "learn", False))
        self.builds[os.path.normpath(args.out)] = plan
        self.bitstreams[os.path.normpath(os.path.join(args.out, plan.bitstream))] = plan.board
        return ""

    def flow(self, block, cmd, args):
        from qnnfab.boards.build import toolchain_env
        from qnnfab.boards.registry import board_folding, get_board
        from qnnfab.flow import flow_precheck
        from qnnfab.model.train import train
        from qnnfab.model.vectors import test_vectors
        toolchain_env(get_board(args.board).family)
        if args.verilator_vectors:
            from qnnfab.sim.runner import tool_version
            tool_version("verilator")
        preset = cli.train_preset(args) if hasattr(args, "arch") else args.preset
        network = train(preset, seed=args.seed, epochs=1, data=args.data, progress=False).network
        network.require_integer("the flow")
        folding = cli.parse_folding(args.folding) or board_folding(network, args.board)
        n = len(test_vectors(network, args.vectors).codes)
        flow_precheck(network, args.board, folding, n,
                      n_verilator=min(args.verilator_vectors, n))
        return self.plan(block, cmd, args, network=network)

    def board_run(self, block, cmd, args):
        if not os.path.exists(args.model):
            self.fail(block, cmd, f"{args.model} was not made by an earlier README command")
        build = getattr(args, "build", None)
        if build is not None:
            plan = self.builds.get(os.path.normpath(build))
            if plan is None:
                self.fail(block, cmd, f"--build {build}: no README build writes that folder")
            if bool(getattr(args, "learn", False)) != (plan.learning is not None):
                self.fail(block, cmd, f"--build {build}: built with"
                                      f"{'' if plan.learning else 'out'} --learn")
        return ""

    def make(self, block, cmd):
        variables, targets = makefile()
        target = cmd[1] if len(cmd) > 1 else "setup"
        if target not in targets:
            self.fail(block, cmd, f"the Makefile has no target {target!r}")
        if target == "demo":
            recipe = [shlex.split(expand(line, variables)) for line in targets["demo"]]
            flows = [c for c in recipe if c and c[0].endswith("bin/qnnfab")]
            assert len(flows) == 1, f"make demo's recipe: {targets['demo']}"
            return self.qnnfab(block, ["qnnfab", *flows[0][1:]])
        return ""

    def program(self, block, cmd):
        path = os.path.normpath([w for w in cmd[1:] if not w.startswith("-")][-1])
        board = self.bitstreams.get(path)
        if board is None:
            self.fail(block, cmd, f"{path} is not a bitstream a README build writes (they "
                                  f"are: {', '.join(self.bitstreams) or 'none'})")
        if board.family not in PROGRAMMERS[cmd[0]]:
            self.fail(block, cmd, f"{cmd[0]} programs {sorted(PROGRAMMERS[cmd[0]])}, {path} is "
                                  f"for {board.name} ({board.family})")
        if cmd[0] == "openFPGALoader" and cmd[1:3] != ["-b", board.name.split("-")[0]]:
            self.fail(block, cmd, f"openFPGALoader needs -b {board.name.split('-')[0]}")
        # The board registry's own loader commands, where it has them (`qnnfab boards`).
        text = getattr(board, "program_command", "") or ""
        known = [shlex.split(alt.strip(" ()").format(bitstream=cmd[-1]))
                 for alt in text.split("(or:") if alt.strip(" ()")]
        if known and cmd not in known:
            self.fail(block, cmd, f"not one of the registry's loader commands for {board.name}: "
                                  f"{text}")
        return ""

    def venv_folder(self, block, cmd, folder):
        variables, _ = makefile()
        if folder != variables["VENV"]:
            self.fail(block, cmd, f"the Makefile's venv is {variables['VENV']}, not {folder}")
        return ""

    def pip(self, block, cmd):
        variables, _ = makefile()
        words = [w for w in cmd[2:] if w != "-e"]
        if cmd[1] != "install" or not words:
            self.fail(block, cmd, "only `pip install` is expected")
        for w in words:
            if w.startswith("torch"):
                if w != variables["TORCH_SPEC"]:
                    self.fail(block, cmd, f"the Makefile installs {variables['TORCH_SPEC']}")
                continue
            m = re.fullmatch(r"\.(?:\[([\w,-]+)\])?", w)
            if not m or "-e" not in cmd:
                self.fail(block, cmd, f"{w!r}: expected `-e .` or `-e \".[extra]\"`")
            missing = set((m.group(1) or "").split(",")) - {""} - optional_dependencies()
            if missing:
                self.fail(block, cmd, f"pyproject.toml has no extra {sorted(missing)}")
        return ""

    def remove(self, block, cmd):
        from qnnfab.sim.runner import default_cache_dir
        home = os.path.join(self.cwd, "home")   # the default is made if missing: not in ~
        os.makedirs(home, exist_ok=True)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("HOME", home)
            mp.delenv("QNNFAB_SIM_CACHE", raising=False)
            mp.delenv("XDG_CACHE_HOME", raising=False)
            default = str(default_cache_dir())
            paths = [os.path.expanduser(w) for w in cmd[1:] if not w.startswith("-")]
        if paths != [default]:
            self.fail(block, cmd, f"only the simulator cache may be removed: {default}")
        return ""

    def script(self, block, cmd):
        path = os.path.join(REPO, cmd[1])
        if not os.path.isfile(path):
            self.fail(block, cmd, f"no {cmd[1]} in the repository")
        import torch
        self.capsys.readouterr()
        self.monkeypatch.setattr(sys, "argv", [path, *cmd[2:]])
        threads = torch.get_num_threads()
        torch.set_num_threads(1)   # as qnnfab's own training does: pytest-xdist shares the cores
        try:
            runpy.run_path(path, run_name="__main__")
        except SystemExit as exc:
            if exc.code not in (0, None):
                self.fail(block, cmd, f"exit {exc.code}\n{self.capsys.readouterr().err}")
        finally:
            torch.set_num_threads(threads)
        return self.capsys.readouterr().out

    def python(self, block):
        self.capsys.readouterr()
        exec(compile(block.text, f"README.md:{block.line}", "exec"), {"__name__": "__readme__"})
        return self.capsys.readouterr().out

    def check_verilog(self, block):
        assert self.verilog, f"README.md line {block.line}: no `qnnfab verilog` before it"
        from amaranth.utils import ceil_log2
        path, network = self.verilog[-1]
        text = read(path)
        module = re.search(r"^module (\w+)\(([^)]*)\);", text, re.MULTILINE)
        readme = re.search(r"^module (\w+)\(([^)]*)\);", block.text, re.MULTILINE)
        assert readme and module, block.text
        assert readme.group(1) == module.group(1)
        ports = {p.strip() for p in module.group(2).split(",")}
        assert {p.strip() for p in readme.group(2).split(",")} == ports, (readme[0], module[0])
        body = text[module.end():text.index("endmodule", module.end())]
        for m in re.finditer(r"^\s*(input|output)\s*(\[\d+:0\])?\s*(\w+);", block.text,
                             re.MULTILINE):
            assert re.search(rf"^\s*{m.group(1)} {re.escape(m.group(2) or '')}\s*{m.group(3)};",
                             body, re.MULTILINE), f"{m.group(0).strip()} is not in {path}"
        b, n_out = network.input_bits, network.n_outputs
        c, w = max(1, ceil_log2(n_out)), network.layers[-1].acc_width
        for packing in (f"[{b}*j +: {b}]", f"cls at [{c - 1}:0]", f"[{c} + {w}*j +: {w}]"):
            assert packing in block.text, f"README.md line {block.line}: expected {packing}"


def fashion_mnist():
    from qnnfab.model.data import fashion_mnist_folder
    try:
        fashion_mnist_folder()
    except ValueError:
        return False
    return True


def make_fixtures(folder):
    """The reader's own files the README's commands take."""
    import numpy as np
    rng = np.random.default_rng(0)

    def split(n):
        y = rng.integers(0, 10, n)
        x = (rng.integers(0, 4, (n, 64)) + 8 * (np.arange(64)[None, :] % 10 == y[:, None]))
        return x.astype(np.uint8), y
    x_train, y_train = split(400)
    x_test, y_test = split(100)
    np.savez(os.path.join(folder, "my.npz"), x_train=x_train, y_train=y_train,
             x_test=x_test, y_test=y_test)


def mlp_onnx(folder):
    """A Brevitas MLP exported to QONNX (the README's `mlp.onnx`): 64 5-bit inputs, binary
    weights and activations, a ternary output layer; batch-norm statistics set so that the
    thresholds are not degenerate."""
    import warnings
    import torch
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import brevitas.nn as qnn
        from brevitas.export import export_qonnx
        from brevitas.inject.enum import QuantType
        from brevitas.quant import SignedBinaryWeightPerTensorConst
        torch.manual_seed(0)
        model = torch.nn.Sequential(
            qnn.QuantIdentity(bit_width=5, signed=False, return_quant_tensor=True),
            qnn.QuantLinear(64, 16, bias=False, weight_quant=SignedBinaryWeightPerTensorConst),
            torch.nn.BatchNorm1d(16),
            qnn.QuantIdentity(bit_width=1, quant_type=QuantType.BINARY,
                              scaling_impl_type="const", min_val=-1.0, max_val=1.0,
                              return_quant_tensor=True),
            qnn.QuantLinear(16, 10, bias=False, weight_bit_width=2, weight_narrow_range=True))
        g = torch.Generator().manual_seed(1)
        model[2].running_mean.uniform_(-3, 3, generator=g)
        model[2].bias.data.uniform_(-1, 1, generator=g)
        export_qonnx(model.eval(), torch.rand(1, 64), os.path.join(folder, "mlp.onnx"))


def run_readme(tmp_path, capsys, monkeypatch, *, slow):
    monkeypatch.chdir(tmp_path)
    make_fixtures(str(tmp_path))
    session = Session(str(tmp_path), capsys, monkeypatch)
    blocks = fenced_blocks(read(README))
    previous_out, ran = None, 0
    try:
        for block in blocks:
            runnable = (block.lang == "sh") or (block.lang == "python" and "run" in block.tags)
            if block.lang == "text" and "output" in block.tags:
                assert previous_out is not None, f"README.md line {block.line}: output of what?"
                for line in block.lines:
                    if line.strip():
                        assert line.strip() in previous_out, \
                            f"README.md line {block.line}: {line.strip()!r} not in:\n{previous_out}"
                continue
            if block.lang == "verilog":
                session.check_verilog(block)
                continue
            if not runnable:
                continue
            if "slow" in block.tags and not slow:
                previous_out = None
                continue
            if block.lang == "python":
                start = time.monotonic()
                previous_out = session.python(block)
                session.notes.append(f"{time.monotonic() - start:6.1f} s  python block, line "
                                     f"{block.line}")
            else:
                out = []
                for cmd in commands(block):
                    if slow and cmd[:2] == ["qnnfab", "import"] and cmd[2] == "mlp.onnx" \
                            and not os.path.exists("mlp.onnx"):
                        mlp_onnx(str(tmp_path))
                    start = time.monotonic()
                    out.append(session.run(block, cmd) or "")
                    session.notes.append(f"{time.monotonic() - start:6.1f} s  {shlex.join(cmd)}")
                previous_out = "".join(out)
            ran += 1
    finally:   # captured: pytest shows it with a failure
        print("README commands (seconds):\n" + "\n".join(session.notes))
    assert ran >= 8, f"only {ran} runnable blocks in the README"


def test_readme_commands(tmp_path, capsys, monkeypatch):
    """Every non-slow ``sh`` and ``python run`` block of the README, in order."""
    run_readme(tmp_path, capsys, monkeypatch, slow=False)


@pytest.mark.slow
def test_readme_commands_slow(tmp_path, capsys, monkeypatch):
    """Every ``sh`` and ``python run`` block of the README, the slow ones included."""
    run_readme(tmp_path, capsys, monkeypatch, slow=True)


# -- static checks ---------------------------------------------------------------------------

def markdown_files():
    return [README] + sorted(os.path.join(DOCS, f) for f in os.listdir(DOCS)
                             if f.endswith(".md"))


def test_readme_size():
    size = os.path.getsize(README)
    assert size <= README_LIMIT, (f"README.md is {size:,} bytes > {README_LIMIT:,}: it is the "
                                  f"user guide; move reference material to docs/")


def slugs(path):
    """GitHub's anchors of the headings of a Markdown file."""
    text = "\n".join(b for b in re.split(r"^```.*?^```", read(path),
                                        flags=re.MULTILINE | re.DOTALL))
    seen, out = {}, set()
    for m in re.finditer(r"^#{1,6} (.+)$", text, re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def links(path):
    """``(line, target)`` of every Markdown link and image outside code."""
    text = read(path)
    text = re.sub(r"^ *```.*?^ *```", lambda m: "\n" * m.group(0).count("\n"), text,
                  flags=re.MULTILINE | re.DOTALL)
    text = re.sub(r"`[^`\n]*`", "", text)
    for m in re.finditer(r"!?\[[^\]]*\]\(([^)\s]+)\)", text):
        yield text.count("\n", 0, m.start()) + 1, m.group(1)


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: os.path.relpath(p, REPO))
def test_relative_links_resolve(path):
    bad = []
    for line, target in links(path):
        if re.match(r"^[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        dest = os.path.normpath(os.path.join(os.path.dirname(path), file)) if file else path
        if not os.path.exists(dest):
            bad.append(f"line {line}: {target}: no {os.path.relpath(dest, REPO)}")
        elif anchor and dest.endswith(".md") and anchor not in slugs(dest):
            bad.append(f"line {line}: {target}: no heading #{anchor} in "
                       f"{os.path.relpath(dest, REPO)}")
    assert not bad, f"{os.path.relpath(path, REPO)}:\n" + "\n".join(bad)


def test_make_targets_named_exist():
    _, targets = makefile()
    bad = []
    for path in markdown_files():
        text = read(path)
        named = re.findall(r"`make ([a-z][\w-]*)", text)
        for block in fenced_blocks(text):
            if block.lang == "sh":
                named += [c[1] for c in commands(block) if c[0] == "make" and len(c) > 1]
        bad += [f"{os.path.relpath(path, REPO)}: make {t}" for t in named if t not in targets]
    assert not bad, "no such Makefile target:\n" + "\n".join(bad)


def test_readme_python_excerpts_are_in_their_files():
    for block in fenced_blocks(read(README)):
        if block.lang != "python" or not block.tags or block.tags[0] == "run":
            continue
        source = {line.strip() for line in read(os.path.join(REPO, block.tags[0])).split("\n")}
        missing = [line for line in block.lines
                   if line.strip() and line.strip() != "..." and line.strip() not in source]
        assert not missing, f"README.md line {block.line}: not in {block.tags[0]}: {missing}"


@pytest.mark.parametrize("path", markdown_files()[1:], ids=lambda p: os.path.relpath(p, REPO))
def test_docs_commands_parse(path, capsys):
    """The ``qnnfab`` lines of the docs' ``sh`` blocks are valid command lines (the docs' long
    experiments are the benchmarks' business, not this test's)."""
    parser = cli.build_parser()
    for block in fenced_blocks(read(path)):
        if block.lang != "sh":
            continue
        for cmd in commands(block):
            if cmd[0] != "qnnfab":
                continue
            try:
                parser.parse_args(cmd[1:])
            except SystemExit:
                pytest.fail(f"{os.path.relpath(path, REPO)} line {block.line}: "
                            f"`{shlex.join(cmd)}`: {capsys.readouterr().err.strip()}",
                            pytrace=False)


def test_results_tables_are_the_benchmarks():
    """Each marked table of docs/results.md is written by exactly one benchmark, and each
    table a benchmark writes is marked there."""
    markers = load("doc_tables").markers
    page = markers(read(os.path.join(DOCS, "results.md")))
    owners = {}
    benchmarks = os.path.join(REPO, "benchmarks")
    for name in sorted(os.listdir(benchmarks)):
        if not name.startswith("bench_"):
            continue
        tree = ast.parse(read(os.path.join(benchmarks, name)))
        tables = [ast.literal_eval(node.value) for node in tree.body
                  if isinstance(node, ast.Assign)
                  and any(getattr(t, "id", None) == "DOC_TABLES" for t in node.targets)]
        assert tables, (f"benchmarks/{name} has no DOC_TABLES: a benchmark writes the tables it "
                        f"prints into docs/results.md (DOC_TABLES = ('NAME',), "
                        f"doc_tables.add_docs_arguments, check_docs_page, docs_page; "
                        f"<!-- table:NAME --> ... <!-- /table:NAME --> on the page)")
        for table in tables[0]:
            assert table not in owners, f"{table}: {owners.get(table)} and {name}"
            owners[table] = name
    assert set(owners) == set(page), (f"benchmarks write {sorted(owners)}, docs/results.md "
                                      f"marks {sorted(page)}")


def test_doc_tables_replaces_atomically(tmp_path):
    doc_tables = load("doc_tables")
    page = tmp_path / "page.md"
    page.write_text("intro `<!-- table:t -->` in prose\n<!-- table:t -->\nold\n"
                    "<!-- /table:t -->\nafter\n")
    assert doc_tables.write_table(str(page), "t", "| a |\n|---|\n| 1 |")
    assert page.read_text() == ("intro `<!-- table:t -->` in prose\n<!-- table:t -->\n"
                                "| a |\n|---|\n| 1 |\n<!-- /table:t -->\nafter\n")
    assert not doc_tables.write_table(str(page), "t", "| a |\n|---|\n| 1 |\n")
    with pytest.raises(doc_tables.MarkerError, match="no table 'u'"):
        doc_tables.write_tables(str(page), {"t": "new", "u": "x"})
    assert "| 1 |" in page.read_text()   # nothing written when one table is missing
    assert [p.name for p in tmp_path.iterdir()] == ["page.md"]   # no temporary file left
