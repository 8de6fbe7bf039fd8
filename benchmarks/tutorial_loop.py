"""The PyTorch transfer-learning tutorial's training loop, as written there, for benchmarks.

Same transforms, batch size 4, shuffled loaders, SGD(0.001, 0.9), StepLR(7, 0.1),
`model.train()`/`model.eval()` per phase and a copy of the best weights; only the worker
count follows the machine (one per core) and the result is returned instead of printed.
Run: `python -m benchmarks.tutorial_loop --data-dir DIR --strategy finetune --out result.json`.
"""

import argparse
import copy
import json
import os
import time

import torch
from torch import nn, optim
from torch.optim import lr_scheduler
from torchvision import datasets, models, transforms


def make_model(strategy: str, weights: str | None, num_classes: int) -> nn.Module:
    model = models.resnet18(weights=weights)
    if strategy == "frozen":
        for param in model.parameters():
            param.requires_grad = False
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


def train_model(data_dir: str, strategy: str, weights: str | None, epochs: int, seed: int):
    torch.manual_seed(seed)
    data_transforms = {
        "train": transforms.Compose(
            [
                transforms.RandomResizedCrop(224),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
            ]
        ),
        "val": transforms.Compose(
            [
                transforms.Resize(256),
                transforms.CenterCrop(224),
                transforms.ToTensor(),
                transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
            ]
        ),
    }
    started = time.perf_counter()
    image_datasets = {
        x: datasets.ImageFolder(os.path.join(data_dir, x), data_transforms[x])
        for x in ["train", "val"]
    }
    workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 4
    dataloaders = {
        x: torch.utils.data.DataLoader(
            image_datasets[x], batch_size=4, shuffle=True, num_workers=workers
        )
        for x in ["train", "val"]
    }
    dataset_sizes = {x: len(image_datasets[x]) for x in ["train", "val"]}
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    model = make_model(strategy, weights, len(image_datasets["train"].classes)).to(device)
    criterion = nn.CrossEntropyLoss()
    params = model.fc.parameters() if strategy == "frozen" else model.parameters()
    optimizer = optim.SGD(params, lr=0.001, momentum=0.9)
    scheduler = lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.1)

    fit_started = time.perf_counter()
    best_model_wts = copy.deepcopy(model.state_dict())
    best_acc, best_epoch, history = 0.0, 0, []
    for epoch in range(epochs):
        for phase in ["train", "val"]:
            if phase == "train":
                model.train()
            else:
                model.eval()
            running_loss, running_corrects = 0.0, 0
            for inputs, labels in dataloaders[phase]:
                inputs, labels = inputs.to(device), labels.to(device)
                optimizer.zero_grad()
                with torch.set_grad_enabled(phase == "train"):
                    outputs = model(inputs)
                    _, preds = torch.max(outputs, 1)
                    loss = criterion(outputs, labels)
                    if phase == "train":
                        loss.backward()
                        optimizer.step()
                running_loss += loss.item() * inputs.size(0)
                running_corrects += torch.sum(preds == labels.data).item()
            if phase == "train":
                scheduler.step()
            epoch_acc = running_corrects / dataset_sizes[phase]
            if phase == "val":
                history.append(epoch_acc)
                if epoch_acc > best_acc:
                    best_acc, best_epoch = epoch_acc, epoch
                    best_model_wts = copy.deepcopy(model.state_dict())
    fit_time = time.perf_counter() - fit_started
    model.load_state_dict(best_model_wts)
    return {
        "best_val_acc": best_acc,
        "best_epoch": best_epoch,
        "val_acc_per_epoch": history,
        "fit_time_s": fit_time,
        "wall_time_s": time.perf_counter() - started,
        "train_size": dataset_sizes["train"],
        "epochs": epochs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--strategy", choices=["finetune", "frozen"], default="finetune")
    parser.add_argument("--weights", default=None, help="torchvision weights name, or omit")
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", required=True, help="JSON file for the result")
    args = parser.parse_args()
    result = train_model(args.data_dir, args.strategy, args.weights, args.epochs, args.seed)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
