"""Training of the fusion network: the Trainer, its config, DDP, checkpoints and resume.

Kept apart from ``occo.models`` (the network and inference), as torchvision keeps its
reference training scripts apart from its model package.
"""
