"""The recipe's training sections: calibrator.* (F), refiner.* (G and its region coupling
head) and discriminator.* (D), with the optimiser and loop keys the first two share
(:class:`TrainingSchedule`); one docstring per field, as in :mod:`carcli.recipe.schema`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


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
    recalibrate: Literal["none", "class_bias", "vector_scaling"] = "none"
    """Beyond the paper. ``class_bias``: after training, one logit bias per class is fitted on
    the whole validation split by F's own soft cross-entropy (weights frozen) and added to F's
    last layer, so F's mean probability of each class there equals the labels' (a rare class
    under-fitted in a short schedule comes back up). ``vector_scaling``: one positive scale
    and one bias per class, a_k l_k + b_k, fitted the same way and folded into the last layer
    (also sharpens a class F leaves too soft). ``none``: F as trained. Segmentation with a
    segnet, unet or convnet F."""
    overfit_ratio: float = 0.0
    """Beyond the paper (0: off). After training, F's KL divergence from the labels on the
    validation split is compared with that on as many training images; above this ratio F has
    memorised its training labels (as with a few raters per image, whose average is a noisy
    target), and a second F is trained in calibrator/regularised/ with ``overfit_dropout``
    and ``overfit_weight_decay``. The F of the lower validation cross-entropy (after the
    refit, when ``recalibrate`` is on) becomes calibrator/model.safetensors. Segmentation."""
    overfit_dropout: float | list[float] = 0.1
    """overfit_ratio > 0: the regularised F's dropout (the paper's setting). A list trains one
    regularised F per value (calibrator/regularised/, regularised-2/, ...) and the lowest
    validation cross-entropy of all decides."""
    overfit_weight_decay: float = 5e-4
    """overfit_ratio > 0: the second F's Adam (coupled L2) weight decay (the paper's setting)."""

    def overfit_dropouts(self) -> list[float]:
        """``overfit_dropout`` as a list: one regularised F per value."""
        d = self.overfit_dropout
        return list(d) if isinstance(d, list) else [d]


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
    """noise_regions > 0 (and joint_pixels calibrator): a pixel is uncertain when F's top class
    probability is below this."""
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
    joint_pixels: Literal["labels", "calibrator"] = "labels"
    """Where the joint calibration loss draws its pairs. labels: pixels whose label
    distribution is not one class; calibrator: pixels where F's top class probability is
    below ``region_threshold``. With a few raters per image (LIDC's 4) where they happen to
    disagree is itself a draw, and pairs chosen by it bias the pairs' targets (their
    marginals towards 1/2); calibrator avoids that, but on three 4-rater dev sets it did not
    sample better (docs/results.md, "Four raters per image"), so labels stays the default."""
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
