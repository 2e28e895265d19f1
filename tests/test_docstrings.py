"""Docstrings of the public API: numpydoc sections that parse, with every parameter."""

import inspect
import re

import pytest

import kmi.attacks as A

_SECTION = re.compile(r"^    (\w[\w ]*)\n    -+$", re.MULTILINE)


def _sections(doc):
    """Section title -> body of a class docstring indented by four spaces."""
    doc = inspect.cleandoc("    " + doc.lstrip()) if doc else ""
    doc = "\n".join("    " + line if line else line for line in doc.splitlines())
    found = list(_SECTION.finditer(doc))
    return {
        m[1]: doc[m.end() : found[i + 1].start() if i + 1 < len(found) else len(doc)]
        for i, m in enumerate(found)
    }


@pytest.mark.parametrize("name", A.__all__)
def test_attack_docstring_documents_every_parameter_and_has_an_example(name):
    cls = getattr(A, name)
    sections = _sections(cls.__doc__)
    assert "Parameters" in sections and "Examples" in sections, name
    documented = set(re.findall(r"^    (\w+)(?: :|$)", sections["Parameters"], re.MULTILINE))
    for line in re.findall(r"^    (\w+(?:, \w+)+) :", sections["Parameters"], re.MULTILINE):
        documented |= set(line.split(", "))
    params = set(inspect.signature(cls.__init__).parameters) - {"self"}
    assert params <= documented, (name, sorted(params - documented))
    assert not re.search(r"^\s*\{\w+\}\s*$", cls.__doc__, re.MULTILINE), name  # unfilled
