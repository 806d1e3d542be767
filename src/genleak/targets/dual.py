"""DualMD: private inference with two denoisers trained on disjoint halves (DualMD paper, section 3.4).

``DualTarget(model_1, model_2)`` is an ordinary genleak target. Its sampler-facing method
``eps_at_step`` alternates the two denoisers step by step ("self-correcting inference", fig. 2):
step 0 (the noisiest) is answered by model 1, step 1 by model 2, and so on. If a noisy image drives
one model towards a training image of its half, the other model, for which that image is unseen,
answers the next step. Every sampler (``genleak.targets.sampling``) and every black-box attack
therefore works on it unchanged.

Gray-box queries ``eps(x_t, t)`` carry no step index. They are answered the way the deployed
sampler (``steps`` DDIM steps, stored in the folder index) would answer at that noise level: by
the model whose turn it is at timestep t on that grid. DualMD is a black-box defense (section 4.1:
"it is not realistic to perform DualMD defense" against white-box attackers), and gray-box
figures on a DualTarget measure exactly that deployment choice, nothing more.

On disk a DualMD folder holds ``model_1/`` and ``model_2/`` (standard diffusers folders) and a
``model_index.json`` whose ``_class_name`` is ``DualTarget``; ``genleak defend disjoint`` (defenses,
Algorithm 1) writes one. Folders written before that index existed carry ``dualmd.json`` instead,
which still loads. The class sits in the targets layer, like every type ``load_target`` opens.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from genleak.errors import TargetError
from genleak.io import atomic_write_json
from genleak.targets.base import Denoiser
from genleak.targets.folders import DUAL_LEGACY_INDEX

INDEX_FILE = "model_index.json"
DUAL_FORMAT = "genleak.dualmd"
# DDIM steps of the deployed sampler: 50, as the DualMD paper's black-box evaluation (appendix A.2.2).
DEFAULT_STEPS = 50


class DualTarget(Denoiser):
    """Two denoisers on one noise schedule, alternated step by step when sampling (DualMD).

    Its kind (pixel or latent diffusion, text-conditioned or not) is its sub-models' kind.
    """

    def __init__(self, model_1: Denoiser, model_2: Denoiser, *, steps: int = DEFAULT_STEPS) -> None:
        if not torch.equal(model_1.alphas_cumprod, model_2.alphas_cumprod):
            raise TargetError("DualMD needs both sub-models on the same noise schedule; their alphas_cumprod differ")
        if model_1.image_shape != model_2.image_shape:
            raise TargetError(f"DualMD sub-models have different image shapes {model_1.image_shape} and {model_2.image_shape}")
        if model_1.target_kind != model_2.target_kind:
            raise TargetError(f"DualMD sub-models are of different kinds: {model_1.target_kind.value} "
                              f"and {model_2.target_kind.value}")
        if steps < 1 or steps > model_1.num_train_timesteps:
            raise TargetError(f"DualMD steps must be in 1..{model_1.num_train_timesteps}, got {steps}")
        self.models = (model_1, model_2)
        self.steps = int(steps)
        self.alphas_cumprod = model_1.alphas_cumprod
        self.num_train_timesteps = model_1.num_train_timesteps
        self.device = model_1.device
        self.target_kind = model_1.target_kind
        self._fingerprint: str | None = None

    # -- the sampler-facing extension --------------------------------------------------------------
    def eps_at_step(self, x: torch.Tensor, t: int, step: int, cond: Any = None) -> torch.Tensor:
        """Alternate by step index (section 3.4, fig. 2): even steps model 1, odd steps model 2."""
        return self.models[step % 2].eps(x, t, cond)

    # -- the target protocol -------------------------------------------------------------------
    def eps(self, x_t: torch.Tensor, t: torch.Tensor | int, cond: Any = None) -> torch.Tensor:
        """Answer as the deployed ``steps``-step sampler would at timestep t (see the module doc)."""
        if isinstance(t, int):
            return self.models[self.model_index(t)].eps(x_t, t, cond)
        t_cpu = t.detach().to("cpu").long()
        which = torch.tensor([self.model_index(int(v)) for v in t_cpu])
        out = None
        for i in (0, 1):
            mask = which == i
            if not mask.any():
                continue
            rows = mask.nonzero().flatten()
            sub_cond = None if cond is None else _take(cond, rows)
            pred = self.models[i].eps(x_t[rows.to(x_t.device)], t[rows.to(t.device)], sub_cond)
            if out is None:
                out = torch.empty((x_t.shape[0], *pred.shape[1:]), dtype=pred.dtype, device=pred.device)
            out[rows.to(pred.device)] = pred
        return out

    def model_index(self, t: int) -> int:
        """0 or 1: whose turn timestep t is on the ``steps``-step DDIM grid (diffusers' "leading"
        spacing: step i sits at t = (steps - 1 - i) * T // steps)."""
        stride = max(self.num_train_timesteps // self.steps, 1)
        step = self.steps - 1 - min(int(t) // stride, self.steps - 1)
        return step % 2

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.models[0].encode(images)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return self.models[0].decode(x)

    def conditions(self, samples: Any) -> Any:
        return self.models[0].conditions(samples)

    def null_condition(self, n: int) -> Any:
        """The sub-models' unconditional input (CLiD, CFG); both share one text encoder."""
        return self.models[0].null_condition(n)

    def with_guidance(self, scale: float) -> DualTarget:
        """Both sub-models answering with classifier-free guidance ``scale``."""
        return DualTarget(*(m.with_guidance(scale) for m in self.models), steps=self.steps)

    @property
    def text_conditioned(self) -> bool:
        return self.models[0].text_conditioned

    @property
    def num_classes(self) -> int | None:
        return self.models[0].num_classes

    def networks(self) -> list[torch.nn.Module]:
        return [net for model in self.models for net in model.networks()]

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            h = hashlib.sha256(b"genleak.dualmd\x00")
            for m in self.models:
                h.update(m.fingerprint().encode())
            h.update(str(self.steps).encode())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.models[0].image_shape

    @property
    def working_shape(self) -> tuple[int, ...]:
        return self.models[0].working_shape

    def ddim_scheduler(self, num_inference_steps: int) -> Any:
        return self.models[0].ddim_scheduler(num_inference_steps)

    def describe(self) -> dict[str, Any]:
        subs = [m.describe() for m in self.models]
        return {
            "kind": "dualmd",
            "steps": self.steps,
            "parameters": sum(int(s.get("parameters", 0)) for s in subs),
            "image_shape": list(self.image_shape),
            "model_1": subs[0],
            "model_2": subs[1],
            "fingerprint": self.fingerprint(),
        }

    # -- folders -----------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | torch.device | None = None) -> DualTarget:
        """Load a DualMD folder (``model_1/``, ``model_2/`` and its index)."""
        path = Path(folder)
        meta_file = next((f for f in (path / INDEX_FILE, path / DUAL_LEGACY_INDEX) if f.is_file()), None)
        if meta_file is None:
            raise TargetError(f"'{folder}' has no {INDEX_FILE}: not a DualMD folder (make one with `genleak defend disjoint`)")
        meta = json.loads(meta_file.read_text())
        if meta.get("format") != DUAL_FORMAT:
            raise TargetError(f"'{meta_file}' is not a DualMD description (format {meta.get('format')!r})")
        m1, m2 = (_load_single(path / f"model_{i}", device) for i in (1, 2))
        return cls(m1, m2, steps=int(meta.get("steps", DEFAULT_STEPS)))

    def save_metadata(self, folder: str | Path, extra: dict[str, Any] | None = None) -> None:
        """Write the folder's ``model_index.json`` (the sub-models are written by their training runs)."""
        atomic_write_json(
            Path(folder) / INDEX_FILE,
            {
                "_class_name": type(self).__name__,
                "format": DUAL_FORMAT,
                "version": 1,
                "steps": self.steps,
                "alternation": "step i uses model_1 if i is even else model_2 (DualMD paper sec. 3.4)",
                "model_1": "model_1",
                "model_2": "model_2",
                **(extra or {}),
            },
        )


def _load_single(folder: Path, device: str | torch.device | None) -> Any:
    """One DualMD sub-model folder (pixel or latent), through ``genleak.targets.loading``."""
    from genleak.targets.loading import load_target, target_class

    if target_class(folder) == "DualTarget":
        raise TargetError(f"'{folder}' is itself a DualMD folder; a DualMD sub-model must be a single model")
    return load_target(folder, device=device)


def _take(cond: Any, rows: torch.Tensor) -> Any:
    if isinstance(cond, torch.Tensor):
        return cond[rows.to(cond.device)]
    return [cond[int(i)] for i in rows]
