"""Train PSPMixer, the MLP-Mixer student (patch embedding + Mixer blocks), on band-agnostic patches.

    python train_pspmixer.py
    python train_pspmixer.py EPOCHS=2 PATCH=32 HIDDEN=128
"""
from lib.cli import run
from lib.config import load_constants
from lib.train.engine import train

# model
PATCH = 16                   # patch embedding kernel = stride; tokens = (IMAGE_SIZE / PATCH)^2
HIDDEN = 48                  # channels per token
DEPTH = 3                    # Mixer blocks
TOKENS_MLP = None            # token-mixing MLP width (None: HIDDEN)
CHANNELS_MLP = None          # channel-mixing MLP width (None: 2 * HIDDEN)
REFINE = 0                   # full-resolution refinement width (0: off, logits limited to the PATCH grid; e.g. 16)
MIXER_ACTIVATION = "gelu"    # "gelu" or "relu" (relu + MIXER_NORM="batch": the int8-friendly student)
MIXER_NORM = "layer"         # "layer" or "batch" (batch norms fold into the next layer at ONNX export)
# data
DATA_FORMAT = "bands"        # "bands" (02_kfold layout) or "kompsat5" (list files of HH GeoTIFFs)
DATA_ROOT = "02_kfold"       # or one fold, e.g. "02_kfold/fold_1"
TRAIN_LIST = "train.txt"     # kompsat5 only: list files relative to DATA_ROOT
VAL_LIST = "val.txt"
TRAIN_BANDS = ("VV", "VH", "B2", "B3", "B4", "NDVI", "NDWI")  # one drawn at random per sample
VAL_BANDS = ("VV", "VH")     # every validation patch is scored in each of these
INPUT_BANDS = None           # None: one band per sample (band-agnostic, published); "VV+VH": both as channels
IMAGE_SIZE = 256
NORMALIZATION = "sar"        # Sentinel-1 dB ranges: "sar" (keep the water contrast) or "published" (-22.2..0 dB)
SAR_OFFSET_DB = 0.0          # 0: RandomBrightnessContrast (published); > 0: SarJitter, +-this dB per sample
# optimization
EPOCHS = 40
BATCH_SIZE = 32              # per process under torchrun
LR = 5e-4
WEIGHT_DECAY = 1e-4
WARMUP_EPOCHS = 3
PLATEAU_PATIENCE = 10        # ReduceLROnPlateau on validation loss
PLATEAU_FACTOR = 0.5
PATIENCE = 20                # early stopping on mean validation IoU
SEED = 42
INIT_CHECKPOINT = None       # a checkpoint of the same model to start from (fine-tuning; weights only)
# loss: Focal Tversky
FTL_ALPHA = 0.30             # weight of false positives
FTL_BETA = 0.70              # weight of false negatives
FTL_GAMMA = 0.75             # focal exponent; 1.0 is plain Tversky (the published code)
BCE_WEIGHT = 0.5             # + this x binary cross-entropy; 0: Focal Tversky alone (published), with which PSPMixer
                             # (no BatchNorm) never leaves "all water" (docs/distillation-methods.md#students-that-learn-alone)
# system
DEVICE = "auto"              # "auto", "cpu", "cuda", "cuda:1"
PRECISION = "auto"           # "auto": bf16 on CUDA and on CPUs with native bf16, else fp32; "fp32", "bf16", "fp16"
CHANNELS_LAST = "auto"       # "auto" (on): channels_last memory format, faster convolutions; 0 for the plain layout
COMPILE = "auto"             # "auto" (off): 1 runs torch.compile, which pays on long runs (minutes to compile)
NUM_WORKERS = "auto"         # DataLoader workers, never more than the machine's cores
PRELOAD = "auto"             # keep the decoded dataset in memory when it fits
OUTPUT_DIR = "runs/pspmixer"
RESUME = False               # continue from OUTPUT_DIR/last.pt
OVERWRITE = False            # replace the run already in OUTPUT_DIR (without it, or RESUME, refused)


def main():
    c = load_constants(globals())
    train(c, "PSPMixer", {"image_size": c["IMAGE_SIZE"], "patch": c["PATCH"], "hidden": c["HIDDEN"], "depth": c["DEPTH"],
                        "tokens_mlp": c["TOKENS_MLP"], "channels_mlp": c["CHANNELS_MLP"], "refine": c["REFINE"],
                        "activation": c["MIXER_ACTIVATION"], "norm": c["MIXER_NORM"]})


if __name__ == "__main__":
    run(main)
