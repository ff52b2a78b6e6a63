"""``--config run.toml`` (or ``.yaml``): option values from a file, overridden by flags on the command line.

The file is read by an eager option callback into click's ``default_map`` of the invoked command,
so every later option takes the file's value as its default and a flag given on the command line
still wins. Keys are option names (``batch_size`` or ``batch-size``). A file may hold one table
per command (``[train]``, ``[eval]``) or plain keys for the one command it is given to. An unknown
key, or a file that does not parse, is a one-line error with the closest known option.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from simclip_bench.errors import UserError, did_you_mean

RESOLVED_DIR = "eval_configs"


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse a TOML or YAML file into a dict; anything else is a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--config {path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib
            data = tomllib.loads(path.read_text())
        elif suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(path.read_text()) or {}
        else:
            raise UserError(f"--config {path}: write it as .toml, .yaml or .yml")
    except UserError:
        raise
    except Exception as e:  # tomllib.TOMLDecodeError, yaml.YAMLError, UnicodeDecodeError
        raise UserError(f"--config {path} does not parse: {' '.join(str(e).split())}") from None
    if not isinstance(data, dict):
        raise UserError(f"--config {path}: expected key = value pairs at the top, got {type(data).__name__}")
    return data


def values_for_command(data: dict[str, Any], command: str, commands: set[str], params: dict,
                       source: Path) -> dict[str, Any]:
    """The file's values for ``command`` keyed by parameter name; unknown keys raise with a suggestion.

    ``params`` maps parameter name to whether it takes several values (those get a scalar wrapped in a list).
    """
    sections = {k for k, v in data.items() if k in commands and isinstance(v, dict)}
    table = data.get(command, {}) if sections else data
    if not isinstance(table, dict):  # e.g. `eval = 5` next to a [train] table
        raise UserError(f"--config {source}: {command!r} must be a table of option values, like the "
                        f"{sorted(sections)[0]!r} table, not {type(table).__name__}")
    values = {}
    for key, value in table.items():
        name = str(key).replace("-", "_")
        if name not in params or name == "config":
            known = [p.replace("_", "-") for p in params if p != "config"]
            raise UserError(f"--config {source}: 'simclip {command}' has no option {key!r}"
                            f"{did_you_mean(str(key).replace('_', '-'), known)}; known: {', '.join(known)}")
        values[name] = [value] if params[name] and not isinstance(value, list) else value
    return values


def _load_into_context(ctx: typer.Context, param: Any, value: Path | None) -> Path | None:
    if value is None or ctx.resilient_parsing:
        return value
    commands = set(getattr(ctx.parent.command, "commands", {})) if ctx.parent else set()
    params = {p.name: bool(getattr(p, "multiple", False)) for p in ctx.command.params}
    values = values_for_command(read_config_file(value), ctx.info_name, commands, params, value)
    ctx.default_map = {**(ctx.default_map or {}), **values}
    return value


def config_option() -> Any:
    """The ``--config`` option: declare it first on a command to let a file supply that command's options."""
    return typer.Option(None, "--config", is_eager=True, callback=_load_into_context, dir_okay=False,
                        help="TOML or YAML file of option values (keys as option names); flags given on the "
                             "command line override it.")


def save_resolved_config(out_dir: Path, run_id: str, command: str, settings: dict[str, Any]) -> Path:
    """Write the fully resolved settings of one run to ``out_dir/eval_configs/<run_id>.json``."""
    from simclip_bench.models.checkpoint import atomic_write_text  # imports torch: not on the --help path

    path = Path(out_dir) / RESOLVED_DIR / f"{run_id}.json"
    atomic_write_text(path, json.dumps({"command": command, "run_id": run_id, **settings}, indent=2,
                                       default=str) + "\n")
    return path
