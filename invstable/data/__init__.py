"""Data: phantoms, natural-image crops, users' images, paired datasets and HDF5 storage."""

from ._folder import HDF5Images as HDF5Images
from ._folder import ImageFolder as ImageFolder
from ._folder import ImageReadError as ImageReadError
from ._folder import to_unit_float as to_unit_float
from ._hdf5 import DatasetFileError as DatasetFileError
from ._hdf5 import HDF5PairedDataset as HDF5PairedDataset
from ._hdf5 import MakeResult as MakeResult
from ._hdf5 import check_dataset as check_dataset
from ._hdf5 import dataset_info as dataset_info
from ._hdf5 import make_dataset as make_dataset
from ._images import TEST_IMAGES as TEST_IMAGES
from ._images import TRAIN_IMAGES as TRAIN_IMAGES
from ._images import ImageCrops as ImageCrops
from ._images import bundled_image as bundled_image
from ._memory import InsufficientMemoryError as InsufficientMemoryError
from ._paired import Noise as Noise
from ._paired import PairedDataset as PairedDataset
from ._phantoms import EllipsePhantoms as EllipsePhantoms
from ._phantoms import SheppLogan as SheppLogan
from ._phantoms import random_ellipse_phantom as random_ellipse_phantom
from ._phantoms import shepp_logan as shepp_logan
from ._sources import Concat as Concat
from ._sources import make_source as make_source
from ._tasks import Task as Task
from ._tasks import task as task
