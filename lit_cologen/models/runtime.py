"""How the model runs: its frozen base's weight format and matmul precision, and compiled blocks.

One entry, :func:`configure_runtime`, used by training (``train.compile`` / ``train.fp8`` /
``model.base_quantization``) and by the pipeline (``compile=`` / ``fp8=`` / ``base_quantization=``), so both apply
the same steps in the same order:

1. ``base_quantization``: weight-only quantization of the frozen base's block linears (the 24 GB mode;
   :mod:`lit_cologen.models.quantize`);
2. ``fp8``: FP8 matmuls in the frozen base's block linears (GPUs with FP8 only);
3. ``compile``: regional ``torch.compile`` of the block forwards (``CoLoGenTransformer.compile_blocks``).

None of them touches the PRW experts, routers or norms, and none changes the math beyond the stated precision:
compiled blocks compute what eager blocks compute (within floating-point reassociation).
"""

from __future__ import annotations

import logging
from typing import Any

from lit_cologen.models.transformer import CoLoGenTransformer

log = logging.getLogger(__name__)


def configure_runtime(transformer: CoLoGenTransformer, *, device: Any = None, compile: bool = False,
                      compile_backend: str = "inductor", fp8: bool = False, base_quantization: str = "none",
                      training: bool = True) -> CoLoGenTransformer:
    """Apply the runtime options to ``transformer`` in place (see the module docstring); returns it.

    Args:
        device: where the model runs (FP8 and the CUDA-only quantization backends check it).
        training: FP8 for training (dynamic scaling of activations, weights and gradients) or for inference.

    Raises:
        UserError (a subclass): an option this device or installation cannot do, naming the config key.
    """
    if base_quantization != "none" or fp8:
        from lit_cologen.models import quantize

        if base_quantization != "none":
            # on a GPU each linear moves there just before it is quantized: a bf16 FLUX base never sits on the card
            quantize.quantize_base(transformer.base, base_quantization,
                                   device=device if str(device).startswith("cuda") else None)
        if fp8:
            quantize.apply_fp8(transformer.base, device, training=training)
    if compile:
        transformer.compile_blocks(backend=compile_backend)
        log.info("compiled the double / single block forwards (backend %s)", compile_backend)
    return transformer
