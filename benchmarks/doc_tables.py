"""Puts the tables the benchmarks write into the docs: `make bench` runs it last.

Each table a benchmark writes (`bench/X.md`) has one copy in `docs/bench/` (`TABLES`), and a docs
page shows it between two markers, which this tool rewrites from that copy:

    <!-- table: bench/mesh_memory.md -->
    | K | train.mesh | ... |
    <!-- end table -->

So a measured table is written by its benchmark and never by hand; `tests/test_docs.py` checks
that every marked block equals its copy.

Usage:

    python -m benchmarks.doc_tables --bench=bench   # copy bench/*.md, then rewrite the blocks
    python -m benchmarks.doc_tables --bench=        # only rewrite the blocks from docs/bench/
"""

from __future__ import annotations

import glob
import os
import re
import shutil

from absl import app, flags, logging

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")

# docs/bench/<name>: the benchmark output (a file of the bench folder) it copies.
TABLES = {
    "bench_cpu.md": "bench.md",
    "bench_loop.md": "bench_loop.md",
    "prune.md": "prune.md",
    "bench_backward.md": "bench_backward.md",
    "mesh_memory.md": "mesh_memory.md",
    "public_call.md": "public_call.md",
    "xla_flags.md": "xla_flags.md",
}

BLOCK = re.compile(r"(<!-- table: (bench/[\w.]+) -->\n)(.*?)(<!-- end table -->)", re.S)

FLAGS = flags.FLAGS
flags.DEFINE_string("bench", "bench", "Folder of a `make bench` run; '' copies nothing.")


def copy_tables(bench_dir: str) -> list[str]:
    """Copies each benchmark table of `bench_dir` that exists to docs/bench/; returns the names."""
    copied = []
    for name, written in TABLES.items():
        source = os.path.join(bench_dir, written)
        if os.path.exists(source):
            shutil.copyfile(source, os.path.join(DOCS, "bench", name))
            copied.append(name)
    return copied


def table_text(rel_path: str) -> str:
    """The text of `docs/<rel_path>` ('bench/mesh_memory.md'), ending in one newline."""
    with open(os.path.join(DOCS, rel_path), encoding="utf-8") as f:
        return f.read().rstrip("\n") + "\n"


def filled(page: str) -> str:
    """`page` (a docs page's text) with every marked block replaced by its table's text."""
    return BLOCK.sub(lambda m: m.group(1) + table_text(m.group(2)) + m.group(4), page)


def blocks(page: str) -> list[tuple[str, str]]:
    """(rel_path, text between the markers) of every marked block of a page."""
    return [(m.group(2), m.group(3)) for m in BLOCK.finditer(page)]


def main(argv):
    del argv
    if FLAGS.bench:
        logging.info("copied %s from %s to docs/bench/", copy_tables(FLAGS.bench), FLAGS.bench)
    for path in sorted(glob.glob(os.path.join(DOCS, "*.md"))):
        with open(path, encoding="utf-8") as f:
            page = f.read()
        new = filled(page)
        if new != page:
            with open(path, "w", encoding="utf-8") as f:
                f.write(new)
            logging.info("rewrote the tables of %s", os.path.relpath(path, ROOT))


if __name__ == "__main__":
    app.run(main)
