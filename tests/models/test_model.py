"""The transfer-learning module: what frozen and finetune train, and the LR schedule."""

import pytest
import torch

from src.errors import UserError
from src.models.transfer import TransferLearningModel

SGD = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1, "momentum": 0.9}
STEP = {"_target_": "torch.optim.lr_scheduler.StepLR", "_partial_": True, "step_size": 7}


def make_model(freeze_backbone: bool, num_classes: int = 2, **kwargs) -> TransferLearningModel:
    return TransferLearningModel(
        num_classes=num_classes,
        class_names=[f"c{i}" for i in range(num_classes)],
        weights=None,
        freeze_backbone=freeze_backbone,
        **{"optimizer": SGD, "scheduler": {**STEP, "interval": "epoch"}, **kwargs},
    )


def take_optimizer_steps(model: TransferLearningModel, steps: int = 3) -> None:
    """What the Trainer does each step: train mode, forward, backward, optimizer step."""
    optimizer = model.configure_optimizers()["optimizer"]
    model.train()
    torch.manual_seed(0)
    for _ in range(steps):
        images, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 0, 1])
        loss = model.loss(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before: dict, after: dict) -> set[str]:
    return {k for k in before if not torch.equal(before[k], after[k])}


def test_frozen_backbone_keeps_weights_and_batchnorm_statistics():
    model = make_model(freeze_backbone=True)
    backbone_before, head_before = snapshot(model.backbone), snapshot(model.head)
    take_optimizer_steps(model)
    assert changed(backbone_before, snapshot(model.backbone)) == set()  # incl. running_mean/var
    assert changed(head_before, snapshot(model.head)) == {"weight", "bias"}


def test_frozen_backbone_gets_no_gradient_and_stays_in_eval_mode():
    model = make_model(freeze_backbone=True)
    take_optimizer_steps(model, steps=1)
    assert all(p.grad is None for p in model.backbone.parameters())
    assert not any(m.training for m in model.backbone.modules())
    assert model.head.training


def test_frozen_optimizer_sees_only_the_head():
    model = make_model(freeze_backbone=True)
    optimizer = model.configure_optimizers()["optimizer"]
    (group,) = optimizer.param_groups
    assert {id(p) for p in group["params"]} == {id(model.head.weight), id(model.head.bias)}


def test_finetune_changes_the_backbone_and_its_batchnorm_statistics():
    model = make_model(freeze_backbone=False)
    before = snapshot(model.backbone)
    take_optimizer_steps(model)
    after_changes = changed(before, snapshot(model.backbone))
    assert "conv1.weight" in after_changes
    assert "bn1.running_mean" in after_changes
    assert len(model.configure_optimizers()["optimizer"].param_groups[0]["params"]) == 62


def test_head_has_one_output_per_class():
    model = make_model(freeze_backbone=False, num_classes=5)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)


def test_scheduler_steps_per_epoch():
    config = make_model(freeze_backbone=False).configure_optimizers()
    assert config["lr_scheduler"]["interval"] == "epoch"


def test_unknown_weights_name_lists_the_choices():
    with pytest.raises(UserError, match=r"Invalid model.weights='IMAGENET9K'.*IMAGENET1K_V1"):
        TransferLearningModel(num_classes=2, weights="IMAGENET9K")


def test_weights_that_cannot_be_downloaded_explain_how_to_run_offline(monkeypatch, tmp_path):
    from urllib.error import URLError

    def no_network(*args, **kwargs):
        raise URLError("no network")

    # torchvision's weights enum downloads through this name.
    monkeypatch.setattr("torchvision.models._api.load_state_dict_from_url", no_network)
    with pytest.raises(UserError, match=r"(?s)Could not download.*no network.*model\.weights=null"):
        TransferLearningModel(num_classes=2, weights="IMAGENET1K_V1")


def test_local_weights_file_is_loaded(tmp_path):
    from torchvision.models import resnet18

    source = resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    model = TransferLearningModel(num_classes=3, weights=str(path))
    assert torch.equal(model.backbone.conv1.weight, source.conv1.weight)
    assert model.head.out_features == 3


def test_missing_local_weights_file_is_reported(tmp_path):
    with pytest.raises(UserError, match=r"model\.weights file not found"):
        TransferLearningModel(num_classes=2, weights=str(tmp_path / "nope.pth"))


def test_weights_file_of_another_architecture_is_rejected(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"layer.weight": torch.zeros(2)}, path)
    with pytest.raises(UserError, match="does not hold ResNet18 weights"):
        TransferLearningModel(num_classes=2, weights=str(path))
