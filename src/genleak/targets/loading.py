"""``load_target(folder)``: one entry point that opens any target folder genleak understands.

The CLI (``genleak attack``, ``inspect``, ``infer``, ...) calls this instead of a specific class so
that every command takes every target kind. A folder names its class the way diffusers reads it:
``model_index.json`` ``_class_name`` (a pipeline: ``DDPMPipeline``, ``StableDiffusionPipeline``)
or, for a single-model folder, ``config.json`` ``_class_name`` (``UNet2DModel``). Three genleak
folder types carry their own marker instead, since no diffusers pipeline describes them:
``dualmd.json`` (DualMD), an IAR ``config.json`` with ``"format": "genleak.iar"`` and a
``textual_inversion`` entry in ``genleak_latent.json`` (an SD folder plus a learnt word).

The class name picks the loader from the entry points of group ``genleak.targets`` (pyproject.toml),
so the packages that define target types (``defenses``, ``iar``, ``s2l``) stay above this one and a
plug-in adds a type the same way. Nothing is downloaded.
"""

from __future__ import annotations

import functools
import inspect
import json
from pathlib import Path
from typing import Any

import torch

from genleak.errors import TargetError

__all__ = ["load_target", "target_class", "target_loaders"]

ENTRY_POINTS = "genleak.targets"
IAR_FORMAT = "genleak.iar"  # genleak.iar.target.IAR_FORMAT (that package sits above this one)


def _read_json(file: Path) -> dict[str, Any]:
    if not file.is_file():
        return {}
    try:
        data = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise TargetError(f"'{file}' is not valid JSON ({err})") from err
    return data if isinstance(data, dict) else {}


def target_class(folder: str | Path) -> str:
    """The class name a target folder declares (see the module docstring), e.g. ``"DDPMPipeline"``."""
    path = Path(folder)
    if not path.is_dir():
        raise TargetError(f"target folder '{folder}' does not exist; train one with `genleak train ddpm` or pass a diffusers folder")
    if (path / "dualmd.json").is_file():
        return "DualTarget"
    if _read_json(path / "config.json").get("format") == IAR_FORMAT:
        return "IARTarget"
    if _read_json(path / "genleak_latent.json").get("textual_inversion"):
        return "TextualInversionTarget"
    for file in ("model_index.json", "config.json"):
        name = _read_json(path / file).get("_class_name")
        if name:
            return str(name)
    raise TargetError(f"'{folder}' has no model_index.json or config.json with a _class_name: not a diffusers or genleak model folder")


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
