"""How a plugin's ``audiotrain <command>`` runs: its arguments parsed, the libraries quiet, a ``UserError`` one line
on stderr with exit code 2, and what it returns printed."""
from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

from audiotrain.errors import UserError


def run_command(prog: str, parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], Any],
                argv: list[str], *, highlight: bool = True) -> int:
    """``run(parser's arguments)`` and print its result (0), or ``prog: <sentence>`` for a ``UserError`` (2)."""
    from audiotrain.train.console import console, quiet_libraries

    args = parser.parse_intermixed_args(argv)
    try:
        quiet_libraries()
        result = run(args)
    except UserError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    console.print(result, highlight=highlight)
    return 0
