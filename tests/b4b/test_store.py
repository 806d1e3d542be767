"""The state store: keys, revocation, and atomic bucket updates under concurrency (threads, processes)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from genleak.b4b.config import B4BConfig
from genleak.b4b.store import QueryReceipt, StateStore, hash_key
from genleak.errors import GenleakError

N_BYTES = 512  # 2^12 buckets


def _bits(indices) -> bytes:
    occ = np.zeros(N_BYTES * 8, dtype=bool)
    occ[list(indices)] = True
    return np.packbits(occ, bitorder="little").tobytes()


def _indices(bits: bytes) -> set[int]:
    return set(np.flatnonzero(np.unpackbits(np.frombuffer(bits, np.uint8), bitorder="little")).tolist())


@pytest.fixture
def store(tmp_path):
    s = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    yield s
    s.close()


def test_keys_are_hashed_and_authenticate(store, tmp_path):
    user, key = store.create_user("alice")
    assert store.authenticate(key).name == "alice"
    for bad in (None, "", "nope", key + "x", key[:-1]):
        assert store.authenticate(bad) is None
    raw = (tmp_path / "state.db").read_bytes() + (tmp_path / "state.db-wal").read_bytes()
    assert key.encode() not in raw and hash_key(key).encode() in raw
    with pytest.raises(GenleakError, match="already exists"):
        store.create_user("alice")
    store.revoke_user("alice")
    assert store.authenticate(key) is None
    assert not store.get_user("alice").active
    with pytest.raises(GenleakError, match="no user named"):
        store.revoke_user("bob")
    with pytest.raises(GenleakError, match="policy"):
        store.create_user("carol", policy="vip")
    with pytest.raises(GenleakError, match="sigma"):
        store.create_user("carol", policy="static")


def test_record_queries_ors_bits_and_counts(store):
    user, _ = store.create_user("u", seed=5)
    r1 = store.record_queries(user.id, _bits([1, 2, 3]), 3)
    r2 = store.record_queries(user.id, _bits([3, 4]), 2)
    assert r1 == QueryReceipt(bits=_bits([1, 2, 3]), first_query=0, n_queries=3, n_occupied=3)
    assert r2.first_query == 3 and r2.n_queries == 5 and _indices(r2.bits) == {1, 2, 3, 4}
    u = store.get_user("u")
    assert (u.n_queries, u.n_requests, u.n_occupied, u.seed) == (5, 2, 4, 5)
    store.revoke_user("u")
    with pytest.raises(PermissionError):
        store.record_queries(user.id, _bits([9]), 1)


def test_state_survives_reopening(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    s = StateStore(url)
    user, key = s.create_user("persist")
    s.record_queries(user.id, _bits([7, 4000]), 2)
    s.close()
    s2 = StateStore(url)
    assert s2.authenticate(key).id == user.id
    assert _indices(s2.get_user("persist").buckets) == {7, 4000}


def test_config_and_encoder_are_bound_to_the_database(store):
    assert store.stored_config() is None
    cfg = store.ensure_config(B4BConfig(n_hyperplanes=10))
    assert store.ensure_config(None) == cfg == store.stored_config()
    with pytest.raises(GenleakError, match="different B4B config.*n_hyperplanes"):
        store.ensure_config(B4BConfig())
    store.ensure_encoder(64, "abc")
    store.ensure_encoder(64, "abc")
    with pytest.raises(GenleakError, match="another encoder"):
        store.ensure_encoder(64, "def")


def test_concurrent_threads_never_lose_a_bucket(store):
    """16 threads x 40 read-modify-write updates on ONE user: the result must be the exact union."""
    user, _ = store.create_user("hot")
    rng = np.random.default_rng(0)
    plan = [[rng.choice(4096, size=5, replace=False).tolist() for _ in range(40)] for _ in range(16)]
    errors: list[BaseException] = []

    def worker(updates):
        try:
            for idx in updates:
                store.record_queries(user.id, _bits(idx), len(idx))
        except BaseException as err:  # surfaced below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(p,)) for p in plan]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    expected = {i for p in plan for idx in p for i in idx}
    u = store.get_user("hot")
    assert _indices(u.buckets) == expected
    assert u.n_occupied == len(expected)
    assert u.n_queries == 16 * 40 * 5 and u.n_requests == 16 * 40


WORKER = textwrap.dedent("""
    import sys
    import numpy as np
    from genleak.b4b.store import StateStore
    url, user_id, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    store = StateStore(url)
    rng = np.random.default_rng(seed)
    for _ in range(30):
        idx = rng.choice(4096, size=4, replace=False)
        occ = np.zeros(4096, dtype=bool)
        occ[idx] = True
        store.record_queries(user_id, np.packbits(occ, bitorder="little").tobytes(), 4)
        print(*idx.tolist())
""")


def test_concurrent_processes_never_lose_a_bucket(tmp_path):
    """Separate processes (like API replicas) updating one user through the same SQLite file."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    store = StateStore(url)
    user, _ = store.create_user("shared")
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, url, str(user.id), str(seed)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for seed in range(6)]
    expected: set[int] = set()
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        for line in out.splitlines():
            expected.update(int(v) for v in line.split())
    u = store.get_user("shared")
    assert _indices(u.buckets) == expected
    assert u.n_queries == 6 * 30 * 4 and u.n_requests == 6 * 30


def test_plain_path_and_bad_url(tmp_path):
    s = StateStore(str(tmp_path / "sub" / "plain.db"))
    assert s.url.startswith("sqlite:///") and (tmp_path / "sub" / "plain.db").exists()
    with pytest.raises(GenleakError):
        StateStore("nosuchdialect://x")
