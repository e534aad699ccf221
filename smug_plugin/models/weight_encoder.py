"""The weight encoder of Weighted SMUG: one positive weight per noisy input image."""

import torch
from torch import nn


class WeightEncoder(nn.Module):
    """``num_layers`` x [3x3 conv, batch norm, ReLU], global average pooling, linear to 1, sigmoid.

    The published architecture (16 channels, 5 layers); input is the noisy complex image as 2 channels.
    """

    def __init__(self, channels: int = 16, num_layers: int = 5):
        super().__init__()
        if channels < 1 or num_layers < 1:
            raise ValueError(f"weight encoder needs channels >= 1 and layers >= 1, got {channels}, {num_layers}.")
        layers: list[nn.Module] = []
        in_channels = 2
        for _ in range(num_layers):
            layers += [nn.Conv2d(in_channels, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
            in_channels = channels
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Weights in (0, 1) of shape (B,) for complex images ``(B, H, W, 2)``."""
        features = self.features(image.permute(0, 3, 1, 2)).mean(dim=(2, 3))
        return torch.sigmoid(self.head(features)).squeeze(-1)
