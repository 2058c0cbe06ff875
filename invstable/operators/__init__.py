"""Forward operators ``A`` of ``y = A x + noise``: deepinv ``LinearPhysics`` with exact adjoints and norm bounds."""

from ._base import Operator as Operator
from ._blur import Blur as Blur
from ._blur import gaussian_kernel as gaussian_kernel
from ._check import AdjointMismatchError as AdjointMismatchError
from ._check import OperatorReport as OperatorReport
from ._check import check_operator as check_operator
from ._check import norm_bound as norm_bound
from ._ct import ParallelBeamCT as ParallelBeamCT
from ._fan import FanBeamCT as FanBeamCT
from ._gradient import Gradient as Gradient
from ._registry import available_operators as available_operators
from ._registry import config_summary as config_summary
from ._registry import make_operator as make_operator
from ._registry import operator_example as operator_example
from ._registry import operator_from_config as operator_from_config
from ._registry import register_operator as register_operator
from ._wrap import CallableOperator as CallableOperator
from ._wrap import MatrixOperator as MatrixOperator
from ._wrap import as_operator as as_operator
