"""Distil a trained teacher (default: the PSPNet of train_pspnet.py) into a small student (default: PSPMixer).

    python train_pspnet.py                      # the teacher first: runs/pspnet/best.pt
    python kd.py                                # runs/kd_pspmixer
    python kd.py EPOCHS=3 KD_TEMPERATURE=2
    python kd.py STUDENT=UnetLight STUDENT_ARGS="{'width': 8}"
    python kd.py KD_FEATURE=1 KD_CWD=1 KD_AFFINITY=1  # added methods (docs/distillation-methods.md)
    python kd.py KD_TEMPERATURE=1,2,4,8             # a sweep: one student per value, one table
    python kd.py REFINE=8 MIXER_ACTIVATION=relu MIXER_NORM=batch  # recommended: draws the shore at full
                                                    # resolution, int8 throughout (docs/distillation-methods.md)

Loss: KD_ALPHA * T^2 * BCE(student / T, sigmoid(teacher / T)) + KD_BETA * (Focal Tversky + BCE_WEIGHT * BCE), over valid pixels,
plus KD_FEATURE * feature + KD_CWD * channel-wise + KD_AFFINITY * pairwise-affinity terms (each 0 = off).
The teacher is rebuilt from TEACHER_CHECKPOINT alone and frozen; its data settings (bands, normalization,
image size) must equal the student's. At the end, a table compares the teacher, the distilled student and
the same student trained alone when such a run exists under runs/.
"""
import sys

from lib.cli import run
from lib.config import load_constants
from lib_kd.training_kd import distill, distill_sweep, sweep_values

# distillation
TEACHER_CHECKPOINT = "runs/pspnet/best.pt"  # any trained checkpoint (PSPNet, Unet, ...)
STUDENT = "PSPMixer"         # any architecture of lib.models.factory: PSPMixer, UnetLight, MLP_256, ...
STUDENT_ARGS = None          # dict of student keyword arguments; None: the PSPMixer constants below
                             # for PSPMixer, the architecture's own defaults otherwise (applied on top if given)
KD_TEMPERATURE = 4.0         # T: softens both logit maps; the KD term is scaled by T^2
KD_ALPHA = 0.5               # weight of the KD term
KD_BETA = 0.5                # weight of the supervised (Focal Tversky) term
# added distillation methods (docs/distillation-methods.md): each a weight, 0 = off, combinable
KD_FEATURE = 0.0             # feature distillation: learned 1x1-conv adapter, student map -> teacher map
KD_FEATURE_LOSS = "mse"      # "mse" (relative to the teacher map's mean square) or "cosine"
KD_FEATURE_STUDENT_LAYER = None  # module whose output is the map ("head:input": the input of module head);
KD_FEATURE_TEACHER_LAYER = None  # None: the architecture's default (lib_kd/features.py DEFAULT_LAYERS)
KD_CWD = 0.0                 # channel-wise distillation of the logits: softmax over positions at KD_TEMPERATURE, KL
KD_AFFINITY = 0.0            # pairwise affinity (structured KD) between the feature maps' positions
KD_AFFINITY_GRID = 16        # the maps are average-pooled to at most this many cells a side for the affinity
# student (PSPMixer)
PATCH = 32                   # patch embedding kernel = stride; tokens = (IMAGE_SIZE / PATCH)^2
HIDDEN = 128                 # channels per token
DEPTH = 3                    # Mixer blocks
TOKENS_MLP = 64              # token-mixing MLP width
CHANNELS_MLP = 256           # channel-mixing MLP width
REFINE = 0                   # full-resolution refinement width (0: off, logits limited to the PATCH grid; e.g. 16)
MIXER_ACTIVATION = "gelu"    # "gelu" or "relu" (relu + MIXER_NORM="batch": the int8-friendly student)
MIXER_NORM = "layer"         # "layer" or "batch" (batch norms fold into the next layer at ONNX export)
# data (must match what the teacher was trained with; None: as recorded in TEACHER_CHECKPOINT)
DATA_FORMAT = "bands"        # "bands" (02_kfold layout) or "kompsat5" (list files of HH GeoTIFFs)
DATA_ROOT = "02_kfold"       # or one fold, e.g. "02_kfold/fold_1"
TRAIN_LIST = "train.txt"     # kompsat5 only: list files relative to DATA_ROOT
VAL_LIST = "val.txt"
TRAIN_BANDS = None           # one drawn at random per sample; None: the teacher's, e.g. VV,VH,B2,B3,B4,NDVI,NDWI
VAL_BANDS = None             # every validation patch is scored in each; None: the teacher's, e.g. VV,VH
IMAGE_SIZE = None            # None: the teacher's, e.g. 256
NORMALIZATION = None         # None: the teacher's; "sar" or "published" (lib/data/bands.py NORMALIZATIONS)
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
# loss: Focal Tversky (the supervised term)
FTL_ALPHA = 0.30             # weight of false positives
FTL_BETA = 0.70              # weight of false negatives
FTL_GAMMA = 0.75             # focal exponent; 1.0 is plain Tversky (the published code)
BCE_WEIGHT = 0.0             # + this x binary cross-entropy; 0: Focal Tversky alone (published; docs/real-sar.md)
# system
DEVICE = "auto"              # "auto", "cpu", "cuda", "cuda:1"
PRECISION = "auto"           # "auto": bf16 on CUDA and on CPUs with native bf16, else fp32; "fp32", "bf16", "fp16"
                             # (the teacher runs in the same)
CHANNELS_LAST = "auto"       # "auto" (on): channels_last memory format, faster convolutions; 0 for the plain layout
COMPILE = "auto"             # "auto" (off): 1 runs torch.compile, which pays on long runs (minutes to compile)
NUM_WORKERS = "auto"         # DataLoader workers, never more than the machine's cores
PRELOAD = "auto"             # keep the decoded dataset in memory when it fits
OUTPUT_DIR = None            # None: runs/kd_<student lowercased>, e.g. runs/kd_pspmixer
RESUME = False               # continue from OUTPUT_DIR/last.pt (with the same teacher)
OVERWRITE = False            # replace the run already in OUTPUT_DIR (without it, or RESUME, refused)
COST_TABLE = True            # the final table gains GFLOPs per patch and CPU latency at batch 1 and 32 (seconds)


def main():
    argv, temperatures = sweep_values(sys.argv[1:], "KD_TEMPERATURE")  # KD_TEMPERATURE=1,2,4,8: one run each
    c = load_constants(globals(), argv)
    if temperatures:
        distill_sweep(c, "KD_TEMPERATURE", temperatures)
    else:
        distill(c)


if __name__ == "__main__":
    run(main)
