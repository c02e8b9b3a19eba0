"""pyspk: Kaldi-style speaker verification with AM-SupCon, class-aware attention and MGDA."""

__version__ = "0.1.0"
