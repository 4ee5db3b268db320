"""Write a benchmark's tables into its docs page, between markers.

A docs page marks each table a benchmark writes with two lines of their own::

    <!-- table:NAME -->
    | ... the table, rewritten on every run ... |
    <!-- /table:NAME -->

:func:`write_table` replaces what lies between the two markers of ``NAME`` (the markers stay)
and rewrites the page atomically: a temporary file in the page's folder, then
:func:`os.replace`, so an interrupted run leaves the old page or the new one, never half of
one. :func:`add_docs_arguments` gives a benchmark its ``--docs PAGE`` / ``--no-docs``
options; :func:`write_tables` writes several tables of one run in one go.

    python benchmarks/doc_tables.py PAGE NAME < table.md   # by hand: a table from stdin
"""

import argparse
import os
import re
import sys
import tempfile

__all__ = ["DOCS", "RESULTS", "MarkerError", "markers", "replace_table", "write_table",
           "write_tables", "add_docs_arguments", "check_docs_page", "docs_page",
           "shift_headings"]

#: The repository's ``docs/`` folder and its results page, the default page of every benchmark.
DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")
RESULTS = os.path.join(DOCS, "results.md")

_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
_MARKER = re.compile(rf"^<!-- (/?)table:({_NAME}) -->[ \t]*$", re.MULTILINE)


class MarkerError(ValueError):
    """A page's table markers are missing, repeated, unclosed or out of order."""


def markers(text):
    """``{name: (start, end)}``: for each table of ``text``, the character span of its content
    (from after the opening marker's line to the start of the closing marker's line).
    :class:`MarkerError` names the first problem: a closing marker without an opening one, a
    table opened inside another, a name used twice, a table never closed."""
    spans, open_name, open_end = {}, None, None
    for m in _MARKER.finditer(text):
        closing, name = m.group(1) == "/", m.group(2)
        line = text.count("\n", 0, m.start()) + 1
        if not closing:
            if open_name is not None:
                raise MarkerError(f"line {line}: table {name!r} opens inside table "
                                  f"{open_name!r}")
            if name in spans:
                raise MarkerError(f"line {line}: table {name!r} appears twice")
            open_name, open_end = name, m.end() + 1   # content starts on the next line
        else:
            if open_name != name:
                raise MarkerError(f"line {line}: closing marker of table {name!r} without its "
                                  f"opening marker" + (f" (table {open_name!r} is open)"
                                                       if open_name else ""))
            spans[name] = (min(open_end, m.start()), m.start())
            open_name = None
    if open_name is not None:
        raise MarkerError(f"table {open_name!r} is never closed (<!-- /table:{open_name} -->)")
    return spans


def replace_table(text, name, table):
    """``text`` with the content of table ``name`` replaced by ``table`` (one trailing newline
    added if missing). :class:`MarkerError` if the page has no such table."""
    if not re.fullmatch(_NAME, name):
        raise ValueError(f"table name must match {_NAME}, not {name!r}")
    spans = markers(text)
    if name not in spans:
        raise MarkerError(f"no table {name!r} (<!-- table:{name} --> ... "
                          f"<!-- /table:{name} -->); tables: {', '.join(spans) or 'none'}")
    if _MARKER.search(table):
        raise ValueError(f"the new content of table {name!r} contains a table marker")
    start, end = spans[name]
    body = table if table.endswith("\n") else table + "\n"
    return text[:start] + body + text[end:]


def _atomic_write_text(path, text):
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        try:
            os.chmod(tmp, os.stat(path).st_mode & 0o777)
        except OSError:
            pass
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_tables(page, tables):
    """Replace several tables of ``page`` (``{name: markdown}``) and write it atomically,
    or change nothing if any table is missing (:class:`MarkerError`). Returns the names
    whose content changed (the page is not rewritten when none did)."""
    with open(page, encoding="utf-8") as f:
        old = f.read()
    new = old
    for name, table in tables.items():
        new = replace_table(new, name, table)
    changed = [name for name in tables
               if _content(old, name) != _content(new, name)]
    if new != old:
        _atomic_write_text(page, new)
    return changed


def _content(text, name):
    start, end = markers(text)[name]
    return text[start:end]


def write_table(page, name, table):
    """Replace the content of table ``name`` in ``page`` by ``table``, atomically; True when
    it changed."""
    return bool(write_tables(page, {name: table}))


def add_docs_arguments(parser, default=RESULTS):
    """``--docs PAGE`` (default ``docs/results.md``) and ``--no-docs`` for a benchmark."""
    group = parser.add_argument_group("docs")
    group.add_argument("--docs", default=default, metavar="PAGE",
                       help=f"docs page whose marked tables this run rewrites (default: "
                            f"{os.path.relpath(default)})")
    group.add_argument("--no-docs", dest="docs", action="store_const", const=None,
                       help="do not write the docs page (quick runs with fewer seeds or epochs)")
    return group


def check_docs_page(args, names):
    """Before a long run: the page of ``args.docs`` (unless ``--no-docs``) exists and has a
    table for each of ``names``; :class:`MarkerError` or OSError otherwise."""
    if not getattr(args, "docs", None):
        return
    with open(args.docs, encoding="utf-8") as f:
        spans = markers(f.read())
    missing = [name for name in names if name not in spans]
    if missing:
        raise MarkerError(f"{args.docs}: no table {', '.join(map(repr, missing))} (tables: "
                          f"{', '.join(spans) or 'none'}); pass --no-docs to run without it")


def shift_headings(text, level):
    """``text`` with its Markdown headings moved so the largest becomes ``level`` (``#`` = 1),
    for a benchmark's printed report placed inside a section of a docs page."""
    found = [len(m.group(1)) for m in re.finditer(r"^(#{1,6}) ", text, re.MULTILINE)]
    if not found:
        return text
    delta = level - min(found)
    return re.sub(r"^(#{1,6}) ", lambda m: "#" * max(1, min(6, len(m.group(1)) + delta)) + " ",
                  text, flags=re.MULTILINE)


def docs_page(args, tables, log=None):
    """Write ``tables`` (``{name: markdown}``) into ``args.docs`` unless ``--no-docs``; tell
    ``log`` (a ``print``-like callable) what happened. Returns the names that changed."""
    if not getattr(args, "docs", None):
        return []
    changed = write_tables(args.docs, tables)
    if log is not None:
        log(f"docs: {args.docs}: " + (f"rewrote table {', '.join(changed)}" if changed
                                      else f"table {', '.join(tables)} unchanged"))
    return changed


def main(argv=None):
    parser = argparse.ArgumentParser(description="Replace a marked table of a docs page with "
                                                 "the text on stdin.")
    parser.add_argument("page")
    parser.add_argument("name")
    args = parser.parse_args(argv)
    try:
        changed = write_table(args.page, args.name, sys.stdin.read())
    except (OSError, ValueError) as exc:
        print(f"doc_tables: error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.page}: table {args.name} {'rewritten' if changed else 'unchanged'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
