"""A faithful local emulator of NCBI Datasets v2 gene reports, for tests, bench/ and the demo."""

from bulkgene.testing.emulator import (
    API_PREFIX,
    ENDPOINTS,
    FAULTS,
    Arrival,
    EmulatorConfig,
    EmulatorState,
    create_app,
)
from bulkgene.testing.server import LOOPBACK, EmulatorThread, serve_forever
from bulkgene.testing.universe import Content, Fate, GeneUniverse

__all__ = [
    "API_PREFIX",
    "ENDPOINTS",
    "FAULTS",
    "LOOPBACK",
    "Arrival",
    "Content",
    "EmulatorConfig",
    "EmulatorState",
    "EmulatorThread",
    "Fate",
    "GeneUniverse",
    "create_app",
    "serve_forever",
]
