"""What every `fleos` subcommand shares: the exit-status convention, the parser class, the
`type=` checks of numeric arguments and the checks of input files (see `fleos.cli`)."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

EXIT_STATUS = ("exit status: 0 success; 1 a run that failed or did not converge (the output "
               "still says which); 2 bad input, with one line on stderr naming the argument "
               "or file.")


class InputError(ValueError):
    """Bad input given on the command line: exit 2 with the message on one line."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block), exit 2, and the exit-status note."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        epilog = kwargs.get("epilog")
        kwargs["epilog"] = f"{epilog}\n\n{EXIT_STATUS}" if epilog else EXIT_STATUS
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def number_type(kind: type, test: Callable[[float], bool], what: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if not (math.isfinite(value) and test(value)):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value

    return parse


positive_float = number_type(float, lambda v: v > 0, "a number > 0")
nonneg_float = number_type(float, lambda v: v >= 0, "a number >= 0")
positive_int = number_type(int, lambda v: v >= 1, "an integer >= 1")
nonneg_int = number_type(int, lambda v: v >= 0, "an integer >= 0")


def out_file(text: str) -> str:
    """`type=` of --out: a file name in a folder that exists and is writable, so that a bad
    --out is refused before any solve starts (argparse reports it on one line, exit 2)."""
    p = Path(text)
    folder = p.parent
    if not text:
        raise argparse.ArgumentTypeError("must be a file name, got ''")
    if p.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder; give a file name, e.g. "
                                         f"{str(p / 'out.json')!r}")
    if not folder.is_dir():
        why = "is not a folder" if folder.exists() else "does not exist"
        raise argparse.ArgumentTypeError(f"{text!r}: the folder {str(folder)!r} {why}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{text!r}: the folder {str(folder)!r} is not "
                                         f"writable")
    return text


def write_json_output(doc: Any, out: str | None) -> None:
    """The command's JSON document to the file `out` (atomic: a reader never sees a partial
    file, and a failed run leaves none) or, without --out, to stdout."""
    text = json.dumps(doc, indent=1) + "\n"
    if out:
        from fleos.core.files import atomic_path

        with atomic_path(out) as tmp:
            tmp.write_text(text)
    else:
        sys.stdout.write(text)


def read_npz(path: str, arg: str, keys: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """The arrays of an .npz file given as `arg`; InputError names the argument and file if
    it is missing, not an npz archive (e.g. text), or lacks one of `keys`."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{arg} {path}: no such file")
    if not zipfile.is_zipfile(p):
        raise InputError(f"{arg} {path}: not an .npz archive (numpy.savez)")
    try:
        with np.load(p, allow_pickle=False) as z:
            out = {k: z[k] for k in z.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise InputError(f"{arg} {path}: unreadable .npz archive: {e}") from None
    missing = [k for k in keys if k not in out]
    if missing:
        raise InputError(f"{arg} {path}: lacks array(s) {missing} (has {sorted(out)})")
    return out


def check_training_data(X: np.ndarray, y: np.ndarray, source: str,
                        X_test: np.ndarray | None = None,
                        y_test: np.ndarray | None = None) -> None:
    """At least one training point, matching lengths, finite values; else InputError."""
    if len(X) == 0:
        raise InputError(f"{source}: X has no rows (n = 0 training points)")
    if len(y) != len(X):
        raise InputError(f"{source}: y has {len(y)} entries but X has {len(X)} rows")
    for name, a in (("X", X), ("y", y), ("X_test", X_test), ("y_test", y_test)):
        if a is not None and not np.all(np.isfinite(np.asarray(a, dtype=np.float64))):
            raise InputError(f"{source}: {name} contains NaN or infinite values")


def terminal_progress(label: str) -> Callable[[float, Any], None] | None:
    """Per-solve progress lines on stderr when it is a terminal (`progress_printer`), else
    None: piped or redirected output stays exactly the JSON/table."""
    if not sys.stderr.isatty():
        return None
    from fleos.theory.solvers import progress_printer

    return progress_printer(lambda line: print(line, file=sys.stderr, flush=True), label)
