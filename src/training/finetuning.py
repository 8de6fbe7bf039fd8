"""The strategies that open the backbone during training: `lp_ft` and `gradual`.

Both are Lightning `BaseFinetuning` callbacks: the backbone is frozen before the optimizer
exists, and at the start of the epochs their schedule names, stages are made trainable and
added to the optimizer as new parameter groups. `BaseFinetuning` records those groups in the
checkpoint and rebuilds them on resume before the optimizer's state (momentum) is loaded;
what it does not restore, these classes do: which stages train again (`requires_grad`).

Two of its helpers are not used. `unfreeze_and_add_param_group` drops any parameter whose
values equal one already in the optimizer (`filter_on_optimizer` compares with
`torch.equal`): with random initialisation every LayerNorm weight is all ones, so whole
stages would silently never train. And its frozen BatchNorm layers stop tracking
statistics but still normalise with the batch's; here a frozen stage is in eval mode
(`TransferLearningModel.train`), as in `strategy=frozen`.
"""

import logging

from lightning.pytorch.callbacks import BaseFinetuning

from src.errors import UserError
from src.models.stages import stage_lr_scales

log = logging.getLogger(__name__)


class StagedFinetuning(BaseFinetuning):
    """Train the head alone first, then open `stages_open(epoch)` backbone stages, top first.

    Each opened stage learns at `backbone_lr_ratio` x the head's current learning rate,
    times `model.layer_decay` per stage below the top one.
    """

    strategy = ""  # the strategy= option that selects it

    def __init__(self, backbone_lr_ratio: float, head_only_epochs: int) -> None:
        super().__init__()
        self.backbone_lr_ratio = backbone_lr_ratio
        # Epochs at the start in which the backbone is frozen (what cached features need).
        self.head_only_epochs = head_only_epochs
        self.opened: list[str] = []  # names of the stages that train, in the order opened

    def stages_open(self, epoch: int, num_stages: int) -> int:
        """How many stages, counted from the top, train in `epoch`."""
        raise NotImplementedError

    def setup(self, trainer, pl_module, stage: str) -> None:
        if trainer.world_size > 1:
            # DistributedDataParallel only synchronises the parameters that trained when it
            # wrapped the model; stages opened later would drift apart on every process
            # (Lightning issue #20340).
            raise UserError(
                f"strategy={self.strategy} opens the backbone during training, which "
                f"Lightning's DDP does not synchronise ({trainer.world_size} processes here). "
                "Train on one device, or use strategy=finetune or strategy=frozen."
            )
        super().setup(trainer, pl_module, stage)

    def freeze_before_training(self, pl_module) -> None:
        self.freeze(pl_module.backbone, train_bn=False)
        pl_module.train()  # frozen stages to eval mode

    def on_fit_start(self, trainer, pl_module) -> None:
        resuming = self._restarting
        super().on_fit_start(trainer, pl_module)  # puts the saved parameter groups back
        if resuming:
            by_name = {stage.name: stage for stage in pl_module.stages}
            for name in self.opened:
                self.open_stage(by_name[name])
            pl_module.train()
        # A named head group keeps its LR column (lr-SGD/head) the same in every phase.
        for optimizer in trainer.optimizers:
            optimizer.param_groups[0].setdefault("name", "head")

    def finetune_function(self, pl_module, epoch: int, optimizer) -> None:
        stages = pl_module.stages
        wanted = self.stages_open(epoch, len(stages))
        top_down = list(reversed(range(len(stages))))
        new = [i for i in top_down[:wanted] if stages[i].name not in self.opened]
        if not new:
            return
        top_lr = optimizer.param_groups[0]["lr"] * self.backbone_lr_ratio
        lrs = [top_lr * s for s in stage_lr_scales(len(stages), pl_module.layer_decay)]
        if pl_module.layer_decay == 1 and len(new) > 1:
            # One learning rate for all: one group (lp_ft's "backbone" column).
            params = [p for i in new for p in self.open_stage(stages[i])]
            add_group(optimizer, params, lrs[new[0]], "backbone", pl_module.trainer)
        else:
            for i in new:
                params = self.open_stage(stages[i])
                add_group(
                    optimizer, params, lrs[i], f"backbone.{stages[i].name}", pl_module.trainer
                )
        self.opened += [stages[i].name for i in new]
        pl_module.train()  # the opened stages leave eval mode
        log.info(
            "Epoch %d: training backbone stage(s) %s (%d of %d open).",
            epoch, ", ".join(stages[i].name for i in new), len(self.opened), len(stages),
        )  # fmt: skip

    def open_stage(self, stage) -> list:
        """Make a stage trainable (its BatchNorm tracking statistics again); its parameters."""
        self.make_trainable(stage.modules)
        for param in stage.params:  # also those held directly by a larger module
            param.requires_grad_(True)
        return stage.params

    def state_dict(self) -> dict:
        return {**super().state_dict(), "opened": list(self.opened)}

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self.opened = list(state_dict.get("opened", []))


def add_group(optimizer, params: list, lr: float, name: str, trainer) -> None:
    """Add a parameter group, and tell the learning-rate schedulers about it.

    Schedulers keep per-group values fixed when they were built: a base rate (`base_lrs`),
    `LambdaLR` a factor function, `OneCycleLR` the group's bounds (`max_lr`, `min_lr`,
    momentum); a group added later gets the head's, its rates in the proportion of its rate
    to the head's.
    `initial_lr` is this group's rate as it would have been at epoch 0.
    """
    head = optimizer.param_groups[0]
    ratio = lr / head["lr"] if head["lr"] else 1.0
    # The head's settings (a one-cycle schedule's momentum bounds too), its rates scaled.
    group = {k: v for k, v in head.items() if k not in ("params", "name")}
    group.update({k: head[k] * ratio for k in ("initial_lr", "max_lr", "min_lr") if k in head})
    group.update(params=params, lr=lr, name=name)
    group.setdefault("initial_lr", lr)
    optimizer.add_param_group(group)
    for config in trainer.lr_scheduler_configs:
        scheduler = config.scheduler
        if scheduler.optimizer is optimizer and hasattr(scheduler, "base_lrs"):
            scheduler.base_lrs.append(group["initial_lr"])
            if hasattr(scheduler, "lr_lambdas"):
                scheduler.lr_lambdas.append(scheduler.lr_lambdas[0])


class LinearProbeThenFinetune(StagedFinetuning):
    """LP-FT: the head alone for `probe_epochs`, then the whole backbone at once."""

    strategy = "lp_ft"

    def __init__(self, probe_epochs: int = 5, backbone_lr_ratio: float = 0.1) -> None:
        super().__init__(backbone_lr_ratio, head_only_epochs=probe_epochs)

    def stages_open(self, epoch: int, num_stages: int) -> int:
        return num_stages if epoch >= self.head_only_epochs else 0


class GradualUnfreezing(StagedFinetuning):
    """The head alone for `unfreeze_every` epochs, then one more stage, from the top, every
    `unfreeze_every` epochs."""

    strategy = "gradual"

    def __init__(self, unfreeze_every: int = 1, backbone_lr_ratio: float = 1.0) -> None:
        super().__init__(backbone_lr_ratio, head_only_epochs=unfreeze_every)

    def stages_open(self, epoch: int, num_stages: int) -> int:
        return min(num_stages, epoch // self.head_only_epochs)
