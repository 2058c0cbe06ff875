"""Data: phantoms, natural-image crops, users' images, paired datasets and HDF5 storage."""
