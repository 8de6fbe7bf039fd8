"""Sweeps and scale-out: multirun job directories, the sweep summary, Optuna and CPU DDP."""

import csv
import json
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir

from src.runs.sweep_summary import write_sweep_summary
from tests.helpers.cli import run_cli
from tests.helpers.config import CONF_DIR, FAST
from tests.helpers.images import make_image_folder

# One epoch of the frozen strategy (only the head trains): the quickest real training run.
QUICK = [*FAST, "strategy=frozen", "trainer.max_epochs=1"]


def sweep(tmp_path: Path, *args: str, data_dir: Path | None = None):
    """Run `python -m src.train -m ...` on generated data; return the result and sweep root."""
    data_dir = data_dir or make_image_folder(tmp_path / "data")
    logs = tmp_path / "logs"
    result = run_cli("-m", *QUICK, f"data.data_dir={data_dir}", f"paths.log_dir={logs}", *args)
    sweep_dirs = list((logs / "multiruns").iterdir())
    assert len(sweep_dirs) == 1, f"expected one sweep directory, found {sweep_dirs}"
    return result, sweep_dirs[0]


def summary_rows(sweep_dir: Path) -> list[dict]:
    with open(sweep_dir / "sweep_summary.csv") as f:
        return list(csv.DictReader(f))


def override_value(row: dict, key: str) -> str:
    (value,) = [o.split("=", 1)[1] for o in row["overrides"].split() if o.startswith(f"{key}=")]
    return value


@pytest.mark.slow
def test_multirun_gives_every_job_its_own_directory_and_a_ranked_summary(tmp_path):
    result, sweep_dir = sweep(tmp_path, "optimizer.lr=0.05,0.001", "scheduler.gamma=0.1,0.5")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = summary_rows(sweep_dir)
    assert sorted(row["job"] for row in rows) == ["0", "1", "2", "3"]
    swept = {(override_value(r, "optimizer.lr"), override_value(r, "scheduler.gamma"))
             for r in rows}  # fmt: skip
    assert swept == {("0.05", "0.1"), ("0.05", "0.5"), ("0.001", "0.1"), ("0.001", "0.5")}
    for row in rows:
        run_dir = Path(row["run_dir"])
        assert run_dir.parent == sweep_dir and row["status"] == "completed"
        job_summary = json.loads((run_dir / "summary.json").read_text())
        assert float(row["best_val_acc"]) == pytest.approx(job_summary["best_val_acc"])
        assert int(row["best_epoch"]) == job_summary["best_epoch"]
        assert float(row["wall_time_s"]) > 0
    accs = [float(row["best_val_acc"]) for row in rows]
    assert accs == sorted(accs, reverse=True)
    markdown = (sweep_dir / "sweep_summary.md").read_text()
    assert "4 jobs: 4 completed." in markdown
    assert "`optimizer.lr=0.001 scheduler.gamma=0.5`" in markdown


@pytest.mark.slow
def test_a_failing_job_is_listed_as_failed_and_the_others_are_kept(tmp_path):
    result, sweep_dir = sweep(tmp_path, "data.batch_size=0,4")  # job 0 cannot start
    assert result.returncode != 0  # Hydra still reports the failure
    rows = summary_rows(sweep_dir)
    assert [(row["job"], row["status"]) for row in rows] == [("1", "completed"), ("0", "failed")]
    completed, failed = rows
    assert (Path(completed["run_dir"]) / "summary.json").is_file()
    assert 0.0 <= float(completed["best_val_acc"]) <= 1.0
    assert failed["best_val_acc"] == ""
    assert "data.batch_size=0" in failed["error"]
    assert "2 jobs: 1 completed, 1 failed." in (sweep_dir / "sweep_summary.md").read_text()


