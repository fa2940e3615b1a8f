"""Train the classic U-Net (Ronneberger et al. 2015; lib/models/unet_classic.py) for water
segmentation, on KOMPSAT-5 HH scenes (DATA_FORMAT=kompsat5) or the band-agnostic patches.

    python train_unet_classic.py                      # on the band-agnostic demo data (02_kfold)
    python make_kompsat5_demo.py && python train_unet_classic.py DATA_FORMAT=kompsat5 DATA_ROOT=data_k5
    python train_unet_classic.py DATA_FORMAT=kompsat5 DATA_ROOT=data TRAIN_LIST=train_full/train.txt VAL_LIST=train_full/val.txt
"""
from lib.cli import run
from lib.config import load_constants
from lib.train.engine import train

# model (UNetClassic)
BASE_CHANNELS = 64           # stage widths 64-128-256-512-1024, scaled by BASE_CHANNELS / 64
BATCH_NORM = True            # BN after every conv (the paper predates BN)
DROPOUT = 0.5                # on the bottom stage, as in the paper
# data
DATA_FORMAT = "bands"        # "bands" (02_kfold layout) or "kompsat5" (list files of HH GeoTIFFs, lib/data/kompsat5/)
DATA_ROOT = "02_kfold"       # kompsat5: the folder the list files' paths start from, e.g. "data_k5"
TRAIN_LIST = "train_full/train.txt"  # kompsat5 only: list files relative to DATA_ROOT (the published layout)
VAL_LIST = "train_full/val.txt"
TRAIN_BANDS = ("VV", "VH", "B2", "B3", "B4", "NDVI", "NDWI")  # bands only (one drawn per sample); kompsat5: HH
VAL_BANDS = ("VV", "VH")     # bands only; kompsat5 scores HH
IMAGE_SIZE = 256             # training crop side; kompsat5 validates on whole (1024 x 1024) scenes
NORMALIZATION = "sar"        # Sentinel-1 dB ranges: "sar" (keep the water contrast) or "published" (-22.2..0 dB)
CALIBRATION_DB = 0.0         # kompsat5: input dB = 20*log10(DN) + CALIBRATION_DB, clipped to BAND_RANGES["HH"]
K5_TRAIN_CROP = "random"     # kompsat5: "random" (a random crop per access) or "tiles" (every tile once per epoch)
K5_CROPS_PER_SCENE = 16      # kompsat5, "random": crops per scene per epoch (16 x 256^2 = one 1024^2 scene)
# optimization
EPOCHS = 40
BATCH_SIZE = 16              # per process under torchrun. The published runs fed a few whole 1024^2
                             # scenes per batch; 16 crops of 256^2 hold the pixels of one scene
LR = 5e-4
WEIGHT_DECAY = 1e-4
WARMUP_EPOCHS = 3
PLATEAU_PATIENCE = 10        # ReduceLROnPlateau on validation loss
PLATEAU_FACTOR = 0.5
PATIENCE = 20                # early stopping on mean validation IoU
SEED = 42
# loss: Focal Tversky
FTL_ALPHA = 0.30             # weight of false positives
FTL_BETA = 0.70              # weight of false negatives
FTL_GAMMA = 0.75             # focal exponent; 1.0 is plain Tversky
# system
DEVICE = "auto"              # "auto", "cpu", "cuda", "cuda:1"
PRECISION = "auto"           # "auto": bf16 on CUDA and on CPUs with native bf16, else fp32; "fp32", "bf16", "fp16"
CHANNELS_LAST = "auto"       # "auto" (on): channels_last memory format, faster convolutions; 0 for the plain layout
COMPILE = "auto"             # "auto" (off): 1 runs torch.compile, which pays on long runs (minutes to compile)
NUM_WORKERS = "auto"         # DataLoader workers, never more than the machine's cores
PRELOAD = "auto"             # keep the decoded dataset in memory when it fits
OUTPUT_DIR = "runs/unet_classic"
RESUME = False               # continue from OUTPUT_DIR/last.pt
OVERWRITE = False            # replace the run already in OUTPUT_DIR (without it, or RESUME, refused)


def main():
    c = load_constants(globals())
    train(c, "UNet_Classic", {"base_channels": c["BASE_CHANNELS"], "batch_norm": c["BATCH_NORM"],
                              "dropout": c["DROPOUT"]})


if __name__ == "__main__":
    run(main)
