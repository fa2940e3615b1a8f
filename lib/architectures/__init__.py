"""Architectures of the repository; lib/model.py registers them in the model factory."""
from lib.architectures.deepunet import DeepUNet
from lib.architectures.fcn import FCN8s
from lib.architectures.hrnet import HRNetV2Seg
from lib.architectures.unet_classic import UNetClassic
