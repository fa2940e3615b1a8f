"""Train the Unet teacher (segmentation-models-pytorch, MobileNetV2 encoder) on band-agnostic patches.

    python train_unet.py
    python train_unet.py EPOCHS=2 DATA_ROOT=02_kfold/fold_1
"""
from lib.cli import run
from lib.config import load_constants
from lib.train.engine import train

# model
ENCODER_NAME = "mobilenet_v2"
ENCODER_DEPTH = 5
ENCODER_WEIGHTS = "imagenet" # "imagenet", None, or a path to a local encoder state-dict file
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
BCE_WEIGHT = 0.0             # + this x binary cross-entropy; 0: Focal Tversky alone (published; docs/real-sar.md)
# system
DEVICE = "auto"              # "auto", "cpu", "cuda", "cuda:1"
PRECISION = "auto"           # "auto": bf16 on CUDA and on CPUs with native bf16, else fp32; "fp32", "bf16", "fp16"
CHANNELS_LAST = "auto"       # "auto" (on): channels_last memory format, faster convolutions; 0 for the plain layout
COMPILE = "auto"             # "auto" (off): 1 runs torch.compile, which pays on long runs (minutes to compile)
NUM_WORKERS = "auto"         # DataLoader workers, never more than the machine's cores
PRELOAD = "auto"             # keep the decoded dataset in memory when it fits
OUTPUT_DIR = "runs/unet"
RESUME = False               # continue from OUTPUT_DIR/last.pt
OVERWRITE = False            # replace the run already in OUTPUT_DIR (without it, or RESUME, refused)


def main():
    c = load_constants(globals())
    train(c, "Unet", {"encoder_name": c["ENCODER_NAME"], "encoder_depth": c["ENCODER_DEPTH"]})


if __name__ == "__main__":
    run(main)
