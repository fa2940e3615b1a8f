"""Encoder weights for the smp teachers: "imagenet", None, or a path to a local state-dict file.

smp 0.6 fetches ImageNet weights from the Hugging Face hub and retries for about 25 s when offline,
and it does not accept a file path. So the models are built with encoder_weights=None and the weights
are loaded here: from the local hub cache when present, from the hub only after a quick reachability
check, and never with a long wait. When they cannot be had, training goes on from random
initialization and says so; the returned string is recorded in summary.json.
"""
from __future__ import annotations

import os
import pickle
import socket
import zipfile
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from lib.errors import CheckpointError

CONNECT_TIMEOUT_S = 3.0


def hub_reachable(timeout: float = CONNECT_TIMEOUT_S) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    from huggingface_hub import constants
    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def fetch_imagenet_state_dict(encoder_name: str) -> dict[str, torch.Tensor]:
    """The encoder's ImageNet state dict from the hub cache or the hub; raises OSError when unavailable."""
    from huggingface_hub import hf_hub_download
    from safetensors.torch import load_file
    from segmentation_models_pytorch.encoders import encoders
    settings = encoders[encoder_name]["pretrained_settings"]["imagenet"]
    kwargs = dict(repo_id=settings["repo_id"], filename="model.safetensors", revision=settings["revision"])
    try:
        return load_file(hf_hub_download(**kwargs, local_files_only=True))
    except Exception:
        pass  # not cached
    if not hub_reachable():
        raise OSError("the Hugging Face hub is not reachable (no internet?)")
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "30")
    return load_file(hf_hub_download(**kwargs))


def fit_first_conv(state_dict: dict[str, torch.Tensor], encoder: nn.Module) -> dict[str, torch.Tensor]:
    """RGB filters of the first convolution fitted to the encoder's input channels as smp does: summed into one
    channel for in_channels=1, the first n channels scaled by 3/n for n=2 (INPUT_BANDS=VV+VH)."""
    own = encoder.state_dict()

    def fit(key, value):
        if key not in own or value.ndim != 4 or value.shape[1] != 3 or own[key].shape[1] not in (1, 2):
            return value
        channels = own[key].shape[1]
        return value.sum(1, keepdim=True) if channels == 1 else value[:, :channels] * (3 / channels)
    return {key: fit(key, value) for key, value in state_dict.items()}


def load_into_encoder(encoder: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    state_dict = fit_first_conv(state_dict, encoder)
    own = encoder.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    mismatched = sorted(k for k in set(own) & set(state_dict) if own[k].shape != state_dict[k].shape)
    if missing or unexpected or mismatched:
        def head(keys):
            return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")
        problems = [f"{name}: {head(keys)}" for name, keys in
                    (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatch", mismatched)) if keys]
        raise CheckpointError(f"{source}: encoder weights do not fit the encoder; " + "; ".join(problems))
    encoder.load_state_dict(state_dict)


def load_encoder_weights(model: nn.Module, weights: str | None, encoder_name: str = "mobilenet_v2",
                         log=print) -> str:
    """Load `weights` into `model.encoder`; returns what was really used, for summary.json."""
    if weights in (None, "", "none", "None"):
        return "none (random initialization)"
    if weights == "imagenet":
        try:
            state_dict = fetch_imagenet_state_dict(encoder_name)
        except Exception as error:  # offline, hub error, ...
            log(f"ImageNet encoder weights unavailable ({type(error).__name__}: {error}); "
                f"continuing from random initialization")
            return "none (imagenet requested but unavailable)"
        load_into_encoder(model.encoder, state_dict, f"imagenet weights for {encoder_name}")
        return "imagenet"
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"ENCODER_WEIGHTS {weights!r}: no such file (use 'imagenet', None or a state-dict path)")
    load_into_encoder(model.encoder, read_state_dict(path), str(path))
    return str(path)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A plain {name: tensor} file (torch.save of a state dict, or .safetensors; a checkpoint's 'state_dict'
    is taken). Anything else is one CheckpointError naming ENCODER_WEIGHTS: a file holding other objects is
    never unpickled in full (it could run code)."""
    plain_dict = "save the encoder's weights with torch.save(model.encoder.state_dict(), path) or as .safetensors"
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            state_dict = load_file(str(path))
        elif not zipfile.is_zipfile(path):
            raise CheckpointError(f"ENCODER_WEIGHTS {path}: not a readable weights file (neither written by "
                                  f"torch.save nor .safetensors); {plain_dict}")
        else:
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except pickle.UnpicklingError:
        raise CheckpointError(f"ENCODER_WEIGHTS {path}: not a plain state dict: it holds objects other than tensors "
                              f"and plain Python types, which are not loaded (they could run code); {plain_dict}") from None
    except Exception as error:  # not a torch or safetensors file, truncated, ...
        raise CheckpointError(f"ENCODER_WEIGHTS {path}: not a readable weights file ({type(error).__name__}: "
                              f"{str(error).splitlines()[0] if str(error) else ''}); {plain_dict}") from None
    if isinstance(state_dict, dict) and isinstance(state_dict.get("state_dict"), dict):
        state_dict = state_dict["state_dict"]
    if not isinstance(state_dict, dict) or not state_dict or \
            not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state_dict.items()):
        raise CheckpointError(f"ENCODER_WEIGHTS {path}: not a state dict of named tensors (found "
                              f"{type(state_dict).__name__}); {plain_dict}")
    return state_dict
