"""Which backbones and weights exist: `model.backbone` and `model.weights` checked by name.

A backbone is any torchvision classification model (`resnet18`, `convnext_tiny`, ...) or a
timm model written `timm/<name>` (optionally `timm/<name>.<pretrained tag>`). Both
libraries list their models and weights without a network connection, so every name is
checked before any data is read, and a wrong one is answered with the closest valid names.
"""

import difflib
from dataclasses import dataclass

from src.errors import UserError

TIMM_PREFIX = "timm/"
# Weights names that are not a file: "DEFAULT" = the library's recommended weights.
DEFAULT_WEIGHTS = "DEFAULT"


@dataclass(frozen=True)
class BackboneName:
    """`model.backbone` split into its library, architecture and (timm only) pretrained tag."""

    library: str  # "torchvision" or "timm"
    arch: str
    tag: str | None = None

    @property
    def is_timm(self) -> bool:
        return self.library == "timm"

    def __str__(self) -> str:
        if not self.is_timm:
            return self.arch
        return f"{TIMM_PREFIX}{self.arch}" + (f".{self.tag}" if self.tag else "")


def parse_backbone(name: str) -> BackboneName:
    """Check `model.backbone` and split it; an unknown name lists the closest valid ones."""
    name = str(name).strip()
    if name.startswith(TIMM_PREFIX):
        arch, _, tag = name[len(TIMM_PREFIX) :].partition(".")
        known = timm_models()
        if arch not in known:
            raise UserError(
                f"Unknown timm model model.backbone={name!r}.{closest(arch, known, TIMM_PREFIX)} "
                'List them all with: python -c "import timm; print(timm.list_models())" '
                "(timm.list_models('*convnext*') filters)."
            )
        return BackboneName("timm", arch, tag or None)
    import torchvision  # its classification models (not detection, video, ...)

    known = torchvision.models.list_models(module=torchvision.models)
    if name not in known:
        timm_hint = ""
        if name in timm_models():
            timm_hint = f" timm has it: model.backbone=timm/{name}."
        raise UserError(
            f"Unknown model.backbone={name!r}.{closest(name, known)}{timm_hint} "
            "List torchvision's with: python -c \"import torchvision; "
            'print(torchvision.models.list_models(module=torchvision.models))"; '
            "any timm model works as model.backbone=timm/<name>."
        )
    return BackboneName("torchvision", name)


def closest(name: str, known: list[str], prefix: str = "") -> str:
    """' Did you mean a, b or c?' (empty when nothing is close)."""
    matches = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
    if not matches:
        return ""
    return " Did you mean " + ", ".join(f"{prefix}{m}" for m in matches) + "?"


def timm_models() -> list[str]:
    import timm

    return timm.list_models()


def looks_like_path(weights: str) -> bool:
    return (
        "/" in weights
        or "\\" in weights
        or weights.endswith((".pth", ".pt", ".ckpt", ".safetensors", ".bin"))
    )


def check_weights(backbone: BackboneName, weights: str | None) -> None:
    """A `model.weights` that is not a path must name weights of this backbone."""
    if weights is None or looks_like_path(str(weights)):
        return
    # The named weights of the backbone: timm's pretrained tags, or torchvision's enum names.
    if backbone.is_timm:
        import timm

        tags = [n.partition(".")[2] for n in timm.list_pretrained(f"{backbone.arch}.*")]
        names = [DEFAULT_WEIGHTS, *tags] if tags else []
    else:
        from torchvision.models import get_model_weights

        names = list(get_model_weights(backbone.arch).__members__)
    if str(weights) in names or (backbone.tag and weights == DEFAULT_WEIGHTS):
        return  # (a tag in the backbone name says which weights DEFAULT means)
    if not names:
        raise UserError(
            f"Invalid model.weights={weights!r}: {backbone} has no pretrained weights in timm. "
            "Use model.weights=null (random initialisation) or a path to a weights file."
        )
    raise UserError(
        f"Invalid model.weights={weights!r} for {backbone}. Use one of {', '.join(names)}, a "
        "path to a weights file (.pth/.safetensors), or null for random initialisation."
    )
