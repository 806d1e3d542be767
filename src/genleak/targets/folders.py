"""The files of a target folder that more than one layer writes or reads, each named once.

``train`` (and ``defenses``, ``iar``) write a model's training records; ``pipeline``, ``audit`` and
``defenses`` check them; ``loading`` and the target types agree on the markers that name a
folder's type. The names live here, in the lowest layer that needs them, so every writer and reader
imports one constant instead of keeping its own copy of a layer above it.
"""

TARGET_SPLIT_FILE = "split.json"  # the manifest of the data the model trained on; attacks check it
TRAIN_RECORD = "genleak_train.json"  # config, data fingerprint, steps, losses, the leakage monitor's curve
LATENT_META = "genleak_latent.json"  # genleak's settings next to an SD-style folder (caption template, CFG, subclass)
IAR_FORMAT = "genleak.iar"  # the "format" of an IAR target's config.json
DUAL_LEGACY_INDEX = "dualmd.json"  # a DualMD folder's index before it carried a _class_name
