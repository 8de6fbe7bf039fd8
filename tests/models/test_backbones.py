"""Any torchvision or timm backbone: a new head wherever the old one sat, stages, and every
wrong backbone, weights or strategy value answered with a message that says what to use."""

import types

import pytest
import torch
from torch import nn

from src.errors import UserError
from src.models.backbone import build_backbone
from src.models.checkpoint import load_checkpoint
from src.models.transfer import TransferLearningModel
from src.train import train
from src.training.finetuning import GradualUnfreezing
from tests.helpers.config import FAST, compose_train_config


def model(backbone: str, num_classes: int = 3, **kwargs) -> TransferLearningModel:
    return TransferLearningModel(
        num_classes=num_classes, weights=kwargs.pop("weights", None), backbone=backbone, **kwargs
    )


@pytest.mark.parametrize(
    ("backbone", "kwargs", "width"),
    [
        ("mobilenet_v3_small", {}, 1024),  # torchvision: classifier.3
        ("vit_b_16", {"image_size": 32}, 768),  # torchvision: heads.head
        ("timm/convnext_atto", {}, 320),  # timm: head.fc
    ],
)
def test_new_head_replaces_the_classifier_wherever_it_sits(backbone, kwargs, width):
    net = model(backbone, backbone_kwargs=kwargs)
    assert net.head.in_features == width
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 3)
    old_heads = [m for m in net.backbone.modules() if isinstance(m, nn.Linear)]
    assert all(m.out_features != 1000 for m in old_heads)
    assert net.hparams.backbone == backbone  # saved in the checkpoint


def test_stages_run_from_the_input_to_the_top():
    assert [s.name for s in model("resnet18").stages] == [
        "conv1+bn1", "layer1", "layer2", "layer3", "layer4",
    ]  # fmt: skip
    vit = model("vit_b_16", backbone_kwargs={"image_size": 32}).stages
    assert vit[0].name == "conv_proj+class_token"  # the class token is input side
    assert [s.name for s in vit[-2:]] == ["encoder.layers.encoder_layer_11", "encoder.ln"]
    timm_vit = model("timm/vit_tiny_patch16_224", backbone_kwargs={"img_size": 32}).stages
    names = [s.name for s in timm_vit]  # timm's own stages: its group_matcher
    assert names[:2] == ["patch_embed+cls_token+pos_embed", "blocks.0"]
    assert names[-1] == "blocks.11+norm" and len(names) == 13


@pytest.mark.parametrize(
    ("backbone", "message"),
    [
        ("resnet81", r"Unknown model.backbone='resnet81'\. Did you mean resnet18.*list_models"),
        ("convnext_atto", r"timm has it: model.backbone=timm/convnext_atto"),
        ("timm/vit_tiny_patch16", r"Did you mean .*timm/vit_tiny_patch16_224.*timm.list_models"),
    ],
)
def test_unknown_backbone_names_the_closest_ones_and_how_to_list_all(backbone, message):
    with pytest.raises(UserError, match=message):
        build_backbone(backbone, None)


@pytest.mark.parametrize(
    ("backbone", "weights", "message"),
    [
        ("convnext_tiny", "IMAGENET1K_V2", r"'IMAGENET1K_V2' for convnext_tiny.*V1, DEFAULT"),
        ("timm/vit_tiny_patch16_224", "in1k", r"DEFAULT, augreg_in21k, augreg_in21k_ft_in1k"),
    ],
)  # fmt: skip
def test_weights_name_the_backbone_lacks_lists_the_ones_it_has(backbone, weights, message):
    with pytest.raises(UserError, match=message):
        build_backbone(backbone, weights)


