"""Training, one concern per file: a model on a text, with evaluation, checkpoints, resume and a report.

config.py (TrainConfig) < data.py (text, split, batches) < outdir.py (the locked out dir) < checkpoint.py
(the .npz format) < footprint.py (memory estimate) < plot.py < progress.py (progress line, signals)
< state.py (the run's state, TrainResult) < resume.py (checkpoint metadata, written and read side by side)
< setup.py (everything before the first step) < report.py (the end) < loop.py (train(): the loop and the
step) < finetune.py (train() from a Hugging Face directory) < evaluate.py (perplexity of long text).
Guide: docs/training.md
"""

from .config import FIELD_HELP, RESUME_FREE_FIELDS, TrainConfig
from .evaluate import EvalResult, evaluate_ids, evaluate_text
from .finetune import FinetuneResult, finetune
from .loop import evaluate, train
from .resume import resume_config
from .state import GradAccumulator, TrainingDiverged, TrainResult, divergence_limit

__all__ = ["TrainConfig", "TrainResult", "TrainingDiverged", "GradAccumulator", "FIELD_HELP", "RESUME_FREE_FIELDS",
           "divergence_limit", "train", "evaluate", "resume_config", "finetune", "FinetuneResult", "EvalResult",
           "evaluate_ids", "evaluate_text"]
