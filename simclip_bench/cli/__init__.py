"""The ``simclip`` command line: a thin layer that parses options, calls the library, renders with rich.

Each command lives in its own module and registers itself on :data:`app` when imported; add a new
command by adding its module to the import list below.
"""
from simclip_bench.cli import (  # noqa: F401  (register commands)
    attack_cmd,
    bench_cmd,
    eval_cmd,
    export_cmd,
    leaderboard_cmd,
    ls_cmd,
    pretrain_cmd,
    pretrain_vlm_cmd,
    train_cmd,
)
from simclip_bench.cli.app import app, main

__all__ = ["app", "main"]
