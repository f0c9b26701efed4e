"""Log lines that libraries print at import time and that say nothing to a user of this suite: dropped by a logging
filter on their own loggers (nothing else is touched, and every other message of those loggers still shows).

* bitsandbytes, on a CPU with AVX512-BF16, offers an optional kernel package (``kernels``) for its CPU 4-bit matmul;
  the built-in path is used without it.
* torchao registers two Enums as pytree constants, which torch (2.14) warns is deprecated.
* diffusers' torchao quantizer cannot import the tensor classes of older torchao releases; it needs them only to
  unpickle torchao-serialized checkpoints, which this suite never loads (weights are safetensors).
"""

from __future__ import annotations

import logging

#: logger name -> message prefixes dropped from it
KNOWN_IMPORT_NOISE: dict[str, tuple[str, ...]] = {
    "bitsandbytes.backends.cpu.ops": ("Failed to load CPU gemm_4bit_forward from kernels-community",),
    "torch.utils._pytree": ("%s is an Enum subclass and is now natively supported",),
    "diffusers.quantizers.torchao.torchao_quantizer": ("Unable to import `torchao` Tensor objects",),
}


class _DropPrefixes(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


def silence_known_import_noise() -> None:
    """Install the filters (idempotent); runs when ``lit_cologen`` is imported, before any library is."""
    for name, prefixes in KNOWN_IMPORT_NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropPrefixes) for f in logger.filters):
            logger.addFilter(_DropPrefixes(prefixes))
