"""lit-cologen: CoLoGen (progressive concept-localization learning) on the FLUX.1 MMDiT, as a Lightning suite."""

__version__ = "0.1.0"

from lit_cologen.utils.library_noise import silence_known_import_noise as _silence

_silence()  # library log lines at import time that say nothing to a user (see utils/library_noise.py)
