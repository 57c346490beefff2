"""Training: device/precision choice, the loop, tasks, torch.distributed."""

from tinyfm.train.device import amp_dtype, default_threads, select_device
from tinyfm.train.tasks import ClassificationTask
from tinyfm.train.trainer import TrainResult, create_optimizer, drop_tokens, evaluate_split, fit, shift_and_flip

__all__ = ["amp_dtype", "default_threads", "select_device", "ClassificationTask", "TrainResult",
           "create_optimizer", "drop_tokens", "evaluate_split", "fit", "shift_and_flip"]
