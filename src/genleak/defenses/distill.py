"""DistillMD: alternating distillation from two disjoint teachers (DualMD paper, section 3.3, Algorithm 2).

The student never regresses on the true noise of a member. At step i it draws x_0 from D_1 if i is
even and uses teacher 2 (trained on D_2, for which x_0 is unseen) as the target, and from D_2 with
teacher 1 if i is odd (Algorithm 2, lines 3-9); the loss is ||stopgrad(eps_teacher(x_t, t)) -
eps_student(x_t, t)||^2 (eq. 7). Since each target is a teacher's answer on *its non-member*, the
student's answers on members approach its answers on non-members (eq. 5 and 6).

The loop is ``genleak.train.train_ddpm`` (``train_latent`` for latent teachers) with
``AlternatingDistillation`` hooks: same checkpoints, resuming, EMA and output folder as the baseline,
and by default the same step budget (appendix A.2.2). ``genleak.defenses.make_distillmd`` gives the
same hooks to a user's own loop.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from genleak.errors import GenleakError
from genleak.train import TrainConfig, TrainHooks, train_ddpm


class TeacherTargets(TrainHooks):
    """Regress on a frozen teacher's noise prediction instead of the true noise (stop-gradient).

    A teacher is a genleak target or a bare diffusers UNet (a user's own training loop)."""

    @staticmethod
    def teacher_eps(teacher: Any, x_t: torch.Tensor, t: torch.Tensor, cond: Any = None) -> torch.Tensor:
        """The teacher's UNet on the student's exact input; ``cond`` (text-encoder states, or integer
        class labels) is passed as is, since teachers and student share the frozen text encoder (and
        the dropped captions)."""
        with torch.no_grad():
            unet = teacher if isinstance(teacher, torch.nn.Module) else teacher.unet
            if next(unet.parameters()).device != x_t.device:
                unet.to(x_t.device)
            if cond is None:
                return unet(x_t, t, return_dict=False)[0].detach()
            key = "encoder_hidden_states" if cond.is_floating_point() else "class_labels"
            return unet(x_t, t, return_dict=False, **{key: cond})[0].detach()


class AlternatingDistillation(TeacherTargets):
    """Algorithm 2's batch choice and targets: even steps D_1 with teacher 2, odd steps D_2 with teacher 1.

    Batches within a half are epoch-wise shuffled by a permutation seeded from (seed, half, epoch),
    so the batch of any step is a pure function of the step: resuming needs no sampler state.
    """

    def __init__(self, teacher_1: Any, teacher_2: Any, half_1: Sequence[int], half_2: Sequence[int],
                 batch_size: int, seed: int = 0) -> None:
        if not half_1 or not half_2:
            raise GenleakError("DistillMD needs two non-empty halves")
        self.teachers = (teacher_1, teacher_2)
        self.halves = (torch.as_tensor(list(half_1)), torch.as_tensor(list(half_2)))
        self.batch_size = batch_size
        self.seed = seed

    def half_of_step(self, step: int) -> int:
        """0 (D_1, taught by teacher 2) for even steps, 1 (D_2, taught by teacher 1) for odd ones."""
        return step % 2

    def batch_indices(self, step: int, n: int, generator: torch.Generator) -> torch.Tensor:
        h = self.half_of_step(step)
        rows = self.halves[h]
        return rows[_epoch_batch(len(rows), self.batch_size, step // 2, self.seed, h)]

    def regression_target(self, x_t: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, idx: torch.Tensor,
                          step: int, cond: Any = None) -> torch.Tensor:
        teacher = self.teachers[1 - self.half_of_step(step)]  # the *other* half's teacher
        return self.teacher_eps(teacher, x_t, t, cond)


def _epoch_batch(n: int, batch_size: int, k: int, seed: int, stream: int) -> torch.Tensor:
    """Positions of the k-th batch of size min(batch_size, n) in epoch-wise shuffled order over n items."""
    b = min(batch_size, n)
    per_epoch = n // b
    epoch, j = divmod(k, per_epoch)
    digest = hashlib.sha256(f"{seed}\x00{stream}\x00{epoch}".encode()).digest()
    gen = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
    return torch.randperm(n, generator=gen)[j * b : (j + 1) * b]


def student_init(init: str, teachers: tuple[Any, Any]) -> torch.nn.Module | None:
    """The student's starting weights: ``scratch`` (fresh UNet, None), ``teacher1``/``teacher2``
    (a copy of that teacher) or a path to a diffusers folder."""
    if init == "scratch":
        return None
    if init in ("teacher1", "teacher2"):
        return copy.deepcopy(teachers[int(init[-1]) - 1].unet).train()
    from genleak.targets import DiffusionTarget

    if not Path(init).is_dir():
        raise GenleakError(f"student init '{init}' is neither scratch, teacher1, teacher2 nor a diffusers folder")
    return copy.deepcopy(DiffusionTarget.from_pretrained(init).unet).train()


def train_distillmd(
    teachers_dir: str | Path,
    config: TrainConfig,
    out_dir: str | Path | None,
    *,
    init: str = "scratch",
    target: str | Path | None = None,
    progress: bool = True,
) -> Any:
    """Algorithm 2 on the teachers of ``genleak defend disjoint``; returns the student target.

    ``config`` gives steps, lr, batch size (per step, drawn from one half), EMA and the UNet shape
    for ``init="scratch"``; use the baseline's values for a fair comparison (appendix A.2.2).
    Latent (and text-to-image) teachers train a latent student on their VAE and text encoder
    (``train_distillmd_latent``) with the same steps, batch size, lr, EMA, seed and channels.
    With ``target`` (the audited model's folder) the student is a UNet of the target's architecture,
    scheduler and conditioning (pixel or latent), trained on the teachers' split.
    """
    from genleak.defenses.disjoint import halves_of, load_teachers
    from genleak.targets.latent import LatentDiffusionTarget

    t1, t2, split = load_teachers(teachers_dir)
    if target is not None:
        from genleak.defenses.from_target import TargetSpec

        spec = TargetSpec.load(target)
        spec.check_schedule(t1, t2)
        config = dataclasses.replace(config, extra={**config.extra, "defense": "distillmd", "init": init,
                                                    "teachers": [t1.fingerprint(), t2.fingerprint()]})
        hooks = AlternatingDistillation(t1, t2, *halves_of(split), config.batch_size, seed=config.seed)
        return spec.train(split, config, out_dir, unet=student_init(init, (t1, t2)), hooks=hooks, progress=progress)
    if isinstance(t1, LatentDiffusionTarget):
        from genleak.train.latent import LatentTrainConfig

        latent = LatentTrainConfig(steps=config.steps, batch_size=config.batch_size, lr=config.lr,
                                   block_out_channels=tuple(config.block_out_channels), ema_decay=config.ema_decay,
                                   seed=config.seed, weight_decay=config.weight_decay, extra=dict(config.extra))
        return train_distillmd_latent(t1, t2, split, latent, out_dir, init=init, progress=progress)
    h1, h2 = halves_of(split)
    unet = student_init(init, (t1, t2))
    if unet is not None:
        config = dataclasses.replace(config, block_out_channels=tuple(unet.config.block_out_channels))
    config = dataclasses.replace(config, extra={
        **config.extra, "defense": "distillmd", "init": init,
        "teachers": [t1.fingerprint(), t2.fingerprint()],
    })
    hooks = AlternatingDistillation(t1, t2, h1, h2, config.batch_size, seed=config.seed)
    return train_ddpm(split.members.images, config, out_dir, split_manifest=split.to_manifest(),
                      progress=progress, unet=unet, hooks=hooks)


def train_distillmd_latent(
    teacher_1: Any,
    teacher_2: Any,
    split: Any,
    config: Any,
    out_dir: str | Path | None,
    *,
    init: str = "scratch",
    captions: Sequence[Sequence[str]] | None = None,
    progress: bool = True,
) -> Any:
    """Algorithm 2 for latent / text-to-image teachers (``LatentDiffusionTarget``): the student is a
    latent UNet on the teachers' VAE latents, conditioned through their frozen text encoder.

    ``config`` is a ``LatentTrainConfig`` (its noise schedule is taken from the teachers).
    ``captions[i]`` lists member i's captions; by default each member's own caption (or the
    teachers' caption template). A caption drawn for a step, including the dropped (empty) one,
    conditions the student and the teacher alike, so the student learns the teacher's conditional
    and unconditional answers on the half the teacher never saw (eq. 7).
    """
    from genleak.defenses.disjoint import halves_of
    from genleak.targets.latent import DEFAULT_CAPTION_TEMPLATE, caption_sets
    from genleak.train.latent import make_scheduler, train_latent

    if not torch.equal(teacher_1.alphas_cumprod, teacher_2.alphas_cumprod):
        raise GenleakError("DistillMD teachers must share one noise schedule")
    h1, h2 = halves_of(split)
    sched = teacher_1.scheduler.config
    config = dataclasses.replace(
        config, text=bool(teacher_1.conditional), beta_schedule=sched.beta_schedule,
        num_train_timesteps=int(sched.num_train_timesteps),
        extra={**config.extra, "defense": "distillmd", "init": init,
               "teachers": [teacher_1.fingerprint(), teacher_2.fingerprint()]},
    )
    if not torch.allclose(make_scheduler(config).alphas_cumprod.double(), teacher_1.alphas_cumprod.double()):
        raise GenleakError(f"the teachers' noise schedule is not the standard {sched.beta_schedule!r} one; "
                           "start the student from a teacher (init teacher1|teacher2)")
    start = None
    if init in ("teacher1", "teacher2"):
        start = (teacher_1, teacher_2)[int(init[-1]) - 1]
    elif init != "scratch":
        raise GenleakError(f"latent DistillMD student init must be scratch, teacher1 or teacher2, got {init!r}")
    template = teacher_1.caption_template or DEFAULT_CAPTION_TEMPLATE
    if teacher_1.conditional and captions is None:
        captions = caption_sets(split.members, 0, template)
    hooks = AlternatingDistillation(teacher_1, teacher_2, h1, h2, config.batch_size, seed=config.seed)
    return train_latent(split.members.images, teacher_1.vae, config, out_dir, captions=captions,
                        text_encoder=teacher_1.text_encoder, tokenizer=teacher_1.tokenizer, init=start,
                        caption_template=template if teacher_1.conditional else None,
                        split_manifest=split.to_manifest(), hooks=hooks, progress=progress)
