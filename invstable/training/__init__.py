"""Training of learned inverses: :func:`train`, checkpoints, distributed data parallel (``torchrun``)."""

from ._curves import write_curve as write_curve
from ._loop import TrainConfig as TrainConfig
from ._loop import TrainResult as TrainResult
from ._loop import batch_indices as batch_indices
from ._loop import evaluate as evaluate
from ._loop import load_checkpoint as load_checkpoint
from ._loop import psnr as psnr
from ._loop import resolve_device as resolve_device
from ._loop import train as train
from ._ridge import RidgeConfig as RidgeConfig
from ._ridge import RidgeDenoiser as RidgeDenoiser
from ._ridge import TaskRidgeConfig as TaskRidgeConfig
from ._ridge import finetune_ridge as finetune_ridge
from ._ridge import save_task_ridge as save_task_ridge
from ._ridge import save_universal as save_universal
from ._ridge import train_ridge as train_ridge
from ._ridge import write_learning_curve as write_learning_curve
from ._ridge import write_task_ridge_curve as write_task_ridge_curve
