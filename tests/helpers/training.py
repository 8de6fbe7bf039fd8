"""A callback that records what each training epoch did to the model, for strategy tests.

Added to a `src.train` run through the config (`+callbacks.record=...`, see
`record_overrides`), it writes `record.json` into the run directory: per epoch, the
state-dict entries (weights and BatchNorm statistics) that changed and the number of
dimensions of the training inputs (4 = images, 2 = cached features).
"""

import json
from pathlib import Path

import torch
from lightning.pytorch import Callback


class RecordEachEpoch(Callback):
    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.epochs: dict[int, dict] = {}
        self.before: dict[str, torch.Tensor] = {}

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.before = model_state(pl_module)
        self.epochs[trainer.current_epoch] = {"input_ndim": set()}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self.epochs[trainer.current_epoch]["input_ndim"].add(batch[0].ndim)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        after = model_state(pl_module)
        record = self.epochs[trainer.current_epoch]
        record["changed"] = sorted(k for k in after if not torch.equal(self.before[k], after[k]))
        record["input_ndim"] = sorted(record["input_ndim"])
        self.path.write_text(json.dumps(self.epochs))


def model_state(module) -> dict[str, torch.Tensor]:
    """The network's weights and buffers (not the metrics' running states)."""
    return {
        k: v.detach().clone()
        for k, v in module.state_dict().items()
        if k.startswith(("backbone.", "head."))
    }


def record_overrides(run_dir: Path) -> list[str]:
    """Overrides that add `RecordEachEpoch` to a run writing into `run_dir`."""
    target = f"{__name__}.{RecordEachEpoch.__name__}"
    return [
        f"+callbacks.record._target_={target}",
        f"+callbacks.record.path={run_dir / 'record.json'}",
    ]


def read_record(run_dir: Path) -> dict[int, dict]:
    return {int(k): v for k, v in json.loads((run_dir / "record.json").read_text()).items()}


def stage_keys(model) -> list[set[str]]:
    """State-dict keys (parameters and buffers) of each backbone stage, input side first."""
    names = {id(p): n for n, p in model.named_parameters()}
    module_names = {id(m): n for n, m in model.named_modules()}
    keys = []
    for stage in model.stages:
        stage_keys = {names[id(p)] for p in stage.params}
        for module in stage.modules:
            prefix = module_names[id(module)]
            stage_keys |= {f"{prefix}.{b}" for b, _ in module.named_buffers()}
        keys.append(stage_keys)
    return keys


def record_inputs(monkeypatch, owner: type, method: str) -> list:
    """Patch `owner.method(self, inputs)` to also keep a float copy of each input it gets, one
    list entry per image; returns that list."""
    seen: list = []
    original = getattr(owner, method)

    def recording(self, inputs):
        seen.extend(inputs.detach().float().clone())
        return original(self, inputs)

    monkeypatch.setattr(owner, method, recording)
    return seen
