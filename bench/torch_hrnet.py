"""The PyTorch peer: the official pose_hrnet topology at any width, in PyTorch.

The benchmarks time it next to the project in the same run (`bench/peer.py`), and the weight
conversion tests use it as the oracle for the outputs of converted checkpoints.

Written from `shared/reference/hrnet-reference.md` section 2 (not copied from any project):
stem of two 3x3 stride-2 conv-BN-ReLU; stage 1 of 4 bottlenecks (64 planes, expansion 4, 1x1
conv + BN downsample in the first); stages 2/3/4 with 1/4/3 modules of 4 BASIC blocks per
branch; transitions (3x3 conv-BN-ReLU where channels change, 3x3 stride-2 conv-BN-ReLU of the
last branch for a new one); fuse j -> i: 1x1 conv + BN + nearest upsampling for j > i, a chain of
3x3 stride-2 conv + BN (ReLU on all but the last) for j < i, summed in order j = 0, 1, ... then
ReLU; the last module outputs branch 0 only; a 1x1 `final_layer` with bias. Module attribute
names follow the official state-dict names (`shared/reference/hrnet-w32-state-dict.txt`).

Like the official code, every ReLU and the residual additions of the blocks run in place
(`nn.ReLU(inplace=True)`, `out += residual`): fewer activation copies, which is most of the
difference between a plainly written HRNet and the official one in training speed on a CPU.

Input: ImageNet-normalised `[B, 3, H, W]`; output heatmaps `[B, K, H/4, W/4]`.
Import only where torch is installed (`pytest.importorskip("torch")` first).
"""

from __future__ import annotations

import torch
from torch import nn

STAGE_MODULES = (1, 4, 3)  # stages 2, 3, 4
BLOCKS = 4


def _conv3x3(in_channels, out_channels, stride=1):
    return nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)


def _bn(channels):
    return nn.BatchNorm2d(channels, momentum=0.1, eps=1e-5)


class BasicBlock(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv1, self.bn1 = _conv3x3(channels, channels), _bn(channels)
        self.conv2, self.bn2 = _conv3x3(channels, channels), _bn(channels)

    def forward(self, x):
        y = torch.relu_(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        y += x
        return torch.relu_(y)


class Bottleneck(nn.Module):
    def __init__(self, in_channels, planes):
        super().__init__()
        out_channels = planes * 4
        self.conv1, self.bn1 = nn.Conv2d(in_channels, planes, 1, bias=False), _bn(planes)
        self.conv2, self.bn2 = _conv3x3(planes, planes), _bn(planes)
        self.conv3, self.bn3 = nn.Conv2d(planes, out_channels, 1, bias=False), _bn(out_channels)
        self.downsample = None
        if in_channels != out_channels:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False),
                                            _bn(out_channels))

    def forward(self, x):
        y = torch.relu_(self.bn1(self.conv1(x)))
        y = torch.relu_(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        y += x if self.downsample is None else self.downsample(x)
        return torch.relu_(y)


class HighResolutionModule(nn.Module):
    def __init__(self, channels, multi_scale_output):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(*[BasicBlock(c) for _ in range(BLOCKS)]) for c in channels
        )
        outputs = len(channels) if multi_scale_output else 1
        self.fuse_layers = nn.ModuleList()
        for i in range(outputs):
            row = nn.ModuleList()
            for j, c_j in enumerate(channels):
                if j > i:
                    row.append(nn.Sequential(nn.Conv2d(c_j, channels[i], 1, bias=False),
                                             _bn(channels[i]),
                                             nn.Upsample(scale_factor=2 ** (j - i),
                                                         mode="nearest")))
                elif j == i:
                    row.append(None)
                else:
                    chain = []
                    for k in range(i - j):
                        last = k == i - j - 1
                        out = channels[i] if last else c_j
                        layers = [_conv3x3(c_j, out, 2), _bn(out)]
                        if not last:
                            layers.append(nn.ReLU(inplace=True))
                        chain.append(nn.Sequential(*layers))
                    row.append(nn.Sequential(*chain))
            self.fuse_layers.append(row)

    def forward(self, xs):
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        fused = []
        for i, row in enumerate(self.fuse_layers):
            y = xs[0] if i == 0 else row[0](xs[0])
            for j in range(1, len(xs)):
                y = y + (xs[j] if i == j else row[j](xs[j]))
            fused.append(torch.relu(y) if y is xs[0] else torch.relu_(y))
        return fused


class TorchPoseHRNet(nn.Module):
    """Official pose_hrnet topology at any width, in PyTorch (`width` 32 / 48 as published)."""

    def __init__(self, width, num_keypoints):
        super().__init__()
        self.conv1, self.bn1 = _conv3x3(3, 64, 2), _bn(64)
        self.conv2, self.bn2 = _conv3x3(64, 64, 2), _bn(64)
        self.layer1 = nn.Sequential(Bottleneck(64, 64), *[Bottleneck(256, 64) for _ in range(3)])
        previous = [256]
        for stage, modules in zip((2, 3, 4), STAGE_MODULES):
            channels = [width * 2**i for i in range(stage)]
            transition = nn.ModuleList()
            for i, c in enumerate(channels):
                if i < len(previous):
                    transition.append(None if previous[i] == c else nn.Sequential(
                        _conv3x3(previous[i], c), _bn(c), nn.ReLU(inplace=True)))
                else:
                    transition.append(nn.Sequential(nn.Sequential(
                        _conv3x3(previous[-1], c, 2), _bn(c), nn.ReLU(inplace=True))))
            setattr(self, f"transition{stage - 1}", transition)
            setattr(self, f"stage{stage}", nn.Sequential(*[
                HighResolutionModule(channels, not (stage == 4 and m == modules - 1))
                for m in range(modules)
            ]))
            previous = channels
        self.final_layer = nn.Conv2d(width, num_keypoints, 1)

    def forward(self, images):
        x = torch.relu_(self.bn1(self.conv1(images)))
        x = torch.relu_(self.bn2(self.conv2(x)))
        branches = [self.layer1(x)]
        for stage in (2, 3, 4):
            transition = getattr(self, f"transition{stage - 1}")
            branches = [
                branches[i] if layer is None and i < len(branches)
                else layer(branches[min(i, len(branches) - 1)])
                for i, layer in enumerate(transition)
            ]
            for module in getattr(self, f"stage{stage}"):
                branches = module(branches)
        return self.final_layer(branches[0])
