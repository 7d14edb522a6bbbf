"""The tiny examples in the docstrings of the rewriter and the privacy guard are true."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import gateway.privacy
import gateway.rewrite

MODULES = sorted(m.name for package in (gateway.rewrite, gateway.privacy)
                 for m in pkgutil.iter_modules(package.__path__, package.__name__ + "."))


@pytest.mark.parametrize("name", ["gateway.rewrite", *MODULES])
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name))
    assert result.failed == 0
