from pathlib import Path

import pytest
import torch

from handlers.resnet import BLOCKS_PER_STAGE, CifarResNet, load_checkpoint
from iotpipe.config import Config
from model_archives import CHECKPOINTS, checkpoint_path, sha256_prefix

CONFIG = Config.load()


@pytest.mark.parametrize("arch", sorted(CHECKPOINTS))
def test_every_shipped_checkpoint_loads_with_strict_keys(arch: str) -> None:
    path = checkpoint_path(CONFIG, arch)
    model = load_checkpoint(path)  # load_state_dict(strict=True) inside
    assert model.depth == int(arch.removeprefix("resnet"))
    assert not model.training
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("arch", sorted(CHECKPOINTS))
def test_checkpoint_file_matches_its_sha256_prefix(arch: str) -> None:
    path = checkpoint_path(CONFIG, arch)
    assert sha256_prefix(path) == Path(CHECKPOINTS[arch]).stem.rsplit("-", 1)[1]


@pytest.mark.parametrize("depth", sorted(BLOCKS_PER_STAGE))
def test_parameter_counts_match_the_paper(depth: int) -> None:
    published = {20: 0.27e6, 32: 0.46e6, 44: 0.66e6, 56: 0.85e6}
    parameters = sum(p.numel() for p in CifarResNet(depth).parameters())
    assert abs(parameters - published[depth]) / published[depth] < 0.02


def test_unknown_depth_is_refused_with_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="20, 32, 44, 56"):
        CifarResNet(18)


def test_shortcut_option_a_pads_channels_and_subsamples() -> None:
    block = CifarResNet(20).layer2[0]
    x = torch.randn(1, 16, 32, 32)
    shortcut = block.shortcut(x)
    assert shortcut.shape == (1, 32, 16, 16)
    assert torch.equal(shortcut[:, 8:24], x[:, :, ::2, ::2])
    assert shortcut[:, :8].abs().sum() == 0 and shortcut[:, 24:].abs().sum() == 0
