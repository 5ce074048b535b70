"""The docs cover the code: every public name, every module, every link.

Fast: it imports the two faces (lazy) and reads files; nothing is compiled.


- Every public name of both faces, `datadiet_jax.__all__` and `datadiet_jax.scores.__all__`,
  appears in `docs/library.md` in backticks: `name`, or as the first word of a backticked call or
  path such as `name(...)` or `name.attr`.
- Every module and subpackage of the package, found by walking `datadiet_jax/` at run time
  (`*.py` files other than `__init__.py`, and folders holding an `__init__.py`), sits in the tree
  of the first code block of `docs/architecture.md` at its own place: its file name (`api.py`) or
  folder name (`pergrad/`) on a line nested by indentation under the line of its folder
  (`scores/`), under `datadiet_jax/`. So `scores/pergrad/rules.py` is documented by a line
  `rules.py` indented under `pergrad/`, under `scores/`. A line may list several names
  (`aum.py, forgetting.py`).
- Every table that `make bench` writes (`docs/bench/*.md`, `benchmarks/doc_tables.TABLES`) is
  shown in some docs page between its markers, each marked block equals its file, and no row of
  those tables appears in a page outside a marked block (pasted by hand).
- README.md is at most 260 lines, and every relative link of README.md and docs/*.md points to a
  file or folder that exists, and to a heading of that page when it names one (`page.md#anchor`).
"""

import glob
import importlib
import os
import re

import pytest

from benchmarks import doc_tables

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "datadiet_jax")
README_MAX_LINES = 260


def _read(*parts):
    with open(os.path.join(ROOT, *parts), encoding="utf-8") as f:
        return f.read()


def _package_modules():
    """Paths under datadiet_jax/: 'scores/api.py' (a module), 'scores/pergrad/' (a package)."""
    found = []
    for folder, dirs, files in os.walk(PACKAGE):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
        rel = os.path.relpath(folder, PACKAGE).replace(os.sep, "/")
        prefix = "" if rel == "." else rel + "/"
        if prefix and "__init__.py" in files:
            found.append(prefix)
        found += [prefix + f for f in sorted(files) if f.endswith(".py") and f != "__init__.py"]
    return found


_TREE_ENTRY = re.compile(r"^( *)((?:\w+(?:\.py|/))(?:, *\w+(?:\.py|/))*)(?=\s|$)")


def _architecture_tree():
    """Paths relative to datadiet_jax/ that the first code block of docs/architecture.md names."""
    text = _read("docs", "architecture.md")
    block = re.search(r"```[^\n]*\n(.*?)```", text, re.S).group(1)
    documented = set()
    stack = []  # (indent, path relative to datadiet_jax/, or None outside the package)
    for line in block.splitlines():
        match = _TREE_ENTRY.match(line)
        if not match:
            continue
        indent, names = len(match.group(1)), [n.strip() for n in match.group(2).split(",")]
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if not stack:  # a top-level line: the package itself, or configs/, tests/, ...
            stack.append((indent, "" if names == ["datadiet_jax/"] else None))
            continue
        parent = stack[-1][1]
        if parent is None:
            continue
        for name in names:
            documented.add(parent + name)
        if len(names) == 1 and names[0].endswith("/"):
            stack.append((indent, parent + names[0]))
    return documented


def _slug(heading):
    """GitHub's anchor of a Markdown heading."""
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path):
    with open(path, encoding="utf-8") as f:
        text = re.sub(r"```.*?```", "", f.read(), flags=re.S)
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6} +(.+)$", text, re.M)}


def _doc_pages():
    return [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))


@pytest.mark.parametrize("face", ["datadiet_jax", "datadiet_jax.scores"])
def test_every_public_name_is_in_the_library_page(face):
    library = _read("docs", "library.md")
    quoted = set(re.findall(r"`([A-Za-z_]\w*)", library))
    missing = [n for n in importlib.import_module(face).__all__ if n not in quoted]
    assert not missing, f"docs/library.md does not name {missing} (as `name`)"


def test_every_module_is_in_the_architecture_page():
    modules = _package_modules()
    assert "scores/api.py" in modules and "scores/pergrad/" in modules
    documented = _architecture_tree()
    missing = [m for m in modules if m not in documented]
    assert not missing, (
        f"docs/architecture.md's tree lacks {missing}: add each as its file name (or folder/) "
        "on a line indented under its folder's line"
    )


def test_readme_is_a_front_door():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"


@pytest.mark.parametrize("page", _doc_pages(), ids=lambda p: os.path.relpath(p, ROOT))
def test_relative_links_point_to_existing_files(page):
    with open(page, encoding="utf-8") as f:
        text = re.sub(r"```.*?```", "", f.read(), flags=re.S)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        resolved = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
        if not os.path.exists(resolved):
            broken.append(target)
        elif anchor and resolved.endswith(".md") and anchor not in _anchors(resolved):
            broken.append(target + " (no such heading)")
    assert not broken, f"{os.path.relpath(page, ROOT)}: broken links {broken}"


def _bench_tables():
    return {name: doc_tables.table_text("bench/" + name) for name in doc_tables.TABLES}


def test_measured_tables_are_the_files_make_bench_writes():
    tables = _bench_tables()
    shown = set()
    for page in _doc_pages():
        with open(page, encoding="utf-8") as f:
            text = f.read()
        for rel, block in doc_tables.blocks(text):
            assert block == doc_tables.table_text(rel), (
                f"{os.path.relpath(page, ROOT)}: the block of {rel} is not that file; "
                "run python -m benchmarks.doc_tables --bench="
            )
            shown.add(rel[len("bench/") :])
        outside = doc_tables.BLOCK.sub("", text).splitlines()
        for name, table in tables.items():
            lines = table.splitlines() + [""]
            rows = [  # the body rows (a header, above its |---| line, may recur)
                r
                for r, below in zip(lines, lines[1:], strict=False)
                if r.startswith("| ") and "---" not in below
            ]
            pasted = [r for r in rows if r in outside]
            assert not pasted, f"{os.path.relpath(page, ROOT)} pastes rows of {name}: {pasted[:2]}"
    assert shown == set(tables), f"docs/bench tables shown in no page: {set(tables) - shown}"
