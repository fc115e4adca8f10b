"""BoxNet: the residual U-Net of Warp 2 (warp-facts.md §3.3), with a configurable width and depth.

``BoxNetConfig.warp2()`` is Warp 2's net (encoders 32…1024 channels, 3 residual blocks per stage);
``BoxNetConfig.narrow()`` keeps the layout but uses fewer channels, fewer blocks and one level less,
which is what we ship by default because it is ~30× cheaper on a CPU (see docs/boxnet.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

N_CLASSES = 3  # 0 background, 1 particle, 2 high-contrast artefact (warp-facts.md §3.1)
PIXEL_SIZE_A = 8.0  # BoxNet always sees 8 Å/px (warp-facts.md §3.1)
LEAKY_SLOPE = 0.2  # Warp 2 residual blocks (warp-facts.md §3.3)


@dataclass(frozen=True)
class BoxNetConfig:
    """Shape of a BoxNet U-Net.

    Attributes
    ----------
    widths : tuple of int
        Output channels of encoders E1…En; the prefilter, D0 and the head use ``widths[0]``.
    blocks_per_stage : int
        Residual blocks in each encoder and decoder stage (Warp 2: 3).
    head_blocks : int
        Residual blocks (without BN) in the head (Warp 2: 3).
    """

    widths: tuple[int, ...] = (32, 64, 128, 256, 512, 1024)
    blocks_per_stage: int = 3
    head_blocks: int = 3

    @classmethod
    def warp2(cls) -> BoxNetConfig:
        """Warp 2's UNet2D(depth 3, width 1): encoders 32…1024, 3 blocks per stage."""
        return cls()

    @classmethod
    def narrow(cls) -> BoxNetConfig:
        """Our CPU default: encoders 16…128, 1 block per stage, 1 head block."""
        return cls(widths=(16, 32, 64, 128), blocks_per_stage=1, head_blocks=1)

    def to_dict(self) -> dict:
        """Plain-JSON form."""
        d = asdict(self)
        d["widths"] = list(self.widths)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> BoxNetConfig:
        """Inverse of :meth:`to_dict`."""
        return cls(
            widths=tuple(int(w) for w in d["widths"]),
            blocks_per_stage=int(d["blocks_per_stage"]),
            head_blocks=int(d["head_blocks"]),
        )


class _ResBlock(nn.Module):
    """Post-activation residual block: conv3 → BN → LReLU → conv3 → BN → + x → LReLU."""

    def __init__(self, channels: int, batch_norm: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels) if batch_norm else nn.Identity()
        self.bn2 = nn.BatchNorm2d(channels) if batch_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.leaky_relu(self.bn1(self.conv1(x)), LEAKY_SLOPE)
        y = self.bn2(self.conv2(y))
        return F.leaky_relu(y + x, LEAKY_SLOPE)


class _Stage(nn.Module):
    """1×1 conv to ``c_out`` then ``n_blocks`` residual blocks."""

    def __init__(self, c_in: int, c_out: int, n_blocks: int, batch_norm: bool = True):
        super().__init__()
        self.project = nn.Conv2d(c_in, c_out, 1, bias=False)
        self.blocks = nn.Sequential(*[_ResBlock(c_out, batch_norm) for _ in range(n_blocks)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.project(x))


class BoxNet(nn.Module):
    """Residual U-Net mapping a `(b, 1, h, w)` 8 Å/px image to `(b, 3, h, w)` class logits.

    ``h`` and ``w`` must be multiples of ``2 ** len(config.widths)``.

    Layout (warp-facts.md §3.3): prefilter 5×5 conv → encoders (1×1 conv, residual blocks, 2×2
    stride-2 conv) → decoders (bilinear ×2 upsampling with aligned corners, concatenation
    [upsampled, skip], 1×1 conv, residual blocks) → D0 at full resolution without BN → head of
    residual blocks without BN → 1×1 conv to 3 logits.
    """

    def __init__(self, config: BoxNetConfig | None = None, *, device: torch.device | str | None = None):
        super().__init__()
        self.config = config or BoxNetConfig.narrow()
        with torch.device(device if device is not None else "cpu"):
            self._build()

    def _build(self) -> None:
        w = self.config.widths
        nb = self.config.blocks_per_stage
        self.prefilter = nn.Conv2d(1, w[0], 5, padding=2, bias=False)
        self.encoders = nn.ModuleList()
        self.downsamplers = nn.ModuleList()
        c_prev = w[0]
        for c in w:
            self.encoders.append(_Stage(c_prev, c, nb))
            self.downsamplers.append(nn.Conv2d(c, c, 2, stride=2, bias=False))
            c_prev = c
        # decoders D_{n-1}..D_1: input = up(deeper) ⊕ skip(encoder i-1 output, pre-downsampling)
        self.decoders = nn.ModuleList()
        for i in range(len(w) - 1, 0, -1):
            self.decoders.append(_Stage(w[i] + w[i - 1], w[i - 1], nb))
        self.decoder0 = _Stage(w[0] + w[0], w[0], nb, batch_norm=False)
        self.head = nn.Sequential(
            *[_ResBlock(w[0], batch_norm=False) for _ in range(self.config.head_blocks)]
        )
        self.final = nn.Conv2d(w[0], N_CLASSES, 1, bias=False)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, a=LEAKY_SLOPE, nonlinearity="leaky_relu")

    @property
    def granularity(self) -> int:
        """Input sizes must be multiples of this."""
        return 2 ** len(self.config.widths)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.prefilter(x)
        skips = []
        h = pre
        for enc, down in zip(self.encoders, self.downsamplers, strict=True):
            h = down(enc(h))
            skips.append(h)
        # skips[i] has resolution /2^(i+1); the deepest is skips[-1]
        h = skips[-1]
        for j, dec in enumerate(self.decoders):
            skip = skips[-2 - j]
            up = F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=True)
            h = dec(torch.cat([up, skip], dim=1))
        up = F.interpolate(h, size=pre.shape[-2:], mode="bilinear", align_corners=True)
        h = self.decoder0(torch.cat([up, pre], dim=1))
        return self.final(self.head(h))
