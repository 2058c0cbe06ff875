"""The protocol tasks of PROTOCOLS.md (CT-30, CT-180, Blur-G2, and CT-30 at low dose): operator, noise and fixed
splits."""

from __future__ import annotations

from dataclasses import dataclass, field

from ._images import TEST_IMAGES, TRAIN_IMAGES, ImageCrops
from ._paired import Noise, PairedDataset
from ._phantoms import EllipsePhantoms, SheppLogan
from ._random import check_seed
from ._sources import Concat

SPLITS = ("train", "validation", "test")
#: Seeds of the splits. Validation and test seeds are reserved: a training stream never uses them.
SPLIT_SEEDS = {"train": 0, "validation": 1, "test": 2018}
DEFAULT_TRAIN_COUNT = 10_000
IMAGE_SIZE = 128
#: Low-dose CT-30: photons per detector bin of an unattenuated ray (LoDoPaB-CT's N0) and the attenuation that one
#: unit of the normalised sinogram stands for: the transmission of a ray is exp(-2 (A x)_j), so that the densest ray
#: of a random-ellipse phantom keeps a few to a few tens of percent of its photons (docs/data.md gives the measured
#: range and the resulting noise level; tests/test_lowdose.py checks them).
LOW_DOSE_PHOTONS = 4096
LOW_DOSE_ATTENUATION = 2.0


@dataclass(frozen=True)
class _Spec:
    operator: dict  # {"name", "params"} for invstable.operators.make_operator
    noise: Noise
    kind: str  # "ct" or "blur"
    description: str


TASKS = {
    "ct-30": _Spec({"name": "ct", "params": {"image_size": IMAGE_SIZE, "angles": 30}}, Noise(0.05, relative=True),
                   "ct", "sparse-view parallel-beam CT, 30 angles, noise std 5 % of mean |A x| per sample"),
    "ct-180": _Spec({"name": "ct", "params": {"image_size": IMAGE_SIZE, "angles": 180}}, Noise(0.01, relative=True),
                    "ct", "parallel-beam CT, 180 angles, noise std 1 % of mean |A x| per sample"),
    "ct-30-lowdose": _Spec({"name": "ct", "params": {"image_size": IMAGE_SIZE, "angles": 30}},
                           Noise(kind="log-poisson", photons=LOW_DOSE_PHOTONS, attenuation=LOW_DOSE_ATTENUATION),
                           "ct", f"CT-30 at low dose: log-Poisson noise, {LOW_DOSE_PHOTONS} photons per detector bin, "
                                 f"attenuation {LOW_DOSE_ATTENUATION:g}"),
    "blur-g2": _Spec({"name": "blur", "params": {"image_size": IMAGE_SIZE, "sigma": 2.0}}, Noise(0.01),
                     "blur", "Gaussian deblurring (sigma 2 px, circular boundary), noise std 0.01"),
}