@pytest.mark.slow
def test_optuna_search_runs_the_configured_number_of_trials(tmp_path):
    result, sweep_dir = sweep(tmp_path, "hparams_search=lr_gamma", "hydra.sweeper.n_trials=3")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = summary_rows(sweep_dir)
    assert len(rows) == 3 and {row["status"] for row in rows} == {"completed"}
    lrs = [float(override_value(row, "optimizer.lr")) for row in rows]
    gammas = [float(override_value(row, "scheduler.gamma")) for row in rows]
    assert all(1e-4 <= lr <= 0.1 for lr in lrs) and len(set(lrs)) == 3
    assert all(0.05 <= gamma <= 1.0 for gamma in gammas)
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(float(rows[0]["best_val_acc"]))
    assert best["best_value"] == pytest.approx(max(float(row["best_val_acc"]) for row in rows))


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_counts_every_validation_image_once(tmp_path):
    """9 validation images on 2 processes: a padded split would count one of them twice."""
    from lightning.pytorch import Trainer

    from src.data.image_folder import ImageFolderDataModule
    from src.models.transfer import TransferLearningModel

    # 6 training images per process, so no training batch has a single image (BatchNorm).
    data = make_image_folder(
        tmp_path / "data", classes=("a", "b", "c"), train_per_class=4, val_per_class=3
    )
    # A sweep of one job: DDP's second process must re-run this job, not start a new sweep.
    result, sweep_dir = sweep(
        tmp_path, "trainer=ddp_cpu", "trainer.precision=32-true", "strategy=finetune",
        "optimizer.lr=0.01", data_dir=data,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    job_dir = sweep_dir / "0"
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir()) == ["0"]
    assert (job_dir / "train_ddp_process_1.log").is_file()  # rank 1 ran in the job's directory
    ddp = json.loads((job_dir / "summary.json").read_text())
    assert ddp["val_size"] == 9

    datamodule = ImageFolderDataModule(data, num_workers=0, image_size=32, resize_size=36)
    model = TransferLearningModel.load_from_checkpoint(ddp["best_ckpt"], weights_only=True)
    single = Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                     enable_model_summary=False, precision="32-true")  # fmt: skip
    (metrics,) = single.validate(model, datamodule=datamodule, verbose=False)
    assert ddp["best_ckpt_val_acc"] == pytest.approx(metrics["val/acc"])
    assert ddp["best_val_acc"] == pytest.approx(metrics["val/acc"])
    assert round(ddp["best_val_acc"] * 9, 4) == round(ddp["best_val_acc"] * 9)


