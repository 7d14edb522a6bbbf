"""The tiny examples in the rewriter's docstrings are true."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import gateway.rewrite

MODULES = sorted(m.name for m in pkgutil.iter_modules(gateway.rewrite.__path__, "gateway.rewrite."))


@pytest.mark.parametrize("name", ["gateway.rewrite", *MODULES])
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name))
    assert result.failed == 0
