import pytest
import torch

from lib.models.factory import MODELS, build_model, parameter_counts

# name, args, (held, used) parameters: measured from this code; a change to an architecture shows here
CORE_MODELS = [
    ("Unet", {}, (6_628_369, 6_628_369)),
    ("PSPNet", {"encoder_depth": 3}, (2_262_777, 94_393)),
    ("MLP_256", {}, (11_617, 11_617)),
    ("UnetLight", {}, (11_681, 11_681)),
    ("PSPMixer", {"patch": 16, "hidden": 48, "depth": 3}, (115_777, 115_777)),
    ("PSPMixer", {"patch": 32, "hidden": 128, "depth": 3, "tokens_mlp": 64, "channels_mlp": 256}, (355_841, 355_841)),
]


@pytest.mark.parametrize("name,args,expected", CORE_MODELS, ids=[f"{m[0]}-{i}" for i, m in enumerate(CORE_MODELS)])
def test_output_shape_and_parameter_count(name, args, expected):
    model = build_model(name, args).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, 256, 256))
    assert out.shape == (2, 1, 256, 256)
    counts = parameter_counts(model)
    assert (counts["held"], counts["used"]) == expected


def test_pspnet_idle_parameters_are_not_used():
    counts = parameter_counts(build_model("PSPNet", {"encoder_depth": 3}))
    assert counts["used"] < counts["held"] / 20


def test_pspmixer_rejects_other_input_size_clearly():
    model = build_model("PSPMixer", {"image_size": 256, "patch": 16, "hidden": 8, "depth": 1})
    with pytest.raises(ValueError, match="built for 256x256"):
        model(torch.zeros(1, 1, 128, 128))


def test_pspmixer_head_before_upsampling_equals_upsampling_first():
    model = build_model("PSPMixer", {"image_size": 64, "patch": 16, "hidden": 8, "depth": 1}).eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        tokens = model.norm(model.blocks(model.embed(x).flatten(2).transpose(1, 2)))
        features = tokens.transpose(1, 2).reshape(2, -1, 4, 4)
        upsampled_first = model.head(torch.nn.functional.interpolate(features, scale_factor=16, mode="bilinear"))
        assert torch.allclose(model(x), upsampled_first, atol=1e-5)


def test_unknown_model_lists_names():
    with pytest.raises(KeyError, match="PSPMixer"):
        build_model("NoSuchNet")


def test_every_registered_model_builds_by_name():
    for name in MODELS:
        assert isinstance(build_model(name), torch.nn.Module)
