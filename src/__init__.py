"""Transfer learning with PyTorch Lightning and Hydra: ResNet18, ants vs bees."""
