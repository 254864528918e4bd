"""The package's version, in a module of its own so that any module can import it without
importing the package's top (which loads the API on demand)."""

__version__ = "0.1.0"
