"""Reading the datasets' own files with errors that name the file."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any


def read_json(path: str | os.PathLike) -> Any:
    """The parsed JSON of a file.

    Raises:
      ValueError: naming the file, if it is missing or unreadable, or not valid JSON.
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error}).") from error
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: cannot be read ({getattr(error, 'strerror', None) or error}).") from error


def check_record(record: Any, keys: Sequence[str], where: str) -> None:
    """Checks that a parsed JSON/pickle record is a dict holding every key of ``keys``.

    Args:
      where: how an error names the record, e.g. ``"refs.p: refs[3]"``.

    Raises:
      ValueError: naming the record, if it is not a dict or lacks some of ``keys``.
    """
    if not isinstance(record, dict):
        raise ValueError(f"{where} is not an object.")
    missing = [key for key in keys if key not in record]
    if missing:
        raise ValueError(f"{where} lacks {', '.join(map(repr, missing))}.")
