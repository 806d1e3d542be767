"""Fixtures for the B4B tests: a victim encoder trained once per session, tiny encoders, servers.

Thread count: the B4B tests pin torch to one thread (results are bitwise reproducible per thread
count, tests/conftest.py) and restore the previous setting afterwards, so other test packages are
unaffected.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
EXPERIMENT_CONFIG = REPO / "configs" / "b4b_digits.yaml"

# Victim for the tests = `genleak b4b train-encoder` defaults (~60 s on one free core). Smaller
# victims spread the broad world over fewer buckets (2^10 buckets: 4000 images x 8 epochs reach 0.51
# at 6k stealing queries; 6000 x 8 reach 0.64 at 10k vs 0.68 here), so the stealer gets more
# almost-free queries (6000 x 8: stolen copy 66% vs 49% here, undefended ~90%).
VICTIM_IMAGES = 6000
VICTIM_EPOCHS = 10


class _Threads:
    def __init__(self, n: int) -> None:
        self.n = n

    def __enter__(self) -> None:
        self.prev = torch.get_num_threads()
        torch.set_num_threads(self.n)

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self.prev)


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    with _Threads(1):
        yield


@pytest.fixture(scope="session")
def experiment_config() -> Path:
    """The shipped experiment config: tests use it as is, so it cannot drift from what they check."""
    return EXPERIMENT_CONFIG


@pytest.fixture(scope="session")
def victim_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default victim (InfoNCE CNN on the broad world), trained once and saved to a folder."""
    from genleak.b4b import data
    from genleak.b4b.encoder import train_simclr_encoder

    out = tmp_path_factory.mktemp("victim")
    with _Threads(1):
        enc = train_simclr_encoder(data.sample_world(VICTIM_IMAGES, seed=1), epochs=VICTIM_EPOCHS, seed=0, progress=False)
        enc.save(out)
    return out


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained normalised CNN: enough for API, load and crash tests (no training cost)."""
    from genleak.b4b.encoder import Encoder, SmallConvEncoder

    out = tmp_path_factory.mktemp("tiny-encoder")
    torch.manual_seed(0)
    Encoder(SmallConvEncoder(1, 8, 32, normalize=True), (1, 16, 16), name="tiny").save(out)
    return out
