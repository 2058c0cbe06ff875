"""Classical reconstructions every learned model is compared with: FBP, Tikhonov, TV."""

from ._alpha import choose_alpha as choose_alpha
from ._fbp import fbp as fbp
from ._tikhonov import SolveInfo as SolveInfo
from ._tikhonov import Tikhonov as Tikhonov
from ._tikhonov import tikhonov as tikhonov
from ._tv import TotalVariation as TotalVariation
from ._tv import TVSolveInfo as TVSolveInfo
from ._tv import tv as tv
