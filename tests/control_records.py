"""Shared test helper: a duck-typed ``ControlEvalRecord`` (the image / condition / label a control suite reads)."""

from __future__ import annotations


class ControlRecord:
    """Duck-typed ``lit_cologen.data.evalsets.ControlEvalRecord`` holding ready PIL images."""

    def __init__(self, cond, index, prompt, image, condition, label):
        self.cond_type, self.index, self.prompt, self.key = cond, index, prompt, f"{cond}-{index}"
        self._i, self._c, self._l = image, condition, label

    def image(self):
        return self._i

    def condition(self):
        return self._c

    def label(self):
        return self._l
