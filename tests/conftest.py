"""Fixtures: the emulator on 127.0.0.1 in a background thread, configured per test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from helpers import EmulatorFactory

from bulkgene.testing import EmulatorConfig, EmulatorThread, GeneUniverse


@pytest.fixture
def make_emulator() -> Iterator[EmulatorFactory]:
    """Start emulators with given config fields (and an optional universe); all stop at teardown."""
    started: list[EmulatorThread] = []

    def make(universe: GeneUniverse | None = None, **config: Any) -> EmulatorThread:
        config.setdefault("rate_limit", False)
        emulator = EmulatorThread(EmulatorConfig(**config), universe).start()
        started.append(emulator)
        return emulator

    yield make
    for emulator in started:
        emulator.stop()


@pytest.fixture
def emulator(make_emulator: EmulatorFactory) -> EmulatorThread:
    """An emulator without rate limit, latency or faults."""
    return make_emulator()


@pytest.fixture(autouse=True)
def private_rate_budget(tmp_path_factory: pytest.TempPathFactory,
                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's bulkgene processes share a budget of their own, never ~/.cache's."""
    monkeypatch.setenv("BULKGENE_BUDGET_DIR", str(tmp_path_factory.mktemp("budget")))
