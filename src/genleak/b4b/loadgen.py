"""A bounded load generator for the B4B API (loopback benchmarks and reliability tests).

``concurrency`` threads, each with its own HTTP connection and API key, send ``/v1/embed`` requests
with random batches until ``duration_s`` has passed or ``max_requests`` per thread are done, and
record every request: status, latency, and, for acknowledged ones, the images, so a test can
recompute offline what the server must have stored.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

from genleak._extras import needs_extra
from genleak.b4b.wire import encode_array


@dataclass
class Request:
    worker: int
    key_index: int
    n_images: int
    status: int  # HTTP status, or 0 when the connection failed (server gone)
    latency_s: float
    images: np.ndarray | None = None  # kept for acknowledged requests only


@dataclass
class LoadReport:
    requests: list[Request]
    wall_s: float
    concurrency: int
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def acked(self) -> list[Request]:
        return [r for r in self.requests if r.status == 200]

    def status_counts(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for r in self.requests:
            counts[r.status] = counts.get(r.status, 0) + 1
        return counts

    def summary(self) -> dict[str, float]:
        lat = np.array([r.latency_s for r in self.acked]) * 1000.0
        images = sum(r.n_images for r in self.acked)
        return {
            "requests": len(self.requests), "acked": len(self.acked), "wall_s": round(self.wall_s, 2),
            "concurrency": self.concurrency,
            "p50_ms": round(float(np.percentile(lat, 50)), 2) if len(lat) else float("nan"),
            "p99_ms": round(float(np.percentile(lat, 99)), 2) if len(lat) else float("nan"),
            "max_ms": round(float(lat.max()), 2) if len(lat) else float("nan"),
            "requests_per_s": round(len(self.acked) / self.wall_s, 1),
            "images_per_s": round(images / self.wall_s, 1),
        }


def run_load(url: str, keys: list[str], *, concurrency: int = 8, duration_s: float = 5.0, max_requests: int = 500,
             batch_sizes: tuple[int, int] = (1, 32), image_shape: tuple[int, int, int] = (1, 16, 16),
             seed: int = 0, keep_images: bool = True, stop: threading.Event | None = None,
             timeout_s: float = 30.0) -> LoadReport:
    """Hammer ``url`` with ``concurrency`` threads; thread ``i`` uses ``keys[i % len(keys)]``.

    Bounded twice (``duration_s`` and ``max_requests`` per thread) so it always ends; a connection
    error ends that thread (the server is gone), it is recorded with status 0.
    """
    with needs_extra("serve"):
        import httpx

    requests: list[Request] = []
    lock = threading.Lock()
    stop = stop or threading.Event()
    deadline = time.perf_counter() + duration_s

    def worker(w: int) -> None:
        rng = np.random.default_rng(np.random.SeedSequence([seed, w]))
        k = w % len(keys)
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {keys[k]}"}, timeout=timeout_s) as http:
            for _ in range(max_requests):
                if stop.is_set() or time.perf_counter() >= deadline:
                    return
                n = int(rng.integers(batch_sizes[0], batch_sizes[1] + 1))
                x = rng.random((n, *image_shape), dtype=np.float32)
                t0 = time.perf_counter()
                try:
                    status = http.post("/v1/embed", json={"images": encode_array(x)}).status_code
                except httpx.HTTPError:
                    status = 0
                req = Request(w, k, n, status, time.perf_counter() - t0, x if (status == 200 and keep_images) else None)
                with lock:
                    requests.append(req)
                if status == 0:
                    return

    threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return LoadReport(requests, time.perf_counter() - t0, concurrency)
