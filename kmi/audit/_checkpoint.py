"""The audit's journal: each finished attack's rows, appended as soon as it ends.

An interrupted audit (Ctrl-C, a crash, a killed process) keeps every attack that
finished; a new run given the same file skips them. Each line is one JSON row,
flushed and fsync'ed; a line cut short by a crash is ignored.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from kmi.audit.report import _json_default

#: Row fields that identify one measured result.
KEY_FIELDS = ("target", "task", "attack", "split")


def row_key(row) -> tuple:
    """The identity of a row: (target, task, attack, split); tabular rows name their
    task by the sensitive attribute."""
    return (
        str(row.get("target")),
        str(row.get("task", row.get("sensitive"))),
        str(row.get("attack")),
        str(row.get("split", "")),
    )


def read_checkpoint(path) -> dict:
    """Rows already journaled in ``path``, by :func:`row_key` ({} if there is none)."""
    if path is None or not Path(path).exists():
        return {}
    done = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a crash
                continue
            if isinstance(row, dict):
                done[row_key(row)] = row
    return done


def append_checkpoint(path, rows) -> None:
    """Append ``rows`` to the journal at ``path`` and force them to disk."""
    if path is None or not rows:
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, default=_json_default) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
