"""CIFAR-10 ResNets of He et al. (2016), section 4.2, matching the shipped checkpoints.

The names of modules follow the checkpoints' state_dict keys (``conv1``, ``layer1.0.bn2``,
``linear``), so a checkpoint loads with strict key matching once its ``module.`` prefix
(from DataParallel) is removed.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

BLOCKS_PER_STAGE = {20: 3, 32: 5, 44: 7, 56: 9}
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
TOP_K = 3  # the scores each answer carries


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = stride != 1 or in_planes != planes
        self.pad_channels = planes - in_planes

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        """Option A of the paper: subsample by 2 in space, zero-pad the new channels."""
        if not self.downsample:
            return x
        half = self.pad_channels // 2
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, half, self.pad_channels - half))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, depth: int = 20, num_classes: int = 10) -> None:
        super().__init__()
        if depth not in BLOCKS_PER_STAGE:
            raise ValueError(f"depth must be one of {sorted(BLOCKS_PER_STAGE)}, not {depth}")
        self.depth = depth
        blocks = BLOCKS_PER_STAGE[depth]
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._stage(16, 16, blocks, stride=1)
        self.layer2 = self._stage(16, 32, blocks, stride=2)
        self.layer3 = self._stage(32, 64, blocks, stride=2)
        self.linear = nn.Linear(64, num_classes)

    @staticmethod
    def _stage(in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [BasicBlock(in_planes, planes, stride)]
        layers += [BasicBlock(planes, planes, 1) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def depth_of(state_dict: dict[str, torch.Tensor]) -> int:
    """The network depth that a state_dict was saved from (6n + 2, n blocks per stage)."""
    blocks = {key.split(".")[1] for key in state_dict if key.startswith("layer1.")}
    return 6 * len(blocks) + 2


def load_checkpoint(path: str | Path) -> CifarResNet:
    """Build the network a checkpoint describes and load its weights strictly, in eval mode."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state_dict = checkpoint.get("state_dict", checkpoint)
    state_dict = {key.removeprefix("module."): value for key, value in state_dict.items()}
    model = CifarResNet(depth_of(state_dict))
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def prediction(top: torch.return_types.topk | None, slot: int | str) -> dict:
    """The label and the top scores of one batch row, or, for an image without a row, why it has none."""
    if isinstance(slot, str):
        return {"error": slot}
    probabilities, indices = top.values[slot].tolist(), top.indices[slot].tolist()
    return {
        "label": CLASSES[indices[0]],
        "scores": {CLASSES[i]: round(p, 6) for p, i in zip(probabilities, indices, strict=True)},
    }
