"""PSPMixer: the SAR-KD-Flood student, a patch embedding followed by MLP-Mixer blocks (Tolstikhin et al. 2021).

Two options, both off by default (the published student; old checkpoints rebuild it unchanged):
- `refine=W`: a full-resolution refinement (Refinement) that redraws the upsampled logits with the input
  image, so that the output is not limited to the patch grid.
- `activation="relu", norm="batch"`: the int8-friendly variant. GELU (Erf, Div) and LayerNorm have no int8
  kernels in ONNX Runtime; ReLU has, and a BatchNorm in eval mode is an affine map that `fold_norms`
  merges into the Linear or Conv after it, so that the exported graph has no norm at all.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from lib.models.unet_light import conv_bn_relu

ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU}
NORMS = ("layer", "batch")
GUIDE_CHANNELS = 4  # extra coarse maps handed to the refinement besides the logits


def bilinear_matrix(size: int, scale: int) -> torch.Tensor:
    """[size * scale, size] matrix U with U @ v == F.interpolate(v, scale_factor=scale, mode="linear",
    align_corners=False) for a vector v of length `size` (the columns interpolate unit impulses)."""
    impulses = torch.eye(size, dtype=torch.float64)[None]                  # [1, size channels, size]
    return F.interpolate(impulses, scale_factor=scale, mode="linear", align_corners=False)[0].T.float()


class BilinearUpsample(nn.Module):
    """Bilinear upsampling by an integer factor (align_corners=False) as two matrix products,
    U @ x @ U^T per map: the same values as F.interpolate, but both passes run as matmuls, several
    times faster on the CPU than upsample_bilinear2d and its backward, and in bf16 under autocast."""

    def __init__(self, size: int, scale: int):
        super().__init__()
        self.register_buffer("matrix", bilinear_matrix(size, scale), persistent=False)

    def forward(self, x):  # [B, C, size, size] -> [B, C, size * scale, size * scale]
        matrix = self.matrix.to(x.dtype) if not torch.is_autocast_enabled(x.device.type) else self.matrix
        return matrix @ x @ matrix.T


class TokenBatchNorm(nn.Module):
    """BatchNorm of a token sequence [B, tokens, hidden] over one axis: "tokens" (one mean and variance per
    token position) or "hidden" (per channel). Either is a per-row or per-column affine map in eval mode,
    which folds exactly into the Linear that reads that axis (fold_into). The BatchNorm1d inside sees
    [B, features, length] as it expects, so SYNC_BN's convert_sync_batchnorm may replace it."""

    def __init__(self, tokens: int, hidden: int, axis: str):
        super().__init__()
        self.axis = axis
        self.norm = nn.BatchNorm1d(tokens if axis == "tokens" else hidden)

    def forward(self, x):
        if self.axis == "tokens":
            return self.norm(x)
        return self.norm(x.transpose(1, 2)).transpose(1, 2)

    def scale_shift(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, shift) with norm(x) == x * scale + shift along the normalized axis (eval mode)."""
        norm = self.norm
        scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
        return scale, norm.bias - norm.running_mean * scale


def fold_into(norm: TokenBatchNorm, layer: nn.Module) -> None:
    """layer(norm(x)) -> layer'(x): the norm's scale multiplies the layer's input columns, its shift moves
    into the bias. `layer` is an nn.Linear or a 1x1 nn.Conv2d reading the normalized axis."""
    scale, shift = norm.scale_shift()
    weight = layer.weight.reshape(layer.weight.shape[0], -1)  # [out, in] (a 1x1 conv's kernel is [out, in, 1, 1])
    bias = layer.bias + weight @ shift
    layer.weight.copy_((weight * scale).reshape(layer.weight.shape))
    layer.bias.copy_(bias)


def make_norm(norm: str, tokens: int, hidden: int, axis: str) -> nn.Module:
    if norm not in NORMS:
        raise ValueError(f"PSPMixer: norm {norm!r} is not one of {', '.join(NORMS)}")
    return nn.LayerNorm(hidden) if norm == "layer" else TokenBatchNorm(tokens, hidden, axis)


class MixerBlock(nn.Module):
    """Norm + token-mixing MLP, norm + channel-mixing MLP, each with a residual. With norm="batch" the
    token MLP's norm is per token position and the channel MLP's per channel: the axis each MLP reads."""

    def __init__(self, tokens: int, hidden: int, tokens_mlp: int, channels_mlp: int,
                 activation: str = "gelu", norm: str = "layer"):
        super().__init__()
        act = ACTIVATIONS[activation]
        self.token_norm = make_norm(norm, tokens, hidden, "tokens")
        self.token_mlp = nn.Sequential(nn.Linear(tokens, tokens_mlp), act(), nn.Linear(tokens_mlp, tokens))
        self.channel_norm = make_norm(norm, tokens, hidden, "hidden")
        self.channel_mlp = nn.Sequential(nn.Linear(hidden, channels_mlp), act(), nn.Linear(channels_mlp, hidden))

    def forward(self, x):  # x: [B, tokens, hidden]
        x = x + self.token_mlp(self.token_norm(x).transpose(1, 2)).transpose(1, 2)
        return x + self.channel_mlp(self.channel_norm(x))


class Refinement(nn.Module):
    """The full-resolution path: the upsampled logits and guide maps with the input image through a 3x3
    conv, a 3x3 conv of dilation 2 (7 px receptive field, enough to average SAR speckle) and a 1x1 conv,
    whose output is added to the logits. The last conv starts at zero, so training starts from the coarse
    prediction and the refinement learns only where the shore lies inside a patch."""

    def __init__(self, in_channels: int, classes: int, width: int):
        super().__init__()
        dilated = conv_bn_relu(width, width)
        dilated[0].dilation, dilated[0].padding = (2, 2), (2, 2)
        self.body = nn.Sequential(conv_bn_relu(in_channels + classes + GUIDE_CHANNELS, width), dilated,
                                  nn.Conv2d(width, classes, 1))
        nn.init.zeros_(self.body[-1].weight)
        nn.init.zeros_(self.body[-1].bias)
        self.classes = classes

    def forward(self, coarse, image):  # coarse: [B, classes + GUIDE_CHANNELS, S, S] upsampled
        logits = coarse[:, :self.classes]
        return logits + self.body(torch.cat([coarse, image], 1))


class PSPMixer(nn.Module):
    """Patch embedding (conv, kernel = stride = patch) to `hidden` channels, `depth` Mixer blocks, a 1x1
    head, bilinear upsampling by `patch`; with `refine` > 0, a Refinement of that width at full resolution.

    The head runs before the upsampling: both are linear per pixel and bilinear weights sum to one, so
    the result is the same as upsampling first, at 1/patch^2 of the cost. The token MLP sees a fixed
    number of patches, which ties the model to `image_size`.
    """

    def __init__(self, in_channels: int = 1, classes: int = 1, image_size: int = 256, patch: int = 16,
                 hidden: int = 48, depth: int = 3, tokens_mlp: int | None = None, channels_mlp: int | None = None,
                 refine: int = 0, activation: str = "gelu", norm: str = "layer"):
        super().__init__()
        if image_size % patch:
            raise ValueError(f"PSPMixer: image_size {image_size} is not a multiple of patch {patch}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"PSPMixer: activation {activation!r} is not one of {', '.join(ACTIVATIONS)}")
        self.image_size, self.patch = image_size, patch
        self.grid = image_size // patch
        tokens = self.grid * self.grid
        self.embed = nn.Conv2d(in_channels, hidden, kernel_size=patch, stride=patch)
        self.blocks = nn.Sequential(*[MixerBlock(tokens, hidden, tokens_mlp or hidden, channels_mlp or 2 * hidden,
                                                 activation, norm) for _ in range(depth)])
        self.norm = make_norm(norm, tokens, hidden, "hidden")
        self.head = nn.Conv2d(hidden, classes, 1)
        if refine:  # only then: the modules of a plain PSPMixer (and its checkpoints' keys) stay as they were
            self.guide = nn.Conv2d(hidden, GUIDE_CHANNELS, 1)
            self.refine = Refinement(in_channels, classes, refine)
        self.upsample = BilinearUpsample(self.grid, patch)

    def forward(self, x):
        if tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(f"PSPMixer was built for {self.image_size}x{self.image_size} inputs "
                             f"({self.grid}x{self.grid} patches of {self.patch} px); got {x.shape[-2]}x{x.shape[-1]}. "
                             f"Rebuild it with image_size={x.shape[-1]} or feed {self.image_size}x{self.image_size} tiles")
        tokens = self.embed(x).flatten(2).transpose(1, 2)          # [B, grid*grid, hidden]
        tokens = self.norm(self.blocks(tokens))
        features = tokens.transpose(1, 2).reshape(x.shape[0], -1, self.grid, self.grid)
        if not hasattr(self, "refine"):
            return self.upsample(self.head(features))
        coarse = self.upsample(torch.cat([self.head(features), self.guide(features)], 1))
        return self.refine(coarse, x)

    @torch.no_grad()
    def fold_norms(self) -> "PSPMixer":
        """An eval-mode copy with every TokenBatchNorm folded into the Linear / 1x1 conv after it and
        replaced by nn.Identity: the same outputs, no norm operator in an exported graph (int8 throughout).
        A LayerNorm model is returned as an unchanged copy (LayerNorm depends on each token's statistics)."""
        model = copy.deepcopy(self).eval()
        for block in model.blocks:
            for norm_name, mlp in (("token_norm", block.token_mlp), ("channel_norm", block.channel_mlp)):
                if isinstance(getattr(block, norm_name), TokenBatchNorm):
                    fold_into(getattr(block, norm_name), mlp[0])
                    setattr(block, norm_name, nn.Identity())
        if isinstance(model.norm, TokenBatchNorm):
            for layer in (model.head, getattr(model, "guide", None)):
                if layer is not None:
                    fold_into(model.norm, layer)
            model.norm = nn.Identity()
        return model
