"""Data: the synthetic hospitals, real data readers, and the one preprocessed cache."""
from cxrlab.data.cache import Cache, CacheWriter, open_cache  # noqa: F401
