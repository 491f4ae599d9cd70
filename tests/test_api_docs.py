"""The lake API is documented as lsdb documents its own (numpydoc), and the documentation holds.

Every public callable of ``tmass_lake.lake``'s modules (everything ``tmass_lake.lake`` exports among
them) and every public method and property of its classes has a numpydoc docstring whose
Parameters section names exactly its parameters, in order, each with a type and a description,
and which has a Returns section when it returns something: checked by numpydoc's own validator.
The examples in those docstrings run (``doctest``; those needing a built lake are marked SKIP).
"""

from __future__ import annotations

import doctest
import functools
import importlib
import inspect
import pkgutil

import pytest
from numpydoc.validate import validate

import tmass_lake.lake

MODULES = [importlib.import_module(f"tmass_lake.lake.{m.name}")
           for m in pkgutil.iter_modules(tmass_lake.lake.__path__)]
REQUIRED = {
    "GL08": "no docstring",
    "SS01": "no summary",
    "PR01": "parameters not documented",
    "PR02": "documented parameters it does not take",
    "PR03": "parameters documented out of order",
    "PR04": "a parameter without a type",
    "PR07": "a parameter without a description",
    "PR10": "no space around a parameter's colon",
    "RT01": "no Returns section",
    "RT03": "a return value without a description",
}
"""numpydoc validation codes that fail the test (its style codes, e.g. capitals or verb moods, do not)."""


def is_method(value: object) -> bool:
    return inspect.isfunction(value) or isinstance(value, property | functools.cached_property)


def public_api() -> list[str]:
    """Dotted names of the public callables defined in the lake modules, and of their classes'
    public methods and properties (inherited ones are documented where they are defined)."""
    names = []
    for module in MODULES:
        for name, obj in vars(module).items():
            defined_here = getattr(obj, "__module__", None) == module.__name__
            if name.startswith("_") or not callable(obj) or not defined_here:
                continue
            names.append(f"{module.__name__}.{name}")
            if inspect.isclass(obj):
                names += [f"{module.__name__}.{name}.{attr}" for attr, value in vars(obj).items()
                          if not attr.startswith("_") and is_method(value)]
    return names


API = public_api() + [f"tmass_lake.errors.{n}" for n in tmass_lake.lake.__all__  # errors it re-exports
                      if getattr(getattr(tmass_lake.lake, n), "__module__", "") == "tmass_lake.errors"]


def test_every_exported_callable_is_checked():
    exported = [getattr(tmass_lake.lake, n) for n in tmass_lake.lake.__all__]
    checked = {f"{obj.__module__}.{obj.__qualname__}" for obj in exported if callable(obj)}
    assert checked and checked <= set(API), sorted(checked - set(API))
    assert "tmass_lake.lake.api.Lake.open" in API and "tmass_lake.lake.api.Lake.tables" in API


@pytest.mark.parametrize("name", API)
def test_numpydoc_docstring(name):
    errors = validate(name)["errors"]
    wrong = [f"{code} ({REQUIRED[code]}): {message}" for code, message in errors if code in REQUIRED]
    assert not wrong, f"{name}:\n" + "\n".join(wrong)


def test_a_docstring_missing_a_parameter_fails_the_check():
    """The check can fail: numpydoc flags an undocumented parameter and a missing Returns section."""
    codes = {code for code, _ in validate(f"{__name__}.undocumented")["errors"]}
    assert {"PR01", "RT01"} <= codes


def undocumented(lake: str, table: str) -> int:
    """Something, with a parameter the Parameters section forgets.

    Parameters
    ----------
    lake : str
        A lake.
    """
    return len(lake + table)


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_docstring_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
