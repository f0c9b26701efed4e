"""lit-cologen: CoLoGen (progressive concept-localization learning) on the FLUX.1 MMDiT, as a Lightning suite."""

__version__ = "0.1.0"
