"""relevo's version, in the engine core so that no room imports the package front."""

__version__ = "0.1.0"
