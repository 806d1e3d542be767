"""Network definitions genleak trains itself where no diffusers / transformers class exists: the
tiny image-autoregressive models (VAR, RAR, MAR) and their tokenizers (VQ, KL), thesis ch. 9.

They are plain ``torch.nn.Module``s with JSON configs; ``genleak.targets.iar`` wraps them as
attack targets, as ``genleak.targets.ddpm`` wraps a diffusers UNet.
"""
