"""The recipe schema: one dataclass per section, one docstring per field (the sections of
the three networks' training, calibrator.*, refiner.* and discriminator.*, are in
:mod:`carcli.recipe.schema_training`).

Keys of the public interface (docs/guide.md) keep their names; everything else has a default,
so a recipe only states what differs. `carseg show RECIPE` prints the fully resolved recipe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from carcli.recipe.schema_training import CalibratorConfig, DiscriminatorConfig, RefinerConfig

DataSource = Literal[
    "prepared", "synthetic", "lidc-png", "lidc-phiseg", "lidc-pickle", "cityscapes", "regression"
]
Split = Literal["train", "val", "test"]


@dataclass
class SplitSizes:
    """Sizes of the splits a generated source makes."""

    num_train: int = 1500
    """Number of training examples (images or points)."""
    num_val: int = 200
    """Number of validation examples."""
    num_test: int = 300
    """Number of test examples."""


@dataclass
class SyntheticConfig(SplitSizes):
    """Options of the synthetic source, `data.synthetic.*` (and the split sizes)."""

    size: int = 32
    """Image height and width in pixels (a multiple of 16)."""
    channels: int = 3
    """Image channels."""
    num_classes: int = 3
    """Number of classes, background included (>= 3)."""


@dataclass
class RegressionDataConfig(SplitSizes):
    """Options of the 1D bimodal regression source, `data.regression.*` (and the split sizes)."""

    pi: float = 0.9
    """Probability of the upper mode."""
    sigma: float = 0.03
    """Standard deviation of the additive noise."""


@dataclass
class DataConfig:
    dir: str = "data/toy"
    """Directory holding the prepared dataset: train.h5, val.h5, test.h5."""
    source: DataSource = "prepared"
    """What `prepare` builds the dataset from; `prepared` means the files already exist."""
    raw: str | None = None
    """Where `prepare` reads the raw public files from (real datasets)."""
    allow_pickle: bool = False
    """Explicit opt-in to read the pickle format (unpickling can run code)."""
    blackbox_dir: str | None = None
    """Folder of per-image black-box predictions to import (optional)."""
    lesion_only: bool = False
    """LIDC sources: keep only training images in which at least one annotator marks a
    lesion (the paper's lesion-centred training crops); val and test are kept whole."""
    flip: bool = False
    """Random horizontal flips of training images (both training stages)."""
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    """The synthetic source (`data.source: synthetic`)."""
    regression: RegressionDataConfig = field(default_factory=RegressionDataConfig)
    """The 1D bimodal regression source (`data.source: regression`)."""


@dataclass
class SampleConfig:
    split: Split = "test"
    """Which split to sample."""
    num_samples: int = 100
    """Samples drawn per image."""
    batch_size: int = 8
    """Images per forward pass."""
    chunk_size: int = 64
    """Images per resumable chunk of the bank."""
    independent_regions: bool = False
    """Beyond the paper: recombine G's samples of each image so that F's separate uncertain
    regions (8-connected, top class probability below ``region_threshold``) take their answers
    from different samples, i.e. are drawn independently; every per-pixel frequency stays
    G's. For data whose separate ambiguous regions are independent (not the modified
    Cityscapes, whose flips couple every region of a class)."""
    region_coupling: Literal["none", "learned"] = "none"
    """Beyond the paper: ``learned`` recombines G's samples of each image by the region
    coupling head trained with G (``refiner.coupling_steps``): F's separate uncertain regions
    that the head finds co-varying (learned from the annotations) keep G's joint answer,
    groups that it finds independent are drawn independently; every per-pixel frequency
    stays G's. ``none``: G's samples as drawn. Not together with ``independent_regions``."""
    region_threshold: float = 0.9
    """F's top class probability below which a pixel is uncertain, for ``independent_regions``
    (``region_coupling`` uses the value the coupling head was trained with)."""
    region_link: int = 1
    """For ``independent_regions``: the uncertain mask is grown by this many pixels before
    its connected regions are taken, so uncertain parts up to twice as far apart (an object
    and a detached ring) count as one region, and each region takes a margin of certain
    pixels with it."""
    region_pool: int = 1
    """With ``region_coupling: learned``: G draws this many times ``num_samples`` per image
    and each group picks ``num_samples`` of them by systematic resampling over its answers,
    so each answer's count is within one of its share (1: every draw used once)."""
    pool_critic: float = 0.0
    """With ``region_pool`` > 1 (0: off): the draws are weighted by exp(this x D's logit)
    before the groups pick from them (1: D's estimate of the density ratio of labels to G's
    draws, as in discriminator rejection sampling, Azadi et al. 2019); needs D's weights
    (``refiner/discriminator.safetensors``)."""
    pool_target: Literal["pool", "calibrator"] = "pool"
    """With ``region_pool`` > 1: what the groups' picks are tilted to (an exponential tilt of
    the draws' weights, the closest to them in KL). ``pool``: each group's mean class
    fractions stay the pool's (with ``pool_critic``, D then decides which draws of an answer
    are kept, not how often it comes). ``calibrator``: each region's mean class fractions over
    its uncertain pixels become F's mean probabilities there, so how often each answer comes
    is F's (the calibration loss's aim, met at sampling)."""


@dataclass
class EvaluateConfig:
    split: Split = "test"
    """Which split to evaluate."""
    ged_counts: list[int] = field(default_factory=lambda: [16, 50, 100])
    """Sample counts at which GED is reported (each only where the bank holds that many)."""
    hm_iou_samples: int = 16
    """Samples used by HM-IoU."""
    convention: str = "carseg"
    """Whose published evaluation rules GED, HM-IoU and diversity follow: carseg, car, mose,
    phiseg, ccdm, flowssn; a comma-separated list or `all` reports each side by side (the
    first is the primary, written at the top level of metrics.json)."""
    chunk_size: int = 64
    """Images read per chunk."""


@dataclass
class DistributedConfig:
    backend: Literal["auto", "nccl", "gloo"] = "auto"
    """Process-group backend under torchrun: auto = nccl on CUDA, gloo on CPU. Ignored by a
    single process."""
    timeout_s: float = 1800.0
    """Seconds a rank waits at a collective (barrier, gradient all-reduce) for the others
    before it fails, so an error on one rank cannot hang the rest forever."""
    sync_batchnorm: bool = False
    """Batch-norm statistics over all ranks (SyncBatchNorm); CUDA with several ranks only,
    ignored with a note on CPU."""


@dataclass
class SpeedConfig:
    amp: Literal["off", "bf16"] = "off"
    """Mixed precision: bf16 runs the forward passes (training and sampling) under
    torch.autocast(bfloat16) on CUDA, losses in float32; ignored with a note on CPU."""
    channels_last: bool = False
    """Convolution weights and inputs in channels-last (NHWC) memory order (faster on
    tensor-core GPUs; harmless on CPU)."""
    compile: bool = False
    """torch.compile the forward passes of F and G (minutes of compilation first; D is not
    compiled: R1 and the shared D forward differentiate through it twice)."""
    prefetch: int = 0
    """Training batches made ahead by a background thread (0: none). The random stream is the
    same as without it (a resumed run continues it exactly); on CUDA the batches go to pinned
    memory and are copied with non_blocking, overlapping the step."""
    fold_bn: bool = False
    """Sampling and prediction only: fold F's and G's BatchNorm layers into the convolutions
    before them (the same network; floating-point results differ in the last bits, so a
    sample's argmax can flip where two classes tie)."""
    cpu_bf16: bool = False
    """Sampling and prediction on CPU only: run F and G under bf16 autocast where oneDNN has
    native bf16 (AMX or AVX512-BF16; ignored with a note elsewhere). Lossy:
    docs/benchmarks.md states the samples' argmax agreement with float32."""
    train_bf16: bool = False
    """Training (both stages): the forward passes of F, G and D under bf16 autocast, with
    float32 master weights, losses (the calibration term included), gradients' accumulation
    and optimiser steps. On CUDA where bf16 is supported, and on a CPU with native bf16
    (AMX or AVX512-BF16); elsewhere float32, with a note. Lossy: off in every recipe until
    full cascade runs show quality held."""
    optimizer: Literal["default", "foreach", "fused"] = "default"
    """Adam's implementation: default (torch's choice: the per-parameter loop on CPU,
    foreach on CUDA), foreach (multi-tensor kernels; the same arithmetic, bit-identical
    weights) or fused (one kernel; rounding differs in the last bits)."""
    sample_chunk: int = 0
    """Sampling and prediction: samples per image in one pass of G's decoder (0: as many as
    fit 2^25 logits). Small chunks keep the decoder's activations in cache
    (docs/benchmarks.md); the convolutions' batch size can change their float rounding, so a chunk
    size other than 0 is not bit-for-bit the draws of 0."""


@dataclass
class Recipe:
    name: str = "run"
    """Run name."""
    seed: int = 0
    """Integer seed for everything random."""
    run_dir: str = "runs/run"
    """Directory of this run's artefacts (relative to the working directory)."""
    device: str = "auto"
    """auto (CUDA when present), cpu, cuda or cuda:N; under torchrun auto and cuda mean
    cuda:LOCAL_RANK."""
    threads: int = 0
    """CPU threads for torch (0: torch's default)."""
    data: DataConfig = field(default_factory=DataConfig)
    """The dataset."""
    calibrator: CalibratorConfig = field(default_factory=CalibratorConfig)
    """F, the calibration network."""
    refiner: RefinerConfig = field(default_factory=RefinerConfig)
    """G, the refinement network."""
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    """D, the discriminator."""
    sample: SampleConfig = field(default_factory=SampleConfig)
    """The sample stage."""
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    """The evaluate stage."""
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    """Multi-process runs under torchrun (see docs/guide.md, "Scaling out")."""
    speed: SpeedConfig = field(default_factory=SpeedConfig)
    """Device speed options; all off by default."""
