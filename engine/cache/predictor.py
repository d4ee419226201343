"""The caching layer of the predictor chain: look up, run only the misses, write back.

A request with N inputs looks all N up in one round trip; the misses run as one batch; their
results are written back in one round trip. Concurrent identical misses (same model, version,
file digest and input) run once: later requests wait for the first one's result. The key
holds the version that rollout chose, so the cache never bypasses rollout, and a digest of the
version's files, computed here when the version is attached, so a replaced file never serves
stale results.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine import tracing
from engine.cache.base import CacheBackend
from engine.cache.codec import decode_result, encode_result
from engine.cache.keys import cache_key, content_digest, key_prefix
from engine.loader import LoadedModel
from engine.metrics import Metrics
from engine.predictor import Predictor
from engine.results import Output
from engine.schemas import CacheHealth

logger = logging.getLogger(__name__)


def input_text(item: Any) -> str:
    """What the key hashes: a text exactly as given, or a feature row as compact JSON."""
    return item if isinstance(item, str) else json.dumps(item, separators=(",", ":"))


@dataclass
class _LoopState:
    """A Redis client and in-flight futures belong to one event loop."""

    loop: asyncio.AbstractEventLoop
    cache: CacheBackend
    inflight: dict[str, asyncio.Future[Output]] = field(default_factory=dict)


class CachingPredictor:
    """Wraps another ``Predictor`` with a result cache."""

    def __init__(self, inner: Predictor, make_cache: Callable[[], CacheBackend], metrics: Metrics, *, ttl_s: float, backend: str) -> None:
        self._inner = inner
        self._make_cache = make_cache
        self._metrics = metrics
        self._ttl_s = ttl_s
        self.backend = backend
        self._loop_bound = backend in ("redis", "tiered")
        self._state: _LoopState | None = None
        self._digests: dict[LoadedModel, str] = {}

    def attach(self, model: LoadedModel) -> None:
        # Replacing any file of the version changes its keys: no flush needed.
        self._digests[model] = content_digest(model.files)
        self._inner.attach(model)

    def detach(self, model: LoadedModel) -> None:
        self._digests.pop(model, None)
        self._inner.detach(model)

    def _current(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        if self._state is None or self._state.loop is not loop:
            # In-flight futures, and a Redis client, belong to one event loop; a plain in-process
            # cache does not, and keeps its entries when the loop changes.
            keep = self._state is not None and not self._loop_bound
            cache = self._state.cache if keep and self._state is not None else self._make_cache()
            self._state = _LoopState(loop=loop, cache=cache)
        return self._state

    def health(self) -> CacheHealth:
        state = self._state.cache.state if self._state is not None else "ok"
        self._metrics.cache_state.set({"ok": 0, "degraded": 1, "open": 2}.get(state, 2))
        return CacheHealth(backend=self.backend, state=state)

    async def predict(self, version: LoadedModel, inputs: Sequence[Any]) -> list[Output]:
        digest = self._digests.get(version)
        if digest is None:  # no content digest, no safe key
            return await self._inner.predict(version, inputs)
        state = self._current()
        labels = (version.name, version.version)
        width = (version.runtime.width,)
        keys = [cache_key(version.name, version.version, digest, input_text(item)) for item in inputs]
        started = time.perf_counter()
        with tracing.span("cache.lookup") as span:
            hits = await state.cache.get_many_with_tier(keys)
            if span.is_recording():
                found = len(keys) - hits.count(None)
                tracing.set_attributes(span, {"cache.backend": self.backend, "inputs.count": len(keys), "cache.found": found})
        lookup_ms = round((time.perf_counter() - started) * 1000.0, 3)
        outputs: dict[int, Output] = {}
        leader: dict[str, list[int]] = {}  # keys this request computes, with every index that wants them
        follower: dict[str, list[int]] = {}  # keys another request is computing right now
        for index, (key, hit) in enumerate(zip(keys, hits, strict=True)):
            row = decode_result(hit.value) if hit is not None else None
            if row is not None and hit is not None and row.shape == width:
                outputs[index] = Output(row=row, latency_ms=lookup_ms, cached=True)
                self._metrics.count_cache_hit(*labels, hit.tier)
                continue
            self._metrics.count_cache_miss(*labels)
            if key in leader:
                leader[key].append(index)
            elif key in state.inflight:
                follower.setdefault(key, []).append(index)
            else:
                leader[key] = [index]
                state.inflight[key] = state.loop.create_future()
        if leader:
            await self._compute(state, version, inputs, leader, outputs)
        for key, indexes in follower.items():
            result = await self._follow(state, version, inputs, key, indexes[0])
            for index in indexes:
                outputs[index] = result
        return [outputs[i] for i in range(len(inputs))]

    async def _compute(
        self, state: _LoopState, version: LoadedModel, inputs: Sequence[Any], leader: dict[str, list[int]], outputs: dict[int, Output]
    ) -> None:
        try:
            results = await self._inner.predict(version, [inputs[indexes[0]] for indexes in leader.values()])
        except BaseException as exc:
            for key in leader:
                future = state.inflight.pop(key)
                future.set_exception(exc if isinstance(exc, Exception) else RuntimeError("cancelled"))
                future.exception()  # followers recompute on their own; nobody must re-raise this one
            raise
        for (key, indexes), result in zip(leader.items(), results, strict=True):
            state.inflight.pop(key).set_result(result)
            for index in indexes:
                outputs[index] = result
        await state.cache.set_many({key: encode_result(r.row) for key, r in zip(leader, results, strict=True)}, self._ttl_s)

    async def _follow(self, state: _LoopState, version: LoadedModel, inputs: Sequence[Any], key: str, index: int) -> Output:
        """Wait for the request computing this input; if it failed, compute it here."""
        future = state.inflight.get(key)
        if future is not None:
            try:
                self._metrics.cache_coalesced.labels(version.name, version.version).inc()
                return await asyncio.shield(future)
            except Exception:
                logger.debug("coalesced computation failed; computing again")
        return (await self._inner.predict(version, [inputs[index]]))[0]

    async def invalidate(self, model: str | None, version: str | None) -> int:
        return await self._current().cache.delete_prefix(key_prefix(model, version) if model is not None else "")

    def close(self) -> None:
        self._inner.close()

    async def aclose(self) -> None:
        if self._state is not None and self._state.loop is asyncio.get_running_loop():
            await self._state.cache.close()
        self._state = None
