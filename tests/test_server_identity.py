"""A directory belongs to the server that filled it: its origin, scheme, host and port."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import EmulatorFactory, make_config, served, write_ids

import bulkgene
from bulkgene.config import NetworkSpec
from bulkgene.errors import ConfigError, FingerprintMismatch


@pytest.mark.parametrize(("base_url", "origin"), [
    ("https://api.ncbi.nlm.nih.gov/datasets/v2", "https://api.ncbi.nlm.nih.gov"),
    ("https://api.ncbi.nlm.nih.gov:443/datasets/v2", "https://api.ncbi.nlm.nih.gov"),
    ("https://API.ncbi.nlm.nih.gov:8443/datasets/v2", "https://api.ncbi.nlm.nih.gov:8443"),
    ("http://127.0.0.1:8765/datasets/v2", "http://127.0.0.1:8765"),
    ("http://127.0.0.1:80/datasets/v2", "http://127.0.0.1"),
    ("http://[::1]:8765/datasets/v2", "http://[::1]:8765"),
])
def test_the_server_is_the_origin_of_the_base_url(base_url: str, origin: str) -> None:
    assert NetworkSpec(base_url=base_url).server == origin


def test_a_base_url_with_an_impossible_port_is_a_usage_error() -> None:
    with pytest.raises(ConfigError, match=r"(?i)port"):
        NetworkSpec(base_url="http://127.0.0.1:99999/datasets/v2")


async def test_a_directory_filled_from_one_port_is_not_resumed_against_another(
        make_emulator: EmulatorFactory, tmp_path: Path) -> None:
    first, second = make_emulator(), make_emulator(seed=9)
    source = write_ids(tmp_path / "ids.txt", range(1, 41))
    out = tmp_path / "out"
    await bulkgene.download(make_config([str(source)], out, base_url=first.base_url,
                                        requests_per_second=1000.0, progress_interval_s=0))
    with pytest.raises(FingerprintMismatch, match="server") as caught:
        await bulkgene.download(make_config([str(source)], out, base_url=second.base_url,
                                            requests_per_second=1000.0, progress_interval_s=0))
    assert f"127.0.0.1:{first.port}" in str(caught.value)
    assert f"127.0.0.1:{second.port}" in str(caught.value)
    assert not served(second.state.arrivals()), "nothing asked of the other server"