def fake_job(root: Path, name: str, overrides: list[str], status=None, summary=None) -> None:
    job_dir = root / name
    (job_dir / ".hydra").mkdir(parents=True)
    (job_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if status:
        (job_dir / "job_status.json").write_text(json.dumps(status))
    if summary:
        (job_dir / "summary.json").write_text(json.dumps(summary))


def test_summary_ranks_completed_jobs_by_accuracy_then_failed_then_unfinished(tmp_path):
    done = {"status": "completed", "wall_time_s": 3.0}
    fake_job(tmp_path, "0", ["lr=0.1"], {"status": "failed", "error": "ValueError: boom"})
    fake_job(tmp_path, "1", ["lr=0.01"], done, {"best_val_acc": 0.5, "best_epoch": 2})
    fake_job(tmp_path, "2", ["lr=0.001"])  # started, never ended (killed, or still running)
    fake_job(tmp_path, "10", ["lr=0.0001"], done, {"best_val_acc": 0.75, "best_epoch": 0})
    rows = write_sweep_summary(tmp_path)
    assert [(r["job"], r["status"]) for r in rows] == [
        ("10", "completed"), ("1", "completed"), ("0", "failed"), ("2", "unfinished")
    ]  # fmt: skip
    assert summary_rows(tmp_path)[2]["error"] == "ValueError: boom"
    markdown = (tmp_path / "sweep_summary.md").read_text()
    assert "4 jobs: 2 completed, 1 failed, 1 unfinished." in markdown
    assert "| 10 | completed | 0.7500 | 0 | 3.0 | `lr=0.0001` |" in markdown


def test_slurm_launcher_sizes_the_allocation_from_the_trainer():
    overrides = ["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.nodes, launcher.gpus_per_node, launcher.tasks_per_node) == (2, 4, 4)


def test_lr_gamma_search_maximises_val_acc_with_a_seeded_tpe_sampler():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            config_name="train", overrides=["hparams_search=lr_gamma"], return_hydra_config=True
        )
    sweeper = cfg.hydra.sweeper
    assert sweeper.direction == "maximize"
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler"
    assert sweeper.sampler.seed == 42
    assert sweeper.params["optimizer.lr"] == "tag(log, interval(0.0001, 0.1))"


def count_images_with_loader_workers(data_dir: Path) -> int:
    from src.data.image_folder import ImageFolderDataModule

    datamodule = ImageFolderDataModule(data_dir, num_workers=2, image_size=32, resize_size=36)
    datamodule.setup("fit")
    return sum(len(labels) for _, labels in datamodule.val_dataloader())


@pytest.mark.slow
def test_loader_workers_start_inside_joblib_launcher_workers(image_folder):
    """hydra/launcher=joblib runs jobs in loky processes, whose default start method torch
    cannot use for its own loader workers."""
    from joblib import Parallel, delayed

    counts = Parallel(n_jobs=2)(
        delayed(count_images_with_loader_workers)(image_folder) for _ in range(2)
    )
    assert counts == [8, 8]


def test_summary_groups_repeats_over_seeds_and_folds_with_mean_and_std(tmp_path):
    done = {"status": "completed", "wall_time_s": 1.0}
    results = {  # (lr, seed or fold override): (best val/acc, test acc)
        ("0.1", "seed=1"): (0.6, 0.50), ("0.1", "seed=2"): (0.8, 0.55),
        ("0.1", "seed=3"): (0.7, 0.45), ("0.01", "data.fold=0"): (0.8, None),
        ("0.01", "data.fold=1"): (0.4, None),
    }  # fmt: skip
    for job, ((lr, repeat), (acc, test)) in enumerate(results.items()):
        summary = {"best_val_acc": acc, "test_acc": test, "monitor": "val/acc"}
        fake_job(tmp_path, str(job), [f"optimizer.lr={lr}", repeat], done, summary)
    fake_job(tmp_path, "5", ["optimizer.lr=0.01", "data.fold=2"], {"status": "failed"})
    fake_job(tmp_path, "6", ["optimizer.lr=0.001", "+seed=1"])  # never finished
    write_sweep_summary(tmp_path)
    with open(tmp_path / "sweep_summary_groups.csv") as f:
        groups = {row["overrides"]: row for row in csv.DictReader(f)}
    lrs = [key.removeprefix("optimizer.lr=") for key in groups]
    assert lrs == ["0.1", "0.01", "0.001"]  # best mean first, jobs without results last
    seeds, folds, unfinished = groups.values()
    assert (seeds["n"], seeds["seeds"], seeds["jobs"]) == ("3", "1 2 3", "0 1 2")
    assert seeds["incomplete"] == "0"
    assert float(seeds["best_val_acc_mean"]) == pytest.approx(0.7)
    assert float(seeds["best_val_acc_std"]) == pytest.approx(0.1)  # sample std: n - 1
    assert float(seeds["test_acc_mean"]) == pytest.approx(0.5)
    assert float(seeds["test_acc_std"]) == pytest.approx(0.05)
    assert (folds["n"], folds["folds"], folds["incomplete"]) == ("2", "0 1", "1")
    assert float(folds["best_val_acc_std"]) == pytest.approx(0.2828427)
    assert folds["test_acc_mean"] == ""
    assert (unfinished["n"], unfinished["incomplete"]) == ("0", "1")
    assert unfinished["best_val_acc_mean"] == ""
    markdown = (tmp_path / "sweep_summary.md").read_text()
    assert "| `optimizer.lr=0.1` | 3 | 0.7000 ± 0.1000 | 0.5000 ± 0.0500 |" in markdown
    assert "| `optimizer.lr=0.01` | 2 | 0.6000 ± 0.2828 |  | 1 |" in markdown
