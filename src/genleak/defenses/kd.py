"""Normal knowledge distillation: the single-teacher baseline of table 10 (DualMD paper, appendix A.6).

One teacher trained on *all* members (usually the undefended baseline itself) labels x_t built
from every member; the student regresses on stopgrad(eps_teacher(x_t, t)). Unlike DistillMD, the
teacher has seen every image it labels, so its answers carry the members' signal into the student;
table 10 reports that this reduces SecMI's AUC on CIFAR-10 only from 0.93 to 0.74 (DistillMD: 0.59).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from genleak.data import MembershipSplit
from genleak.defenses.distill import TeacherTargets, student_init
from genleak.train import TrainConfig, train_ddpm


class SingleTeacher(TeacherTargets):
    """Default batches over all members; target = the one teacher's noise prediction."""

    def __init__(self, teacher: Any) -> None:
        self.teacher = teacher

    def regression_target(self, x_t: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, idx: torch.Tensor,
                          step: int, cond: Any = None) -> torch.Tensor:
        return self.teacher_eps(self.teacher, x_t, t, cond)


def train_kd(
    teacher_dir: str | Path,
    split: MembershipSplit,
    config: TrainConfig,
    out_dir: str | Path | None,
    *,
    init: str = "scratch",
    target: str | Path | None = None,
    progress: bool = True,
) -> Any:
    """Distil the teacher in ``teacher_dir`` into a student on ``split``'s members (table 10's "Normal KD").

    With ``target`` (the audited model's folder, usually also the teacher) the student is a fresh UNet
    of the target's architecture, scheduler and conditioning (pixel or latent)."""
    from genleak.targets.loading import load_target

    teacher = load_target(teacher_dir)
    if target is not None:
        from genleak.defenses.from_target import TargetSpec

        spec = TargetSpec.load(target)
        spec.check_schedule(teacher)
        config = dataclasses.replace(config, extra={**config.extra, "defense": "kd", "init": init,
                                                    "teacher": teacher.fingerprint()})
        return spec.train(split, config, out_dir, unet=student_init(init, (teacher, teacher)),
                          hooks=SingleTeacher(teacher), progress=progress)
    unet = student_init(init, (teacher, teacher))
    if unet is not None:
        config = dataclasses.replace(config, block_out_channels=tuple(unet.config.block_out_channels))
    config = dataclasses.replace(config, extra={**config.extra, "defense": "kd", "init": init,
                                                "teacher": teacher.fingerprint()})
    return train_ddpm(split.members.images, config, out_dir, split_manifest=split.to_manifest(),
                      progress=progress, unet=unet, hooks=SingleTeacher(teacher))
