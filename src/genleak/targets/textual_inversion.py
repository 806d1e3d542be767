"""The target a textual inversion produces: a text-to-image model whose tokenizer and text encoder
know one learnt word, used with that word in every caption.

``genleak.s2l.textual_inversion`` learns the word (Shake-to-Leak's ``--method embedding``) and
explains the prompt template; this class is only the target, so ``load_target`` opens its folders
from the targets layer.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch

from genleak.errors import TargetError
from genleak.targets.latent import LatentDiffusionTarget


class TextualInversionTarget(LatentDiffusionTarget):
    """A text-to-image target whose tokenizer and text encoder know one learnt word.

    ``conditions(samples)`` puts the word into every caption with ``prompt_template`` (see the
    module docstring for why), so the attacks of ``genleak.pipeline`` query the model with it; a
    caption passed explicitly to ``eps`` is used as given. ``save_pretrained`` writes an SD-style
    folder (the new tokenizer and text encoder included) whose ``genleak_latent.json`` records the
    placeholder, the template and this ``_class_name``, so ``load_target`` rebuilds this class;
    other SD tools read ``model_index.json`` and load a plain pipeline that knows the new word.
    """

    def _extra_meta(self) -> dict[str, Any]:
        return {"_class_name": type(self).__name__, "textual_inversion": {"placeholder": self.placeholder, "prompt_template": self.prompt_template}}

    @classmethod
    def _meta_kwargs(cls, meta: dict[str, Any]) -> dict[str, Any]:
        inversion = meta.get("textual_inversion") or {}
        if "placeholder" not in inversion or "prompt_template" not in inversion:
            raise TargetError("the folder's genleak_latent.json records no textual inversion (placeholder, prompt_template)")
        return {"placeholder": inversion["placeholder"], "prompt_template": inversion["prompt_template"]}

    def __init__(self, *args: Any, placeholder: str, prompt_template: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.placeholder = placeholder
        self.prompt_template = prompt_template

    @property
    def token_id(self) -> int:
        return int(self.tokenizer.convert_tokens_to_ids(self.placeholder))

    def prompt(self, caption: str) -> str:
        return self.prompt_template.format(prompt=caption, token=self.placeholder)

    def conditions(self, samples: Any) -> Any:
        captions = super().conditions(samples)
        return [self.prompt(c) for c in captions]

    def learned_embedding(self) -> dict[str, torch.Tensor]:
        """``{placeholder: vector}``, the layout of diffusers' ``learned_embeds.safetensors``."""
        row = self.text_encoder.get_input_embeddings().weight[self.token_id]
        return {self.placeholder: row.detach().to("cpu").clone()}

    def fingerprint(self) -> str:
        # the template changes every attack prompt, so two templates are two different targets
        if self._fingerprint is None:
            base = super().fingerprint()
            self._fingerprint = hashlib.sha256(f"{base}\x00{self.placeholder}\x00{self.prompt_template}".encode()).hexdigest()
        return self._fingerprint

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["textual_inversion"] = {"placeholder": self.placeholder, "token_id": self.token_id,
                                     "prompt_template": self.prompt_template}
        return info
