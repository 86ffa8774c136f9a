"""Fixtures shared by every test: a user's state folder and a virtual bench
(see tests/harness.py)."""

from __future__ import annotations

import pytest

from tests.harness import Home


@pytest.fixture
def edge_home(tmp_path) -> Home:
    """A fresh ``EDGE_HOME`` (registry, bench folder, keys) and the environment for `edge`."""
    return Home(tmp_path / "home")


@pytest.fixture
def bench(edge_home):
    """``edge_home`` whose ``up()`` starts virtual boards; they are stopped after the test."""
    try:
        yield edge_home
    finally:
        edge_home.down()


@pytest.fixture(scope="module")
def module_bench(tmp_path_factory):
    """A :class:`Home` shared by the tests of one module; its boards are stopped after the module."""
    home = Home(tmp_path_factory.mktemp("edge-home"))
    try:
        yield home
    finally:
        home.down()


def pytest_collection_modifyitems(config, items):
    """Tests marked ``emulated`` (the real firmware on an emulated chip: minutes, Node, the firmware
    build) run only when asked for with ``-m emulated`` (``make test-emulated``), so ``make test``
    stays within its budget."""
    if "emulated" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="an emulated-chip test: run it with `make test-emulated`")
    for item in items:
        if "emulated" in item.keywords:
            item.add_marker(skip)
