"""The README's command lines run: every line of its "Running" block, end to end on tiny data
and limits, so that a documented command that stops working fails CI."""

import re
import shlex

import pytest

from tests.helpers.cli import run_module
from tests.helpers.config import FAST, ROOT

pytestmark = pytest.mark.slow

# What every command gets on top of its own arguments: seconds instead of minutes.
TINY = {
    "src.train": ["trainer.max_epochs=2", "++trainer.limit_train_batches=2"],
    "src.lr_find": ["lr_find.num_training=20", "lr_find.early_stop_threshold=null"],
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
            command = line.split("#", 1)[0].strip()
            if command.startswith("python -m src."):
                lines.append(command)
    return lines


def test_the_running_section_has_commands_to_test():
    assert len(readme_commands()) >= 5


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command_runs(command, image_folder, tmp_path):
    _, _, module, *args = shlex.split(command)
    if "--help" in args:
        result = run_module(module, *args)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "== Configuration groups ==" in result.stdout
        return
    tiny = [*TINY[module], *(o for a in args for o in STRATEGY_TINY.get(a, []))]
    result = run_module(
        module, *args, *FAST, f"data.data_dir={image_folder}", *tiny,
        f"hydra.run.dir={tmp_path / 'run'}", f"paths.log_dir={tmp_path / 'logs'}",
    )  # fmt: skip
    assert result.returncode == 0, (command, result.stderr[-3000:])
