"""PSPMixer's options: the full-resolution refinement (refine=W) and the int8-friendly variant
(activation="relu", norm="batch", folded at export); old checkpoints rebuild the published student."""
from __future__ import annotations

import pytest
import torch

from lib.models.factory import build_model, parameter_counts
from lib.models.psp_mixer import TokenBatchNorm

KD_ARGS = {"image_size": 256, "patch": 32, "hidden": 128, "depth": 3, "tokens_mlp": 64, "channels_mlp": 256}
TINY = {"image_size": 64, "patch": 16, "hidden": 8, "depth": 2, "tokens_mlp": 8, "channels_mlp": 16}
INT8_FRIENDLY = {"activation": "relu", "norm": "batch"}


@pytest.mark.parametrize("extra,expected", [({"refine": 16}, 359_638), ({"refine": 16, **INT8_FRIENDLY}, 359_254)])
def test_refined_student_shape_and_parameters(extra, expected):
    model = build_model("PSPMixer", {**KD_ARGS, **extra}).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 256, 256)).shape == (2, 1, 256, 256)
    counts = parameter_counts(model)
    assert counts["held"] == counts["used"] == expected < 400_000


def test_old_checkpoint_arguments_build_the_published_student():
    """A checkpoint written before the options existed holds no refine/activation/norm: same modules, same keys."""
    old = build_model("PSPMixer", dict(TINY))
    assert not any(k.startswith(("refine", "guide")) for k in old.state_dict())
    assert isinstance(old.norm, torch.nn.LayerNorm) and isinstance(old.blocks[0].token_mlp[1], torch.nn.GELU)
    state = old.state_dict()
    build_model("PSPMixer", {**TINY, "refine": 0, "activation": "gelu", "norm": "layer"}).load_state_dict(state)


def test_refinement_starts_from_the_coarse_prediction():
    """The refinement's last conv starts at zero: an untrained refined student predicts its coarse logits."""
    torch.manual_seed(0)
    refined = build_model("PSPMixer", {**TINY, "refine": 8}).eval()
    plain = build_model("PSPMixer", TINY).eval()
    plain.load_state_dict({k: v for k, v in refined.state_dict().items() if not k.startswith(("refine", "guide"))})
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.allclose(refined(x), plain(x), atol=1e-6)


def test_refined_student_draws_below_the_patch_grid():
    """One training step moves the refinement: its output then varies inside a 16-px patch with the input,
    which the bilinear upsampling of a 4x4 grid alone could not follow."""
    torch.manual_seed(0)
    model = build_model("PSPMixer", {**TINY, "refine": 8, **INT8_FRIENDLY})
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x = torch.rand(4, 1, 64, 64)
    target = (x > 0.5).float()  # a per-pixel answer: finer than any patch
    losses = []
    for _ in range(2):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[1] < losses[0]
    assert model.refine.body[-1].weight.abs().sum() > 0


def test_folded_norms_give_the_same_logits():
    torch.manual_seed(0)
    model = build_model("PSPMixer", {**TINY, "refine": 4, **INT8_FRIENDLY})
    for module in model.modules():
        if isinstance(module, TokenBatchNorm):  # non-trivial affine parameters
            torch.nn.init.normal_(module.norm.weight, 1.0, 0.3)
            torch.nn.init.normal_(module.norm.bias, 0.0, 0.3)
    torch.nn.init.normal_(model.refine.body[-1].weight, 0.0, 0.1)
    model.train()
    with torch.no_grad():
        for _ in range(3):  # running statistics away from 0 / 1
            model(torch.rand(4, 1, 64, 64) * 3 + 1)
    model.eval()
    folded = model.fold_norms()
    assert not any(isinstance(m, (TokenBatchNorm, torch.nn.LayerNorm)) for m in folded.modules())
    x = torch.rand(3, 1, 64, 64) * 3 + 1
    with torch.no_grad():
        assert torch.allclose(folded(x), model(x), atol=1e-4)
    assert model.training is False and any(isinstance(m, TokenBatchNorm) for m in model.modules())  # unchanged


def test_unknown_activation_or_norm_is_refused():
    with pytest.raises(ValueError, match="activation 'swish'"):
        build_model("PSPMixer", {**TINY, "activation": "swish"})
    with pytest.raises(ValueError, match="norm 'group'"):
        build_model("PSPMixer", {**TINY, "norm": "group"})


def test_sync_batch_norm_conversion_keeps_the_token_layout():
    """SYNC_BN=1 converts every BatchNorm; the one inside TokenBatchNorm still sees [B, features, length]."""
    model = build_model("PSPMixer", {**TINY, **INT8_FRIENDLY})
    converted = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert isinstance(converted.blocks[0].channel_norm.norm, torch.nn.SyncBatchNorm)
    assert converted.blocks[0].channel_norm.norm.num_features == TINY["hidden"]
    assert converted.blocks[0].token_norm.norm.num_features == (64 // 16) ** 2
