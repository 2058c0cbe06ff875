"""Stable layers: discretised stable dynamical systems with certified Lipschitz bounds."""

from ._antisymmetric import AntisymmetricLayer as AntisymmetricLayer
from ._base import ACTIVATIONS as ACTIVATIONS
from ._dense import DenseNetwork as DenseNetwork
from ._gradient_flow import GradientFlowLayer as GradientFlowLayer
from ._hamiltonian import LeapfrogLayer as LeapfrogLayer
from ._hamiltonian import SymplecticEulerLayer as SymplecticEulerLayer
from ._hamiltonian import VerletLayer as VerletLayer
from ._lifting import ConstrainedConv2d as ConstrainedConv2d
from ._lifting import ConstrainedLinear as ConstrainedLinear
from ._network import FAMILIES as FAMILIES
from ._network import SCHEMES as SCHEMES
from ._network import HamiltonianNetwork as HamiltonianNetwork
from ._network import StableSequential as StableSequential
from ._network import stable_network as stable_network
from ._resnet import ResNetLayer as ResNetLayer
from ._spectral import INIT_ITERATIONS as INIT_ITERATIONS
from ._spectral import SAFETY_MARGIN as SAFETY_MARGIN
from ._spectral import ConvOperator as ConvOperator
from ._spectral import DenseOperator as DenseOperator
from ._spectral import conv_norm_bound as conv_norm_bound
from ._spectral import conv_operator_norm as conv_operator_norm
from ._spectral import matrix_norm as matrix_norm
from ._spectral import refresh_spectral_norms as refresh_spectral_norms
from ._training import prolong as prolong
from ._training import time_smoothness as time_smoothness
