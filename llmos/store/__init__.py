"""The model store: content-addressed blobs, manifests, ``name:tag`` names and lineage."""
