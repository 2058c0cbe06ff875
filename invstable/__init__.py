"""invstable: provably stable learned reconstructions for y = A x + noise."""

from . import baselines as baselines
from . import data as data
from . import models as models
from . import nn as nn
from . import operators as operators
from ._warnings import ConvergenceWarning as ConvergenceWarning
from .baselines import Tikhonov as Tikhonov
from .baselines import TotalVariation as TotalVariation
from .baselines import choose_alpha as choose_alpha
from .baselines import fbp as fbp
from .baselines import tikhonov as tikhonov
from .baselines import tv as tv
from .evaluation import evaluate as evaluate
from .models import UnrolledInverse as UnrolledInverse
from .models import VariationalInverse as VariationalInverse
from .models import list_models as list_models
from .models import load_model as load_model
from .operators import as_operator as as_operator
from .operators import check_operator as check_operator

from ._version import __version__ as __version__
