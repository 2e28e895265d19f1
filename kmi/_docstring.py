"""One mechanism for parameter text shared by several docstrings.

A docstring holds a placeholder line ``{name}`` (alone on its line, at the indentation
the text must have); :func:`fill_doc` replaces it with the shared text, dedented and
re-indented to that line's indentation, so a shared section never falls out of its
numpydoc section whatever the indentation it was written with.
"""

from __future__ import annotations

import re
import textwrap

__all__ = ["fill_doc"]

_PLACEHOLDER = re.compile(r"^(?P<indent>[ \t]*)\{(?P<name>\w+)\}[ \t]*$", re.MULTILINE)


def fill_doc(**snippets: str):
    """Class or function decorator filling ``{name}`` lines of the docstring.

    Examples
    --------
    >>> from kmi._docstring import fill_doc
    >>> @fill_doc(seed_param="seed : int\\n    The seed.")
    ... def f(seed):
    ...     '''Do it.
    ...
    ...     Parameters
    ...     ----------
    ...     {seed_param}
    ...     '''
    >>> print(f.__doc__.splitlines()[4:6])
    ['    seed : int', '        The seed.']
    """

    def fill(match: re.Match) -> str:
        name = match["name"]
        if name not in snippets:
            raise KeyError(f"No shared docstring text named {name!r}. Received: {{{name}}}")
        text = textwrap.dedent(snippets[name]).strip("\n")
        return textwrap.indent(text, match["indent"])

    def decorator(obj):
        if obj.__doc__:
            obj.__doc__ = _PLACEHOLDER.sub(fill, obj.__doc__)
        return obj

    return decorator