def test_timm_weights_that_cannot_be_downloaded_get_the_offline_hint(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(
        UserError,
        match=r"(?s)Could not download the timm weights convnext_atto.*model\.weights=null",
    ):
        build_backbone("timm/convnext_atto", "DEFAULT")


def test_weights_file_of_another_architecture_says_what_did_not_match(tmp_path):
    from torchvision.models import resnet34

    path = tmp_path / "resnet34.pth"
    torch.save(resnet34().state_dict(), path)
    with pytest.raises(
        UserError,
        match=r"not hold ResNet18 weights: \d+ unexpected keys \(e\.g\. \['layer1\.2",
    ):
        build_backbone("resnet18", str(path))
    vit = tmp_path / "vit.pth"
    torch.save(model("timm/vit_tiny_patch16_224").backbone.state_dict(), vit)
    with pytest.raises(UserError, match=r"timm/convnext_atto weights: \d+ missing keys"):
        build_backbone("timm/convnext_atto", str(vit))


def test_weights_file_of_the_same_architecture_loads_without_its_old_head(tmp_path):
    from torchvision.models import mobilenet_v3_small

    source = mobilenet_v3_small()  # with ImageNet's 1000-class classifier.3
    torch.save(source.state_dict(), tmp_path / "mobilenet.pth")
    net = model("mobilenet_v3_small", weights=str(tmp_path / "mobilenet.pth"))
    assert torch.equal(net.backbone.features[0][0].weight, source.features[0][0].weight)
    assert torch.equal(net.backbone.classifier[0].weight, source.classifier[0].weight)


def test_backbone_without_a_linear_head_is_refused():
    with pytest.raises(UserError, match="no Linear classification layer"):
        build_backbone("squeezenet1_1", None)


def test_checkpoint_of_another_backbone_names_the_one_to_use(tmp_path):
    mobile = model("mobilenet_v3_small", num_classes=2)
    path = tmp_path / "mobile.ckpt"
    torch.save({"state_dict": mobile.state_dict(), "hyper_parameters": dict(mobile.hparams)}, path)
    assert load_checkpoint(path, 2, "mobilenet_v3_small")["state_dict"]
    with pytest.raises(UserError, match=r"holds a mobilenet_v3_small.*model.backbone=mobilenet"):
        load_checkpoint(path, 2, "resnet18")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.backbone=resnet81"], r"Unknown model.backbone='resnet81'"),
        (["model.backbone=convnext_tiny", "model.weights=IMAGENET1K_V2"], r"Invalid model.weights"),
        (["strategy=lp_ft", "strategy.probe_epochs=3"], r"probe_epochs=3.*max_epochs=3"),
        (["strategy=lp_ft", "strategy.probe_epochs=-1"], r"Invalid strategy.probe_epochs"),
        (["strategy=gradual", "strategy.unfreeze_every=5"], r"unfreeze_every=5.*never trains"),
        (["strategy=gradual", "strategy.unfreeze_every=0"], r"Invalid strategy.unfreeze_every"),
        (["strategy=lp_ft", "strategy.backbone_lr_ratio=0"], r"Invalid strategy.backbone_lr"),
        (["model.layer_decay=1.5"], r"Invalid model.layer_decay"),
        (["strategy=lp_ft", "strategy.probe_epochs=0", "data.cache_features=true"],
         r"cache_features=true needs strategy=frozen.*probe_epochs >= 1"),
    ],
)  # fmt: skip
def test_bad_backbone_or_strategy_values_stop_before_the_data_is_read(tmp_path, overrides, message):
    cfg = compose_train_config(
        [*FAST, f"data.data_dir={tmp_path}/absent", "data.download=false",
         f"paths.output_dir={tmp_path}", "trainer.max_epochs=3", *overrides]
    )  # fmt: skip
    with pytest.raises(UserError, match=message):
        train(cfg)


def test_staged_strategies_refuse_several_processes():
    # Lightning's DDP would not synchronise stages opened after it wrapped the model.
    trainer = types.SimpleNamespace(world_size=2)
    with pytest.raises(UserError, match=r"strategy=gradual .* DDP .*2 processes"):
        GradualUnfreezing().setup(trainer, None, "fit")
