"""The recipe as configuration: heads, losses, optimizers and schedules built from their
config groups, in every strategy, and what a checkpoint remembers of them."""

import types
from pathlib import Path

import pytest
import torch
from torch import nn

from src.models.checkpoint import load_model
from src.models.schedulers import lightning_scheduler
from src.models.transfer import TransferLearningModel
from src.train import train
from tests.helpers.config import compose_train_config

MLP = {"_target_": "src.models.heads.mlp", "hidden_features": 16, "dropout": 0.0}
SGD = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1, "momentum": 0.9}


def model(**kwargs) -> TransferLearningModel:
    names = ["a", "b", "c"]
    return TransferLearningModel(3, names, weights=None, optimizer=SGD, **kwargs)


def fake_trainer(epochs: int = 4, steps_per_epoch: int = 10):
    """What the schedules ask of the Trainer: the epochs and optimizer steps of the run."""
    return types.SimpleNamespace(
        max_epochs=epochs, estimated_stepping_batches=epochs * steps_per_epoch
    )


def test_frozen_strategy_with_an_mlp_head_trains_the_whole_head_and_no_backbone(fast_config):
    from lightning.pytorch import seed_everything

    from src.train import data_and_model

    cfg = fast_config("strategy=frozen", "head=mlp", "head.hidden_features=8",
                      "trainer.max_epochs=2", "optimizer.lr=0.05")  # fmt: skip
    seed_everything(cfg.seed)  # the model the run starts from, as src.train builds it
    start = dict(data_and_model(cfg)[1].named_parameters())
    trained = load_model(train(cfg).best_ckpt)
    assert isinstance(trained.head, nn.Sequential)
    assert (trained.head[0].out_features, trained.head[3].out_features) == (8, 2)
    for name, param in trained.named_parameters():  # every head parameter moved, no other
        assert (not torch.equal(param, start[name])) == name.startswith("head."), name


def test_layer_decay_gives_every_head_parameter_the_head_rate():
    net = model(head=MLP, layer_decay=0.5)
    optimizer = net.configure_optimizers()
    head_group = optimizer.param_groups[0]
    assert head_group["name"] == "head" and head_group["lr"] == pytest.approx(0.1)
    assert {id(p) for p in head_group["params"]} == {id(p) for p in net.head.parameters()}
    assert len(head_group["params"]) == 4  # both layers of the MLP


def test_a_checkpoint_knows_its_head_from_its_config(tmp_path):
    net = model(head=MLP)
    path = tmp_path / "mlp.ckpt"
    torch.save({"state_dict": net.state_dict(), "hyper_parameters": dict(net.hparams)}, path)
    loaded = load_model(path)
    assert isinstance(loaded.head, nn.Sequential)
    images = torch.randn(2, 3, 32, 32)
    assert torch.equal(loaded(images), net.eval()(images))


def test_a_checkpoint_from_before_configurable_heads_still_loads(tmp_path):
    net = model()
    state = {k.replace("head.", "fc."): v for k, v in net.state_dict().items()}
    hparams = {k: v for k, v in net.hparams.items() if k not in ("head", "loss", "optimizer")}
    torch.save({"state_dict": state, "hyper_parameters": hparams}, tmp_path / "old.ckpt")
    loaded = load_model(tmp_path / "old.ckpt")
    assert torch.equal(loaded.head.weight, net.head.weight)


def test_label_smoothing_is_the_loss_cross_entropy_gets():
    net = model(loss={"_target_": "torch.nn.functional.cross_entropy", "_partial_": True,
                      "label_smoothing": 0.1})  # fmt: skip
    logits, labels = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    expected = torch.nn.CrossEntropyLoss(label_smoothing=0.1)(logits, labels)
    assert net.loss(logits, labels) == pytest.approx(expected.item())


def test_cosine_warms_up_over_its_epochs_then_decays_to_the_floor_at_the_last_step():
    net = model()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    config = {"_target_": "src.models.schedulers.cosine", "_partial_": True, "interval": "step",
              "warmup_epochs": 1, "min_lr_ratio": 0.1}  # fmt: skip
    schedule = lightning_scheduler(config, optimizer, fake_trainer(epochs=4, steps_per_epoch=10))
    assert schedule["interval"] == "step"
    lrs = []
    for _ in range(40):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule["scheduler"].step()
    assert lrs[0] == pytest.approx(0.01)  # 1/10 of the way up
    assert lrs[9] == pytest.approx(0.1)  # the end of the warm-up epoch
    assert lrs[9:] == sorted(lrs[9:], reverse=True)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01)  # min_lr_ratio x 0.1


def test_one_cycle_keeps_the_layer_decay_ratios_between_groups():
    net = model(layer_decay=0.5)
    optimizer = torch.optim.SGD(net.configure_optimizers().param_groups, lr=0.1, momentum=0.9)
    ratios = [g["lr"] / optimizer.param_groups[0]["lr"] for g in optimizer.param_groups]
    config = {"_target_": "torch.optim.lr_scheduler.OneCycleLR", "_partial_": True,
              "interval": "step", "max_lr": 0.01}  # fmt: skip
    lightning_scheduler(config, optimizer, fake_trainer())
    peaks = [g["max_lr"] for g in optimizer.param_groups]
    assert [p / peaks[0] for p in peaks] == pytest.approx(ratios)
    assert peaks[0] == pytest.approx(0.01) and ratios[-1] < 1


@pytest.mark.parametrize("scheduler", ["cosine", "onecycle", "step"])
def test_lp_ft_opens_the_backbone_under_every_schedule(fast_config, scheduler, tmp_path):
    """The parameter group lp_ft adds after the probe follows the schedule: its rate stays at
    backbone_lr_ratio x the head's at every logged epoch."""
    cfg = fast_config("strategy=lp_ft", "strategy.probe_epochs=1", "trainer.max_epochs=3",
                      f"scheduler={scheduler}", "strategy.backbone_lr_ratio=0.5")  # fmt: skip
    train(cfg)
    import csv

    with open(Path(cfg.paths.output_dir) / "csv" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("lr-SGD/backbone")]
    assert rows, "the backbone group was never logged"
    for row in rows:
        assert float(row["lr-SGD/backbone"]) == pytest.approx(0.5 * float(row["lr-SGD/head"]))


def test_adamw_with_cosine_warmup_label_smoothing_and_an_mlp_head_composes():
    cfg = compose_train_config(["optimizer=adamw", "scheduler=cosine",
                                "scheduler.warmup_epochs=1", "loss.label_smoothing=0.1",
                                "head=mlp"])  # fmt: skip
    assert (cfg.optimizer._target_, cfg.scheduler.warmup_epochs) == ("torch.optim.AdamW", 1)
    assert (cfg.loss.label_smoothing, cfg.head._target_) == (0.1, "src.models.heads.mlp")
