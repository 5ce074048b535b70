"""Command-line overrides of a config: one line naming an override's unknown key.

`--config.x.y=value` sets a field the config file has; ml_collections refuses any other key with
the bare key ("'hidden'"). `unknown_key` loads the config file of `--config=PATH[:ARG]` again,
finds the first override whose key the config lacks, and says which key, the close matches
and, under `config.model.kwargs`, how model keyword arguments are set from the command line: a
dict, `--config.model.kwargs='{"hidden": 32}'` (it replaces the config's kwargs; a key the
config file already sets can also be set alone, `--config.model.kwargs.hidden=32`).

Usage:

    from datadiet_jax.pipeline import overrides
    line = overrides.unknown_key(sys.argv)   # None when every override names a known key
"""

from __future__ import annotations

import difflib
import importlib.util
import json


def _load(argv: list[str]):
    """The config of `--config=PATH[:ARG]` in `argv`, or None when it cannot be loaded."""
    given = [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]
    if not given:
        return None
    path, _, arg = given[-1].partition(":")
    try:
        spec = importlib.util.spec_from_file_location("_datadiet_config", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.get_config(arg) if arg else module.get_config()
    except Exception:  # noqa: BLE001 (the flag parser reports a config that does not load)
        return None


def _kwargs_hint(override: str, key: str) -> str:
    """How to set model kwargs from the command line, with the override's own value."""
    value = override.split("=", 1)[1] if "=" in override else "..."
    try:
        shown = json.dumps({key: json.loads(value)})
    except ValueError:
        shown = json.dumps({key: value})
    return (
        f"set model keyword arguments as --config.model.kwargs='{shown}' (a dict; it replaces "
        "the config's kwargs, so name them all)"
    )


def unknown_key(argv: list[str]) -> str | None:
    """One line naming the first `--config.` override of `argv` whose key the config lacks.

    Returns:
      'OVERRIDE: config.A has no key K; did you mean config.A.M?' (with the kwargs hint under
      `config.model.kwargs`), or None when the config does not load or every key exists.
    """
    config = _load(argv)
    if config is None:
        return None
    for override in argv:
        if not override.startswith("--config."):
            continue
        keys = override.split("=", 1)[0][len("--config.") :].split(".")
        node, parent = config, "config"
        for key in keys:
            if not hasattr(node, "keys"):
                break
            if key not in node:
                if parent == "config.model.kwargs":
                    return (
                        f"{override}: {parent} has no key {key!r}; {_kwargs_hint(override, key)}."
                    )
                close = difflib.get_close_matches(key, [str(k) for k in node.keys()], n=3)
                hint = (
                    f"; did you mean {' or '.join(f'{parent}.{c}' for c in close)}?"
                    if close
                    else f"; it has {sorted(node.keys())}."
                )
                return f"{override}: {parent} has no key {key!r}{hint}"
            node, parent = node[key], f"{parent}.{key}"
    return None
