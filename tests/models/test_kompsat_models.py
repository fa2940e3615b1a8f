"""Shape, parameter-count and gradient checks for the KOMPSAT-5 water-segmentation architectures."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lib.models.deepunet import DeepUNet
from lib.models.fcn import FCN8s
from lib.models.hrnet import HRNetV2Seg
from lib.models.unet_classic import UNetClassic

# name -> (default constructor, parameter count of the default configuration, smaller one for 512 / grads)
MODELS = {
    "FCN8s-vgg16": (lambda: FCN8s(), 41_462_371, lambda: FCN8s(base_channels=8, fc_width=32)),
    "FCN8s-vgg19": (lambda: FCN8s(backbone="vgg19"), 46_773_347,
                    lambda: FCN8s(backbone="vgg19", base_channels=8, fc_width=32)),
    "UNetClassic": (lambda: UNetClassic(), 31_036_481, lambda: UNetClassic(base_channels=8)),
    "DeepUNet": (lambda: DeepUNet(), 667_041, lambda: DeepUNet(width=8, hidden=16)),
    "HRNetV2Seg-w18": (lambda: HRNetV2Seg(), 9_634_819, lambda: HRNetV2Seg(variant="hrnet_w18_small")),
}


@pytest.fixture(scope="module")
def default_models():
    torch.manual_seed(0)
    return {name: make().eval() for name, (make, _, _) in MODELS.items()}


def n_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", MODELS)
def test_default_parameter_count(default_models, name):
    assert n_parameters(default_models[name]) == MODELS[name][1]


@pytest.mark.parametrize("name", MODELS)
def test_default_output_shape_256(default_models, name):
    with torch.no_grad():
        y = default_models[name](torch.randn(1, 1, 256, 256))
    assert y.shape == (1, 1, 256, 256)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", MODELS)
def test_output_shape_512(name):
    """DeepUNet and HRNet in their default width, the heavy FCNs and U-Net at reduced width."""
    torch.manual_seed(0)
    make = MODELS[name][0] if name in ("DeepUNet", "HRNetV2Seg-w18") else MODELS[name][2]
    with torch.no_grad():
        y = make().eval()(torch.randn(1, 1, 512, 512))
    assert y.shape == (1, 1, 512, 512)


@pytest.mark.parametrize("name", MODELS)
def test_gradients_flow(name):
    torch.manual_seed(0)
    model = MODELS[name][2]().train()
    x = torch.randn(2, 1, 64, 64, requires_grad=True)
    model(x).square().mean().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: no gradient for {pname}"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient for {pname}"
    first = next(p for p in model.parameters() if p.dim() == 4)  # the first conv weight
    assert first.grad.abs().sum() > 0
    assert x.grad.abs().sum() > 0


def test_classes_argument():
    with torch.no_grad():
        for model in (FCN8s(base_channels=8, fc_width=16, classes=3), UNetClassic(base_channels=8, classes=3),
                      DeepUNet(width=8, hidden=16, classes=3), HRNetV2Seg(variant="hrnet_w18_small", classes=3)):
            assert model.eval()(torch.randn(1, 1, 64, 64)).shape == (1, 3, 64, 64)


@pytest.mark.parametrize("size", [(1, 1), (7, 9), (97, 100), (65, 130)])
def test_fcn_any_size(size):
    """Ceil-mode pools and top-left crops: any size, not only multiples of 32."""
    model = FCN8s(base_channels=8, fc_width=16).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, *size)).shape == (1, 1, *size)


def test_fcn_upsampling_init_is_bilinear():
    model = FCN8s(base_channels=8, fc_width=16)
    x = torch.randn(1, 1, 8, 8)
    with torch.no_grad():
        up = model.up_fc(x)
    ref = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    assert up.shape == ref.shape
    assert torch.allclose(up[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1], atol=1e-5)  # equal away from the border


@pytest.mark.parametrize("size", [(1, 1), (7, 9), (100, 129), (127, 300)])
def test_deepunet_any_size(size):
    """Sizes that are not multiples of 128 are padded internally and cropped back."""
    model = DeepUNet(width=8, hidden=16).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, *size)).shape == (1, 1, *size)


def test_deepunet_padding_is_reflect_then_crop():
    torch.manual_seed(0)
    model = DeepUNet(width=8, hidden=16).eval()
    x = torch.randn(1, 1, 100, 120)
    with torch.no_grad():
        y = model(x)
        ref = model(F.pad(x, (0, 8, 0, 28), mode="reflect"))[..., :100, :120]
    assert torch.allclose(y, ref, atol=1e-5)


def test_deepunet_structure():
    model = DeepUNet()
    assert len(model.down) == 7 and len(model.up) == 7


def test_hrnet_uses_raw_branches():
    model = HRNetV2Seg()
    assert model.backbone.feature_info.channels() == [18, 36, 72, 144]
    assert model.backbone.feature_info.reduction() == [4, 8, 16, 32]
    assert model.backbone.incre_modules is None
    assert model.fuse[0].in_channels == model.fuse[0].out_channels == 270
    with torch.no_grad():
        branches = model.backbone.eval()(torch.randn(1, 1, 64, 64))
    assert [tuple(b.shape[1:]) for b in branches] == [(18, 16, 16), (36, 8, 8), (72, 4, 4), (144, 2, 2)]


def test_hrnet_non_multiple_of_32():
    model = HRNetV2Seg(variant="hrnet_w18_small").eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 50, 70)).shape == (1, 1, 50, 70)
