"""The audit's journal: each finished attack's rows, appended as soon as it ends.

An interrupted audit (Ctrl-C, a crash, a killed process) keeps every attack that
finished; a new run given the same file skips them. Each line is one JSON row,
flushed and fsync'ed; a line cut short by a crash is ignored.
"""

from __future__ import annotations

import contextvars
import json
import os
from contextlib import contextmanager
from pathlib import Path

from kmi.audit.report import _json_default

#: The attacks an audit runs, when it runs only some (:func:`only_attacks`).
_ONLY = contextvars.ContextVar("kmi_audit_only_attacks", default=None)

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


@contextmanager
def only_attacks(names, baselines: bool = True):
    """Within this block, audits run only the attacks named in ``names``.

    The others are passed over as if they were not in the attack list (no row, no
    skip recorded). Baselines, which never query the model and whose rows other
    rows may be measured against, run too unless ``baselines`` is False. This is
    how one unit of a parallel audit (:mod:`kmi.audit._parallel`) runs one attack
    of a model with the audit's own code, "auto" semantics included.
    """
    token = _ONLY.set((frozenset(names), bool(baselines)))
    try:
        yield
    finally:
        _ONLY.reset(token)


def selected(specs):
    """The ``(name, class, parameters)`` specs of ``specs`` an audit runs now."""
    only = _ONLY.get()
    if only is None:
        return list(specs)
    names, baselines = only
    return [s for s in specs if s[0] in names or (baselines and is_baseline(s[1]))]


def is_baseline(cls) -> bool:
    """Whether an attack spec's class is a baseline (no class, or one that never
    queries the model)."""
    return cls is None or not getattr(cls, "uses_target", True)
