"""Learned regularised inverses: unrolled models with certified Lipschitz bounds, their files, the shipped ones.

Every model is a :class:`deepinv.models.Reconstructor` (``model(y, physics)``); :class:`DenoiserBlock` puts a
deepinv denoiser in an unrolled model for comparisons (no certificate)."""

from ._io import ModelFileError as ModelFileError
from ._denoiser import DenoiserBlock as DenoiserBlock
from ._pretrained import PRETRAINED as PRETRAINED
from ._pretrained import format_info as format_info
from ._pretrained import list_models as list_models
from ._pretrained import load_model as load_model
from ._pretrained import model_info as model_info
from ._pretrained import recommended as recommended
from ._unrolled import FAMILIES as FAMILIES
from ._unrolled import UnrolledInverse as UnrolledInverse
from ._io import load_regularizer as load_regularizer
from ._io import save_regularizer as save_regularizer
from ._certificate import Certificate as Certificate
from ._variational import SolveInfo as SolveInfo
from ._variational import VariationalInverse as VariationalInverse
