"""The recipe schema: one dataclass per section, one docstring per field.

Keys of the public interface (docs/guide.md) keep their names; everything else has a default,
so a recipe only states what differs. `carseg show RECIPE` prints the fully resolved recipe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

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
class TrainingSchedule:
    """The optimiser and loop keys that calibrator.* and refiner.* share, declared once (in
    refiner.*: G's and D's optimisers; D's learning rate is discriminator.lr). They come last in
    both sections (refiner.* then adds its coupling head's keys)."""

    lr: float = 2e-4
    """Adam learning rate (refiner: G's)."""
    betas: list[float] = field(default_factory=lambda: [0.5, 0.99])
    """Adam betas (paper: 0.5, 0.99; refiner: G's and D's)."""
    weight_decay: float = 5e-4
    """Adam (coupled L2) weight decay (refiner: G's and D's)."""
    lr_milestones: list[int] = field(default_factory=list)
    """Steps at which the learning rates are multiplied by lr_gamma."""
    lr_gamma: float = 0.5
    """Learning-rate factor at each milestone."""
    checkpoint_every: int = 500
    """Steps between resumable checkpoints (the last step always writes one)."""
    checkpoint_minutes: float = 30.0
    """Minutes between resumable checkpoints besides checkpoint_every, so a long run never
    loses more than that (0: off). SIGINT / SIGTERM also write one before stopping."""
    val_every: int = 250
    """Steps between validations on a fixed subset of the val split (0: never)."""
    val_size: int = 64
    """Images in the fixed validation subset."""
    on_nonfinite: Literal["stop", "skip"] = "stop"
    """A step whose loss or gradients are NaN or infinite: `stop` ends the stage with an error
    naming the last good checkpoint; `skip` drops that update (the weights stay as they were),
    marks the step `skipped` in metrics.jsonl and counts it in `skipped_steps` (a skipped
    step still counts towards `steps`)."""


@dataclass
class _CalibratorKeys:
    arch: str = "segnet"
    """Registry name of F: segnet, unet, convnet or mlp."""
    width: int | None = None
    """Base channel count (None: the architecture's default)."""
    depth: int | None = None
    """Encoder levels (None: the architecture's default)."""
    dropout: float = 0.1
    """Dropout probability inside F."""
    init_weights: str | None = None
    """Optional local safetensors file to initialise F from (matching parameter names)."""
    steps: int = 2000
    """Optimisation steps."""
    batch_size: int = 32
    """Images per optimisation step."""
    soft_targets: bool = False
    """Cross-entropy against the label distribution (all annotations, weighted by
    label_weight) instead of one drawn annotation per step: same expected loss, less noise."""


@dataclass
class CalibratorConfig(TrainingSchedule, _CalibratorKeys):
    """calibrator.*: F's own keys, then the shared :class:`TrainingSchedule`."""


@dataclass
class _RefinerKeys:
    arch: str = "unet"
    """Registry name of G: unet, car (the authors' light per-level layout) or mlp."""
    width: int | None = None
    """Base channel count (None: the architecture's default, 32)."""
    depth: int | None = None
    """Down/up blocks (None: the architecture's default, 4)."""
    dropout: float = 0.1
    """Dropout probability inside G."""
    noise: Literal["gaussian", "posterior"] = "gaussian"
    """Noise source: gaussian (the method: eps ~ N(0, I) drives the decoder) or posterior (the
    paper's latent-code / cVAE-GAN variant, appendix B.2.3: a probabilistic head on G's
    encoder gives q(z | x, F(x)) and codes z = mu + sigma * eps drive the decoder; unet only)."""
    kl_beta: float = 0.0
    """noise=posterior: weight beta of KL(q || N(0, I)) added to L_G (0: no prior, the paper's
    L_G + L_cal variant; the paper's cVAE-GAN comparison uses 0.1, 1, 10 with
    calibration_loss=none)."""
    joint_calibrator: bool = False
    """Also train F with its cross-entropy during train-refiner (the authors' code default),
    starting from calibrator/model.safetensors at G's learning rate and schedule; the jointly
    trained F is saved as refiner/calibrator.safetensors and `sample` uses it."""
    noise_dim: int = 8
    """Dimension of the noise vector epsilon."""
    noise_grid: int = 0
    """Beyond the paper (unet, gaussian noise; 0: off): G also draws a coarse g x g map of
    independent noise (2 channels per cell) added to its bottleneck, so separate regions can
    draw their answers independently instead of one global epsilon deciding them together."""
    noise_regions: int = 0
    """Beyond the paper (unet or car, gaussian noise; 0: off): region noise. The connected
    regions where F is uncertain (its top probability below ``region_threshold``) each get a
    code of their own, ``region_dim`` numbers drawn independently, held constant over the
    region and fed to every decoder level beside the global epsilon; up to this many regions
    per image (region r >= noise_regions reuses code r mod noise_regions). So independent
    ambiguous objects can be decided independently, and each one coherently."""
    region_dim: int = 4
    """noise_regions > 0: numbers in each region's code."""
    region_threshold: float = 0.9
    """noise_regions > 0: a pixel is uncertain when F's top class probability is below this."""
    region_levels: int = 0
    """noise_regions > 0: how many decoder levels, coarsest first, get the region codes (0: all,
    down to full resolution)."""
    residual_logits: bool = False
    """Add F's log-probabilities to G's output logits (a deviation from the paper, off by
    default as in the paper; the toy recipe turns it on; see docs/method.md)."""
    num_samples: int = 5
    """M: samples per input for the calibration loss."""
    calibration_loss: Literal["kl", "kl_forward", "ce", "none"] = "kl"
    """kl (the method: KL(G_bar || p)), kl_forward (KL(p || G_bar), mass-covering: keeps
    pulling answers that G has dropped; a deviation, see docs/method.md), ce (the paper's control),
    none (lambda = 0)."""
    w_adv: float = 10.0
    """Weight of the adversarial loss."""
    w_cal: float = 5.0
    """Weight of the calibration loss (lambda)."""
    w_entropy: float = 0.0
    """Weight of the mean per-pixel entropy of G's samples added to L_G (segmentation; 0: the
    paper). L_cal holds the samples' mean at F, this makes each sample crisp; see docs/method.md."""
    w_joint: float = 0.0
    """Weight of the joint calibration loss (beyond the paper; 0: off): KL between G's joint
    class distribution at pairs of ambiguous pixels (mean over the M samples of the products
    of their softmaxes) and the labels' (from the annotations and label_weight), so the
    frequencies of whole answers match, not only each pixel's. Segmentation; see docs/method.md."""
    w_set: float = 10.0
    """Weight of the set discriminator's adversarial loss (discriminator.set_size > 0)."""
    joint_pairs: int = 256
    """Pixel pairs per image for the joint calibration loss (drawn among ambiguous pixels)."""
    calibration_temperature: float = 0.0
    """0: L_cal compares the mean of the samples' softmax with F (the paper); T > 0: the mean of
    their one-hot answers (how often each answer comes), with the gradient of softmax(logits /
    T) (straight-through). calibration_loss kl only."""
    w_energy: float = 0.0
    """Weight of the energy score of G's M samples against the annotations (beyond the paper;
    0: off): a strictly proper score of the whole map's joint distribution."""
    joint_cross: float = 0.0
    """Share of the joint calibration loss's pairs whose second pixel is moved to another
    factor (an ambiguous pixel whose labels differ from the first's; 0: pairs uniform among
    ambiguous pixels, most of them inside one region)."""
    joint_temperature: float = 0.0
    """0: the joint calibration loss sees each sample's softmax; T > 0: it sees the samples'
    argmax answers, with the gradient of softmax(logits / T) (straight-through), so it still
    moves the answers once the samples are crisp."""
    joint_loss: Literal["kl", "sq"] = "kl"
    """Form of the joint calibration loss: kl (KL of G's M-sample joint to the labels') or sq
    (an unbiased estimate of their squared distance; no pull towards soft samples)."""
    steps: int = 2000
    """Optimisation steps."""
    batch_size: int = 32
    """Images per optimisation step."""


@dataclass
class RefinerConfig(TrainingSchedule, _RefinerKeys):
    """refiner.*: G's own keys, the shared :class:`TrainingSchedule`, then the region coupling
    head's keys."""

    coupling_steps: int = 0
    """Beyond the paper (0: off): after G, train the region coupling head for this many steps:
    for each pair of F's separate uncertain regions of a training image (found as
    ``sample.region_threshold`` / ``sample.region_link`` say), it learns from the annotations
    whether their answers go together. ``sample.region_coupling: learned`` uses it; written
    as ``refiner/coupling.safetensors``."""
    coupling_lr: float = 2.0e-3
    """Adam learning rate of the region coupling head."""


@dataclass
class DiscriminatorConfig:
    arch: str = "dcgan"
    """Registry name of D: dcgan, pixel or mlp."""
    width: int | None = None
    """Base channel count (None: the architecture's default)."""
    lr: float = 1e-5
    """Adam learning rate of D (paper: 1e-5)."""
    r1_weight: float = 10.0
    """Gamma of the zero-centred R1 gradient penalty on real data."""
    r1_every: int = 1
    """Lazy R1 (StyleGAN2, Karras et al. 2020): the penalty is computed on every k-th step
    (steps k, 2k, ... of the refiner loop, while D updates) with weight k * r1_weight, and
    not at all on the others (1: every D update, the paper). Saves R1's double backward on
    k - 1 of k D updates (the set discriminator keeps R1 on every update); changes the
    training numerics, so off in every recipe until full cascade runs show quality held."""
    n_on: int = 50
    """D cycle: steps during which D is updated."""
    n_off: int = 200
    """D cycle: steps during which D is frozen (G trains every step)."""
    max_accuracy: float | None = 0.85
    """Skip D's update while its accuracy on the current batch is at least this (None: never)."""
    set_size: int = 0
    """Beyond the paper (0: off): a second discriminator that sees k = set_size answers for
    the same image at once, packed along channels (PacGAN, Lin et al. 2018): k annotations
    drawn by label_weight against k of G's samples; it can see how answers vary together,
    which a one-sample D cannot. Its loss enters L_G with refiner.w_set; needs M >= k."""
    update: Literal["simultaneous", "alternating"] = "simultaneous"
    """simultaneous: G and D step on gradients from the same D forward (one D pass over the
    B*M fakes); alternating: D steps first, then G's adversarial loss sees the updated D
    (a second D pass; the authors' 1D regression code does this)."""


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
