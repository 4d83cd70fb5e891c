"""Command-line plumbing shared by every command (``run``, ``sweep``, ``final``, ``analysis``).

Bad input is one line on stderr and exit code 2: :class:`UsageError` carries the line, and
:class:`Parser` turns argparse's own errors into it instead of printing usage and exiting.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from typing import NoReturn


class UsageError(Exception):
    """Bad input, reported as one line with exit code 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def check_range(flag: str, value: float | None, low: float, integer: bool = False, open_low: bool = False) -> None:
    if value is None:
        return
    if (value <= low if open_low else value < low) or not math.isfinite(value):
        bound = f"> {low}" if open_low else f">= {low}"
        raise UsageError(f"{flag} {value} is invalid: must be {'an integer ' if integer else ''}{bound}")


def format_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table with aligned columns (readable in a terminal and in MLflow)."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    return "\n".join(lines)


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


#: Exit codes: bad input, and Ctrl-C (128 + SIGINT, as a shell reports it).
EXIT_USAGE, EXIT_INTERRUPTED = 2, 130


def run_command(prog: str, body: Callable[[], int], usage_errors: tuple[type[Exception], ...] = ()) -> int:
    """Run a command's ``body``: bad input (:class:`UsageError` or ``usage_errors``) is one line on
    stderr and exit 2; Ctrl-C outside Ray Tune's own handling is one line and exit 130."""
    try:
        return body()
    except (UsageError, *usage_errors) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
