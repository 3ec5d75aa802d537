"""Running the stages over inputs: one file (files), an image band by band
(bands), arrays larger than memory (tiled), folders (batch), on a Dask
cluster (cluster)."""
