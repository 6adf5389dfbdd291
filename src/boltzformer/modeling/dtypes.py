"""The floating dtypes a model runs in, by name (`Predictor(dtype=...)`, `--dtype`).

A model cast with `model.to(dtype)` runs in that dtype end to end: inputs are cast at its
entry, the constants it makes follow it, and the Boltzmann sampling stays in float32
(modeling/mask_decoder.py, `level_logits`). float16 is a GPU dtype: PyTorch's CPU kernels
accept it but run it far slower than float32.
"""

from __future__ import annotations

import torch

#: name -> dtype; the names `--dtype` takes
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float64": torch.float64,
}
#: the usual short names, accepted too
ALIASES: dict[str, str] = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16",
                           "half": "float16", "fp64": "float64", "double": "float64"}


def resolve_dtype(value: str | torch.dtype, name: str = "dtype") -> torch.dtype:
    """A dtype of `DTYPES`, given as itself or by name ("bfloat16", "bf16", "torch.float16");
    anything else is a one-line ValueError naming `name` (an option's flag, for a
    command)."""
    if isinstance(value, torch.dtype):
        if value in DTYPES.values():
            return value
    else:
        key = str(value).strip().lower().removeprefix("torch.")
        key = ALIASES.get(key, key)
        if key in DTYPES:
            return DTYPES[key]
    raise ValueError(f"{name} {value!r} is not a floating dtype a model runs in; choose one of "
                     f"{', '.join(DTYPES)}")


def dtype_name(dtype: torch.dtype) -> str:
    """torch.bfloat16 -> "bfloat16" (as `DTYPES` names it)."""
    return str(dtype).removeprefix("torch.")
