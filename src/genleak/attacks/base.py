"""The attack interface and registry.

Every attack is one module with one class: a typed config holding the paper defaults, an access
level, a number of denoiser queries per sample (NFE) and ``score_batch``. ``Attack.score`` does
the rest the same way for all of them: input checks, per-sample seeded noise, streaming batches
under ``torch.inference_mode`` with a progress bar. Scores are oriented so that **higher means
more likely a member**; an attack flips its own statistic, the metrics never do.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from enum import Enum
from typing import Any, ClassVar

import torch

from genleak.data.images import ImageSet
from genleak.errors import DataError, GenleakError, TargetError
from genleak.targets.base import Target, TargetKind, kind_phrase


class Access(str, Enum):
    """What an attacker needs from the model (CDI threat model, thesis ch. 8.4)."""

    WHITE_BOX = "white-box"  # weights and gradients
    GRAY_BOX = "gray-box"  # noise predictions eps(x_t, t) at any t
    BLACK_BOX = "black-box"  # generated images only


@dataclasses.dataclass(frozen=True)
class AttackConfig:
    """Base class of attack configs; subclasses add their hyperparameters with paper defaults."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Attack(ABC):
    """A membership inference attack against a diffusion ``Target``."""

    name: ClassVar[str]
    access: ClassVar[Access]
    config_class: ClassVar[type[AttackConfig]] = AttackConfig
    needs_grad: ClassVar[bool] = False
    paper: ClassVar[str] = ""
    # The target kinds the attack runs on, and whether it needs a text-conditioned one (``check``).
    kinds: ClassVar[frozenset[TargetKind]] = frozenset({TargetKind.PIXEL, TargetKind.LATENT})
    needs_text: ClassVar[bool] = False

    def __init__(self, config: AttackConfig | None = None, **overrides: Any) -> None:
        base = config if config is not None else self.config_class()
        if overrides:
            unknown = set(overrides) - {f.name for f in dataclasses.fields(base)}
            if unknown:
                raise GenleakError(
                    f"attack '{self.name}' has no parameter(s) {sorted(unknown)}; "
                    f"it takes {[f.name for f in dataclasses.fields(base)]}"
                )
            base = dataclasses.replace(base, **_as_field_types(base, overrides))
        self.config = base

    @property
    @abstractmethod
    def nfe(self) -> int:
        """Denoiser queries per sample."""

    # Black-box attacks compare generations with the query *image*: they get images in [-1, 1] as
    # ``x0`` (not the working-space encoding) and noise in the target's working shape.
    pixel_queries: bool = False

    @property
    def columns(self) -> list[str]:
        """Names of the values ``score_batch`` returns per sample (one for a plain MIA)."""
        return [self.name]

    @classmethod
    def check(cls, target: Target) -> None:
        """Refuse, with one line, a target of a kind this attack does not support (``kinds``, ``needs_text``)."""
        if target.target_kind not in cls.kinds or (cls.needs_text and not target.text_conditioned):
            needs = " or ".join(kind_phrase(k, cls.needs_text) for k in sorted(cls.kinds, key=list(TargetKind).index))
            raise TargetError(f"attack '{cls.name}' needs {needs}; "
                              f"'{type(target).__name__}' is {kind_phrase(target.target_kind, target.text_conditioned)}")

    @abstractmethod
    def score_batch(
        self, target: Target, x0: torch.Tensor, noise: NoiseSource, cond: Any = None
    ) -> torch.Tensor:
        """Scores for one batch in the target's working space: shape (B,) or (B, len(columns)). ``x0``
        is read only: a query plan (``score_together``) recognises it by identity."""

    def score(
        self,
        target: Target,
        images: torch.Tensor | ImageSet,
        ids: Sequence[str] | None = None,
        *,
        cond: Sequence[Any] | torch.Tensor | None = None,
        batch_size: int = 64,
        seed: int = 0,
        progress: bool = True,
        desc: str | None = None,
        num_workers: int = 0,
        precision: str = "fp32",
    ) -> torch.Tensor:
        """Score images in [-1, 1] (NCHW). Returns a float tensor (N,) (or (N, k) for features).

        ``ids`` name the samples (default: an ``ImageSet``'s own); the noise for sample i is drawn
        from a generator seeded by (seed, attack name, ids[i]), so a score does not depend on batch
        size, order or sharding. An ``ImageSet`` is streamed with ``ImageSet.batches`` (a lazy one is
        decoded per batch by ``num_workers`` DataLoader workers and never held whole in memory).
        ``precision`` ``bf16`` / ``fp16`` runs the batches under ``torch.autocast`` (scores stay float32).
        Scores stay on the device until the end: no host sync per batch.
        """
        together = score_together([self], target, images, ids, cond=cond, batch_size=batch_size, seed=seed,
                                  progress=progress, desc=desc, num_workers=num_workers, precision=precision)
        if together.errors[0] is not None:
            raise together.errors[0]
        return together.scores[0]

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "access": self.access.value,
            "nfe": self.nfe,
            "paper": self.paper,
            "config": self.config.to_dict(),
        }


