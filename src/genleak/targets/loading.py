"""``load_target(folder)``: one entry point that opens any target folder genleak understands.

The CLI (``genleak attack``, ``inspect``, ``infer``, ...) calls this instead of a specific class so
that every command takes every target kind. A folder names its class the way diffusers reads it:
``model_index.json`` ``_class_name`` (a pipeline: ``DDPMPipeline``, ``DDIMPipeline``, ``StableDiffusionPipeline``)
or, for a single-model folder, ``config.json`` ``_class_name`` (``UNet2DModel``). genleak's own
types write the same key: ``DualTarget`` in the DualMD ``model_index.json``, ``IARTarget`` in the IAR
``config.json``. A text-to-image folder with a learnt word keeps ``StableDiffusionPipeline`` in
``model_index.json`` (so other SD tools still open it) and names ``TextualInversionTarget`` in its
``genleak_latent.json``, which is read first. Folders these types wrote before they recorded a
``_class_name`` are recognised by their old markers (``_legacy_class``).

The loaders open each component with diffusers' / transformers' own ``from_pretrained`` as
``save_pretrained`` wrote it (``weights_variant``: ``*.fp16.safetensors`` from ``variant="fp16"``;
``folder_scheduler``: the scheduler class ``scheduler_config.json`` names), never a pipeline class,
so no code from the folder runs (no custom pipelines, no ``trust_remote_code``).

The class name picks the loader from the entry points of group ``genleak.targets`` (pyproject.toml).
genleak's entries all live in this package (``targets.dual``, ``targets.iar``,
``targets.textual_inversion``); a plug-in adds a type the same way. Nothing is downloaded.
"""

from __future__ import annotations

import functools
import inspect
import json
import re
from pathlib import Path
from typing import Any

import torch

from genleak.errors import TargetError
from genleak.targets.folders import DUAL_LEGACY_INDEX, IAR_FORMAT, LATENT_META

__all__ = ["folder_scheduler", "load_target", "target_class", "target_loaders", "weights_variant"]

ENTRY_POINTS = "genleak.targets"


def _read_json(file: Path) -> dict[str, Any]:
    if not file.is_file():
        return {}
    try:
        data = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise TargetError(f"'{file}' is not valid JSON ({err})") from err
    return data if isinstance(data, dict) else {}


# diffusers / transformers weight files: NAME[-0000k-of-0000n][.safetensors.index][.VARIANT][-0000k-of-0000n].EXT
_WEIGHTS = re.compile(r"(?:diffusion_pytorch_model|model|pytorch_model)(?:-\d+-of-\d+)?(?:\.(?:safetensors|bin)\.index)?"
                      r"(?:\.(\w+))?(?:-\d+-of-\d+)?\.(?:safetensors|bin|json)")


def weights_variant(folder: str | Path) -> str | None:
    """The ``variant`` to pass to ``from_pretrained`` for a component folder: None when plain weights
    are there, else the variant ``save_pretrained(variant=...)`` wrote (``fp16`` first when several)."""
    found = {m.group(1) for f in Path(folder).iterdir() if (m := _WEIGHTS.fullmatch(f.name))}
    if None in found or not found:
        return None  # plain weights (or none at all: from_pretrained names what is missing)
    if "fp16" in found or len(found) == 1:
        return "fp16" if "fp16" in found else found.pop()
    raise TargetError(f"'{folder}' holds weights of variants {', '.join(sorted(found))} and no plain ones; keep one variant")


def folder_scheduler(folder: str | Path) -> Any:
    """The noise scheduler in ``folder`` (holding ``scheduler_config.json``) as the diffusers class it
    names (DDPM, DDIM, PNDM, Euler, ...: the DDPM-compatible family, which shares ``alphas_cumprod``)."""
    import diffusers

    config = _read_json(Path(folder) / "scheduler_config.json")
    name = str(config.get("_class_name", "DDPMScheduler"))
    family = {c.__name__: c for c in diffusers.DDPMScheduler().compatibles}
    if name not in family:
        raise TargetError(f"'{folder}' names scheduler {name!r}; genleak reads DDPM-family schedules "
                          f"({', '.join(sorted(family))})")
    return family[name].from_pretrained(str(folder), local_files_only=True)


def target_class(folder: str | Path) -> str:
    """The class name a target folder declares (see the module docstring), e.g. ``"DDPMPipeline"``."""
    path = Path(folder)
    if not path.is_dir():
        raise TargetError(f"target folder '{folder}' does not exist; train one with `genleak train ddpm` or pass a diffusers folder")
    name = _read_json(path / LATENT_META).get("_class_name") or _legacy_class(path)
    for file in ("model_index.json", "config.json"):
        name = name or _read_json(path / file).get("_class_name")
    if not name:
        raise TargetError(f"'{folder}' has no model_index.json or config.json with a _class_name: not a diffusers or genleak model folder")
    return str(name)


def _legacy_class(path: Path) -> str | None:
    """The type of a genleak folder written before its type recorded a ``_class_name``."""
    if (path / DUAL_LEGACY_INDEX).is_file():
        return "DualTarget"
    if _read_json(path / "config.json").get("format") == IAR_FORMAT:
        return "IARTarget"
    if _read_json(path / LATENT_META).get("textual_inversion"):
        return "TextualInversionTarget"
    return None


@functools.cache
def target_loaders() -> dict[str, Any]:
    """Class name -> ``importlib.metadata.EntryPoint`` of its loader ``(folder, device=..., [guidance_scale=...])``."""
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINTS)}


def load_target(
    folder: str | Path, device: str | torch.device | None = None, *, guidance_scale: float | None = None
) -> Any:
    """Open a target folder as the matching genleak target.

    ``guidance_scale`` sets the CFG scale of text-conditioned latent targets (default: the folder's
    ``genleak_latent.json``, else 1 = conditional only); targets whose loader takes no scale reject one != 1.
    """
    name = target_class(folder)
    ep = target_loaders().get(name)
    if ep is None:
        raise TargetError(f"'{folder}' holds a {name} (its _class_name), which genleak cannot open; "
                          f"it opens {', '.join(sorted(target_loaders()))}")
    loader = ep.load()
    if guidance_scale is None:
        return loader(folder, device=device)
    if "guidance_scale" in inspect.signature(loader).parameters:
        return loader(folder, device=device, guidance_scale=guidance_scale)
    if guidance_scale != 1.0:
        raise TargetError(f"'{folder}' is a {name} without text conditioning; --guidance-scale applies to text-to-image targets")
    return loader(folder, device=device)