@dataclass(frozen=True, eq=False)
class Task:
    """A protocol task: the operator, the noise rule and the three splits.

    Build one with :func:`task`. ``train``, ``validation`` and ``test`` are the default
    sources; :meth:`source` gives a training source of another size or seed, and
    :meth:`pairs` the matching on-the-fly :class:`PairedDataset`.

    Attributes
    ----------
    name : str
        ``"ct-30"``, ``"ct-30-lowdose"``, ``"ct-180"`` or ``"blur-g2"``.
    operator : invstable.operators.Operator
        Built with ``make_operator`` from the protocol parameters.
    noise : Noise
        The noise rule.
    train, validation, test : Dataset
        The default sources (training: 10 000 images, seed 0).
    seeds : dict
        Seed of each split; the same seed drives the split's noise.
    """

    name: str
    description: str
    operator: object = field(repr=False)
    noise: Noise
    train: object
    validation: object
    test: object
    seeds: dict

    def source(self, split: str, *, count: int | None = None, seed: int | None = None):
        """The source of ``split``; only the training split takes another ``count`` or ``seed``.

        Raises
        ------
        ValueError
            For an unknown split, a count or seed on the fixed validation / test splits, or a
            training seed equal to a reserved (validation or test) seed.
        """
        _check_split(split)
        if split != "train":
            if count is not None or seed is not None:
                raise ValueError(f"the {split} split of {self.name} is fixed by the protocol; do not pass count or seed")
            return getattr(self, split)
        seed = self.seeds["train"] if seed is None else check_seed(seed)
        reserved = {self.seeds["validation"], self.seeds["test"]}
        if seed in reserved:
            raise ValueError(f"training seed {seed} is reserved for the validation / test splits {sorted(reserved)}; "
                             "pick another seed")
        return _source(TASKS[self.name], "train", DEFAULT_TRAIN_COUNT if count is None else count, seed)

    def pairs(self, split: str, *, count: int | None = None, seed: int | None = None,
              fixed_noise: bool = True) -> PairedDataset:
        """On-the-fly pairs (x, A x + noise) of ``split``; the noise seed is the split's seed."""
        source = self.source(split, count=count, seed=seed)
        noise_seed = self.seeds[split] if seed is None else seed
        return PairedDataset(source, self.operator, self.noise, seed=noise_seed, fixed_noise=fixed_noise)


def _check_split(split) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits are {SPLITS}")


def _source(spec: _Spec, split: str, count: int, seed: int):
    if spec.kind == "ct":
        if split == "test":
            return Concat(EllipsePhantoms(IMAGE_SIZE, count=100, seed=seed), SheppLogan(IMAGE_SIZE))
        return EllipsePhantoms(IMAGE_SIZE, count=count, seed=seed)
    if split == "test":
        return ImageCrops(TEST_IMAGES, size=IMAGE_SIZE, count=64, seed=seed, region="full")
    return ImageCrops(TRAIN_IMAGES, size=IMAGE_SIZE, count=count, seed=seed, region=split)


def task(name: str) -> Task:
    """The protocol task ``name`` of PROTOCOLS.md.

    Parameters
    ----------
    name : {"ct-30", "ct-30-lowdose", "ct-180", "blur-g2"}

    Returns
    -------
    Task

    Notes
    -----
    Splits (seeds: train 0, validation 1, test 2018):

    - CT-30 / CT-30-lowdose / CT-180: training = random-ellipse phantoms of seed 0 (10 000 by default, any
      number or another non-reserved seed through :meth:`Task.source`); validation = 100
      phantoms of seed 1; test = 100 phantoms of seed 2018 then the Shepp-Logan phantom at 128.
      CT-30-lowdose has the images, operator and splits of CT-30 and log-Poisson noise
      (``Noise(kind="log-poisson", photons=4096, attenuation=2.0)``, see :class:`Noise`).
    - Blur-G2: training = crops of :data:`TRAIN_IMAGES` from the left part of each image;
      validation = 64 crops of the same images from their right-most
      ``max(128, ceil(0.2 W))`` columns (no pixel shared with training); test = 64 crops of
      camera, moon and coins (in turn), seed 2018.

    Examples
    --------
    >>> from invstable.data import task
    >>> ct = task("ct-30")
    >>> len(ct.test), ct.noise
    (101, Noise(level=0.05, relative=True, kind='gaussian'))
    """
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid tasks are {sorted(TASKS)}")
    from ..operators import make_operator

    spec = TASKS[name]
    operator = make_operator(spec.operator["name"], **spec.operator["params"])
    s = SPLIT_SEEDS
    return Task(
        name=name, description=spec.description, operator=operator, noise=spec.noise,
        train=_source(spec, "train", DEFAULT_TRAIN_COUNT, s["train"]),
        validation=_source(spec, "validation", 100 if spec.kind == "ct" else 64, s["validation"]),
        test=_source(spec, "test", 0, s["test"]),
        seeds=dict(s),
    )
