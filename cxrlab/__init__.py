"""cxrlab: robust, domain-generalisable chest X-ray classification (course package)."""
__version__ = "0.1.0"
