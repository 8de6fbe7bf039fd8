"""A backbone seen as a sequence of stages, from the input up to the features.

Gradual unfreezing opens them from the top down, and `model.layer_decay` gives each one a
learning rate `layer_decay` times the one above it. timm models say what their stages are
(`group_matcher(coarse=True)`, what timm's own layer decay uses: the stem, each block or
stage, the final norm). torchvision models do not, so the stages are read off the module
tree: the top-level modules (ResNet: stem, layer1..layer4), descending into a container
that holds nearly everything (`features` of EfficientNet, MobileNet and ConvNeXt, the
encoder layers of a ViT). A norm layer right after a convolution joins it (`conv1+bn1`).
"""

from dataclasses import dataclass

from torch import nn

# A level with this many parameterised modules or fewer is a wrapper (e.g. `features` and
# `classifier`), and its parts are looked into; with more, they are the stages.
WRAPPER_MAX_PARTS = 3
NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)


@dataclass
class Stage:
    """Parameters of one stage, and the largest modules made of them only.

    `modules` is what turns to eval mode while the stage is frozen (BatchNorm statistics and
    dropout included); a parameter held directly by a larger module (a ViT's class token)
    is in `params` but in none of `modules`.
    """

    name: str
    params: list[nn.Parameter]
    modules: list[nn.Module]

    def trains(self) -> bool:
        return any(p.requires_grad for p in self.params)


def backbone_stages(backbone: nn.Module) -> list[Stage]:
    """Stages of `backbone` from input to output; every parameter is in exactly one."""
    if hasattr(backbone, "group_matcher"):  # a timm model
        from timm.models import group_parameters

        groups = group_parameters(backbone, backbone.group_matcher(coarse=True))
        name_lists = [list(names) for names in groups.values()]
    else:  # a model that does not name its stages: its units, a norm joining its conv
        name_lists, previous_leaf = [], False
        for names, module in _units(backbone, ""):
            leaf = not any(True for _ in module.children())
            if name_lists and leaf and previous_leaf and isinstance(module, NORMS):
                name_lists[-1] += names  # conv1 + bn1
            else:
                name_lists.append(names)
            previous_leaf = leaf
    stages = [make_stage(backbone, names) for names in name_lists if names]
    covered = [id(p) for stage in stages for p in stage.params]
    if sorted(covered) != sorted(id(p) for p in backbone.parameters()):
        raise RuntimeError(f"Stages of {type(backbone).__name__} do not cover its parameters once.")
    return stages


def _units(module: nn.Module, prefix: str) -> list[tuple[list[str], nn.Module]]:
    """(parameter names, module) of the parts of `module`, in order; parameters held by
    `module` itself (a class token, a position embedding) join its first part."""
    parts = [(name, child) for name, child in module.named_children() if has_params(child)]
    units: list[tuple[list[str], nn.Module]] = []
    for name, child in parts:
        if len(parts) <= WRAPPER_MAX_PARTS and any(has_params(c) for c in child.children()):
            units += _units(child, f"{prefix}{name}.")
        else:
            units.append(([f"{prefix}{name}.{n}" for n, _ in child.named_parameters()], child))
    own = [f"{prefix}{name}" for name, _ in module.named_parameters(recurse=False)]
    if own and units:
        units[0] = (own + units[0][0], units[0][1])
    elif own:
        units = [(own, module)]
    return units


def has_params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def make_stage(backbone: nn.Module, param_names: list[str]) -> Stage:
    named = dict(backbone.named_parameters())
    wanted = set(param_names)
    modules: list[tuple[str, nn.Module]] = []

    def visit(prefix: str, module: nn.Module) -> None:
        own = {f"{prefix}{n}" for n, _ in module.named_parameters()}
        if own and own <= wanted:
            modules.append((prefix.rstrip("."), module))
            return
        if own & wanted:
            for child_name, child in module.named_children():
                visit(f"{prefix}{child_name}.", child)

    visit("", backbone)
    in_modules = {f"{m}.{n}" if m else n for m, mod in modules for n, _ in mod.named_parameters()}
    loose = [n for n in param_names if n not in in_modules]
    name = "+".join([m for m, _ in modules] + loose) or "all"
    return Stage(name, [named[n] for n in param_names], [m for _, m in modules])


def stage_lr_scales(num_stages: int, layer_decay: float) -> list[float]:
    """Learning-rate factor of each stage, input side first: the top stage 1, each stage
    below it `layer_decay` times the one above."""
    return [layer_decay ** (num_stages - 1 - i) for i in range(num_stages)]
