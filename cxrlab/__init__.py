"""cxrlab: robust, domain-generalisable chest X-ray classification (course package)."""
from cxrlab.errors import CxrlabError

__version__ = "0.1.0"

__all__ = ["CxrlabError", "__version__"]
