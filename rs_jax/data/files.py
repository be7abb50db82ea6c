"""Reading the datasets' own files with errors that name the file."""

from __future__ import annotations

import json
import os
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