# --precision: the autocast dtype of each choice (fp32: autocast off)
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class NoiseSource:
    """Gaussian noise seeded per sample: ``draw(k)`` returns (B, k, *shape) for k fresh draws.

    Successive ``draw`` calls continue each sample's own stream, so an attack may ask for noise
    more than once. Each sample's generator is seeded from sha256(seed, attack, sample id).
    """

    def __init__(
        self,
        ids: Sequence[str],
        seed: int,
        stream: str,
        shape: Sequence[int],
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        self.shape = tuple(shape)
        self.device = device
        self.dtype = dtype
        self._seeds = (seed, stream, ids)
        self._gens: list[torch.Generator] | None = None  # built on the first draw: SimA, PIA never draw

    def draw(self, k: int = 1) -> torch.Tensor:
        if self._gens is None:
            seed, stream, ids = self._seeds
            self._gens = []
            for sample_id in ids:
                digest = hashlib.sha256(f"{seed}\x00{stream}\x00{sample_id}".encode()).digest()
                gen = torch.Generator(device="cpu")
                gen.manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
                self._gens.append(gen)
        noise = torch.stack([torch.randn((k, *self.shape), generator=g) for g in self._gens])
        return noise.to(device=self.device, dtype=self.dtype)


def shares_queries(attack: Attack, target: Target) -> bool:
    """Whether ``attack`` takes part in a query plan (``score_together``) on ``target``: it scores
    through ``Attack.score`` itself (not a wrapped target), on the target's encoding under inference
    mode (not ``needs_grad``, not ``pixel_queries``), of a diffusion target (an IAR's output-noise
    defense draws from one generator per target, so interleaving attacks would change its draws)."""
    return (type(attack).score is Attack.score and not attack.needs_grad and not attack.pixel_queries
            and target.target_kind is not TargetKind.IAR)


@dataclasses.dataclass
class Together:
    """``score_together``'s answer, one entry per attack in the order given: its (N,) or (N, k) scores
    (None if it raised), the error it raised, the denoiser queries (summed over samples) it got from
    an identical query already run for the batch, and its seconds."""

    scores: list[torch.Tensor | None]
    errors: list[Exception | None]
    shared: list[int]
    seconds: list[float]


def score_together(
    attacks: Sequence[Attack],
    target: Target,
    images: torch.Tensor | ImageSet,
    ids: Sequence[str] | None = None,
    *,
    cond: Sequence[Any] | torch.Tensor | None = None,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = True,
    desc: str | None = None,
    num_workers: int = 0,
    precision: str = "fp32",
) -> Together:
    """``Attack.score`` of several attacks at once, batch-major (the query plan of issue 14 §4).

    Each batch is decoded once and encoded once (a VAE call for latent targets) for the attacks that
    ``shares_queries``; each of them gets its own copy of that clean input, and a denoiser query on it
    at a timestep another attack already asked for the batch is answered from that query
    (``_SharedQueries``): pia and pian both ask eps(x0, 0), SecMI's inversion starts there. Every
    attack keeps its own batches and seeded noise, so its scores are bit for bit those it gets alone.
    An attack that raises is dropped with its error (``errors``) and the others go on.
    """
    for attack in attacks:
        attack.check(target)
        if len(attacks) > 1 and type(attack).score is not Attack.score:  # it wraps the target in its ``score``
            raise GenleakError(f"attack '{attack.name}' scores through its own score(): score it alone")
    if precision not in PRECISIONS:
        raise GenleakError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    autocast = functools.partial(torch.autocast, torch.device(target.device).type, dtype=PRECISIONS[precision],
                                 enabled=precision != "fp32")
    if isinstance(images, ImageSet):
        n, ids = len(images), images.ids if ids is None else ids
        if n == 0:
            raise DataError("no images to score")
        if not images.is_lazy:  # decoded uint8 is always finite
            check_images(images.images)
        batches = (x for _, x in images.batches(batch_size, num_workers=num_workers, device=target.device))
    else:
        check_images(images)
        n = images.shape[0]
        batches = (images[start : start + batch_size] for start in range(0, n, max(batch_size, 1)))
    if ids is None:
        ids = [str(i) for i in range(n)]
    if len(ids) != n:
        raise GenleakError(f"{len(ids)} ids for {n} images")
    if batch_size < 1:
        raise GenleakError(f"batch_size must be >= 1, got {batch_size}")
    from tqdm.auto import tqdm

    plain = [not a.needs_grad and not a.pixel_queries for a in attacks]
    plan = [shares_queries(a, target) for a in attacks] if sum(plain) > 1 else [False] * len(attacks)
    out: list[list[torch.Tensor]] = [[] for _ in attacks]
    errors: list[Exception | None] = [None] * len(attacks)
    shared, seconds = [0] * len(attacks), [0.0] * len(attacks)
    desc = desc or "+".join(a.name for a in attacks)
    with tqdm(total=n, desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for start, batch in zip(range(0, n, batch_size), batches, strict=True):
            stop = min(start + batch_size, n)
            clean: torch.Tensor | None = None  # the batch's encoding, made once for the plain attacks
            memo: dict[Any, torch.Tensor] = {}  # this batch's queries on the clean input
            for i, attack in enumerate(attacks):
                if errors[i] is not None:
                    continue
                began = time.perf_counter()
                try:
                    batch_cond = None if cond is None else _slice(cond, start, stop)
                    with (torch.enable_grad if attack.needs_grad else torch.inference_mode)(), autocast():
                        if attack.pixel_queries:
                            x, shape = batch.to(target.device), target.working_shape
                        else:
                            if not plain[i]:
                                x = target.encode(batch)
                            else:
                                clean = target.encode(batch) if clean is None else clean
                                x = clean.clone() if plan[i] else clean  # an attack's copy is its own
                            shape = x.shape[1:]
                        noise = NoiseSource(ids[start:stop], seed, attack.name, shape, x.device, x.dtype)
                        with _SharedQueries(target, x, batch_cond, memo, plan[i]) as queries:
                            s = attack.score_batch(target, x, noise, batch_cond)
                    out[i].append(s.detach().float())
                    shared[i] += queries.hits
                except Exception as err:  # one attack's bug must not stop the others
                    errors[i], out[i] = err, []
                seconds[i] += time.perf_counter() - began
            bar.update(stop - start)
            if all(e is not None for e in errors):
                break
    scores: list[torch.Tensor | None] = [None] * len(attacks)
    for i, attack in enumerate(attacks):
        if errors[i] is None:
            began = time.perf_counter()
            values = torch.cat(out[i]).cpu()  # the scores stay on the device until here: no host sync per batch
            seconds[i] += time.perf_counter() - began
            if not torch.isfinite(values).all():
                bad = int((~torch.isfinite(values)).sum())
                errors[i] = GenleakError(f"attack '{attack.name}' produced {bad} non-finite scores; "
                                         "the target may be broken")
            else:
                scores[i] = values
    return Together(scores, errors, shared, seconds)


class _SharedQueries:
    """While one attack scores a batch: ``target.eps(x0, t, cond)`` on that attack's own clean input
    ``x0`` and conditions, at an int timestep, is answered from ``memo`` (the batch's, shared by the
    attacks) when an identical query already ran, and recorded there otherwise. It is installed over
    the target's ``eps`` as an instance attribute and removed after, so attacks and targets stay as
    they are. The key also holds the grad and autocast state, so a query under another precision runs.

    Only the clean input is recognised, by identity: the attack's own copy, which attacks never modify
    in place. Recognising two computed inputs x_t as equal would take an element-wise comparison whose
    answer comes back to the host, a device sync per query that the GPU fast path avoids; and no two
    core attacks compute the same x_t (pia and pian noise x0 with different eps0, loss draws its own
    noise stream, SecMI's chain starts from eps(x0, 0), which is shared).
    """

    def __init__(self, target: Target, x0: torch.Tensor, cond: Any, memo: dict[Any, torch.Tensor], on: bool) -> None:
        self.target, self.x0, self.cond, self.memo, self.on = target, x0, cond, memo, on
        self.hits = 0  # queries (summed over samples) answered from the memo

    def __enter__(self) -> _SharedQueries:
        if not self.on:
            return self
        self._before = vars(self.target).get("eps", _MISSING)  # a wrapper someone installed stays
        ask = self.target.eps  # type: ignore[attr-defined]

        def eps(x_t: torch.Tensor, t: torch.Tensor | int, cond: Any = None) -> torch.Tensor:
            if x_t is not self.x0 or cond is not self.cond or not isinstance(t, int):
                return ask(x_t, t, cond)
            kind = x_t.device.type
            key = (t, torch.is_grad_enabled(), torch.is_autocast_enabled(kind), torch.get_autocast_dtype(kind))
            if key in self.memo:
                self.hits += x_t.shape[0]
                return self.memo[key].clone()  # each caller may change its answer in place
            got = ask(x_t, t, cond)
            self.memo[key] = got.clone()
            return got

        self.target.eps = eps  # type: ignore[attr-defined]
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.on:
            return
        if self._before is _MISSING:
            del self.target.eps  # type: ignore[attr-defined]
        else:
            self.target.eps = self._before  # type: ignore[attr-defined]


_MISSING = object()


def check_images(images: torch.Tensor) -> None:
    """Reject input an attack cannot score, with a message naming the problem."""
    if not isinstance(images, torch.Tensor):
        raise DataError(f"images must be a torch.Tensor (N, C, H, W), got {type(images).__name__}")
    if images.ndim != 4:
        raise DataError(f"images must be 4-D (N, C, H, W), got shape {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise DataError("no images to score")
    finite = torch.isfinite(images)
    if not finite.all():
        bad = int((~finite.flatten(1).all(1)).sum())
        raise DataError(f"{bad} image(s) contain NaN or inf values; clean the data first")


def check_compatible(target: Target, images: torch.Tensor | ImageSet) -> None:
    """Shape check against a target that declares ``image_shape`` (an ``ImageSet`` is not decoded for it)."""
    expected = target.image_shape
    got = images.shape if isinstance(images, ImageSet) else tuple(images.shape[1:])
    if expected is not None and tuple(got) != tuple(expected):
        raise DataError(f"images have shape (C, H, W) = {tuple(got)} but the target expects {tuple(expected)}")


def _slice(cond: Sequence[Any] | torch.Tensor, start: int, stop: int) -> Any:
    return cond[start:stop]


def _as_field_types(config: AttackConfig, overrides: dict[str, Any]) -> dict[str, Any]:
    """Lists for tuple-valued parameters (JSON configs, CLI ``--param``) become tuples of the
    default's element type, so configs stay hashable and compare equal however they were given."""
    out = dict(overrides)
    for name, value in overrides.items():
        default = getattr(config, name)
        if isinstance(default, tuple) and isinstance(value, (list, tuple)):
            cast = type(default[0]) if default else (lambda v: v)
            out[name] = tuple(cast(v) for v in value)
    return out


def at_timesteps(x0: torch.Tensor, noise: NoiseSource, timesteps: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every sample once per timestep, sample-major ((x_0, t_0), (x_0, t_1), ...), with one noise
    draw per sample shared by all its timesteps: (x0_rep, eps_rep, t_rep)."""
    k = len(timesteps)
    eps = noise.draw(1)[:, 0]
    t_rep = torch.tensor(list(timesteps), dtype=torch.long).repeat(x0.shape[0])
    return x0.repeat_interleave(k, dim=0), eps.repeat_interleave(k, dim=0), t_rep


def eps_in_chunks(target: Target, x_t: torch.Tensor, t: torch.Tensor | int, cond: Any, chunk: int) -> torch.Tensor:
    """``target.eps`` on at most ``chunk`` inputs per call, for attacks that query k noise draws of
    a batch at once. On CPU one UNet call on B*k inputs costs ~1.3-1.6x more per input than k calls
    on B (cache pressure; benchmarks/RESULTS.md, attack cost), so a denoiser call never sees more
    inputs than the ``batch_size`` the caller chose (raise it on a GPU)."""
    n = x_t.shape[0]
    if n <= chunk:
        return target.eps(x_t, t, cond)
    out = []
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        t_part = t[start:stop] if isinstance(t, torch.Tensor) and t.ndim > 0 else t
        out.append(target.eps(x_t[start:stop], t_part, None if cond is None else _slice(cond, start, stop)))
    return torch.cat(out)


def repeat_cond(cond: Any, k: int) -> Any:
    """Repeat per-sample conditions k times, sample-major, to match a (B*k) batch."""
    if cond is None:
        return None
    if isinstance(cond, torch.Tensor):
        return cond.repeat_interleave(k, dim=0)
    return [c for c in cond for _ in range(k)]


def lp_norm(x: torch.Tensor, p: float) -> torch.Tensor:
    """Per-sample p-norm over all non-batch dimensions."""
    return x.flatten(1).norm(p=p, dim=1)


# -- registry -----------------------------------------------------------------------------------
# Attacks are found by name through the entry points of group ``genleak.attacks`` (pyproject.toml:
# genleak's own and any installed plug-in's), loaded on first use, so importing an attack module
# registers nothing. ``register_attack`` adds a class at run time (tests, notebooks).
ENTRY_POINTS = "genleak.attacks"
_REGISTRY: dict[str, type[Attack]] = {}


def register_attack(cls: type[Attack]) -> type[Attack]:
    """Make an attack class available by its ``name`` in this process."""
    ep = attack_entry_points().get(cls.name)
    if _REGISTRY.get(cls.name, cls) is not cls or (ep is not None and ep.value != f"{cls.__module__}:{cls.__qualname__}"):
        raise ValueError(f"attack name '{cls.name}' registered twice")
    _REGISTRY[cls.name] = cls
    return cls


@functools.cache
def attack_entry_points() -> dict[str, Any]:
    """Name -> ``importlib.metadata.EntryPoint`` of every installed attack."""
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINTS)}


def get_attack(name: str, config: AttackConfig | None = None, **overrides: Any) -> Attack:
    """Instantiate a registered attack by name."""
    return attack_class(name)(config, **overrides)


def available_attacks() -> list[str]:
    return sorted({*attack_entry_points(), *_REGISTRY})


def attack_class(name: str) -> type[Attack]:
    if name in _REGISTRY:
        return _REGISTRY[name]
    ep = attack_entry_points().get(name)
    if ep is None:
        raise GenleakError(f"unknown attack '{name}'; available: {', '.join(available_attacks())}")
    cls = ep.load()
    if getattr(cls, "name", None) != name:
        raise GenleakError(f"entry point '{name}' of {ENTRY_POINTS} loads {ep.value}, whose name is {getattr(cls, 'name', None)!r}")
    _REGISTRY[name] = cls
    return cls
