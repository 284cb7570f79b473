"""The model and tokenizer a command reads: a training checkpoint (.npz, its tokenizer inside) or a Hugging Face
directory of any registered family (npgpt.families).  Guide: docs/evaluate.md
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..families import CONFIG_NAME, FAMILIES, build_model, load_dir
from ..runtime.model import Model
from ..training.checkpoint import load_checkpoint, stored_tokenizer
from ..training.outdir import BEST_NAME, CHECKPOINT_NAME


def load_model_and_tokenizer(path: str | os.PathLike[str], sampling: bool = False) -> tuple[Model, Any]:
    """(model in eval mode, tokenizer) from a training checkpoint (.npz with its tokenizer) or a Hugging Face
    directory (config.json, model.safetensors and tokenizer files) of any registered family.  sampling: every
    id the model can draw must decode (a checkpoint's tokenizer must cover its whole vocabulary)."""
    p = Path(path)
    if p.is_dir():
        found = [n for n in (BEST_NAME, CHECKPOINT_NAME) if (p / n).is_file()]
        if found and not (p / CONFIG_NAME).exists():  # `npgpt train`'s out_dir: which checkpoint is the user's call
            raise ValueError(f"{p}: a training directory, not a Hugging Face one: pass one of its checkpoints, "
                             + " or ".join(str(p / n) for n in found))
        model, tok = load_dir(p)
        return model.eval(), tok
    if not p.exists() and p.suffix == ".npz":
        raise ValueError(f"{p}: no such checkpoint file")
    if not p.exists():
        raise ValueError(f"{p}: no such file or directory (expected a checkpoint .npz or a Hugging Face directory "
                         f"of one of the families {', '.join(FAMILIES)})")
    ck = load_checkpoint(p)
    tok = stored_tokenizer(p, ck, sampling=sampling)
    dtype = next(iter(ck.params.values())).dtype
    model = build_model(ck.config, dtype=dtype, init=False)
    for k, v in ck.params.items():
        model.params[k][...] = v
    return model.eval(), tok
