"""GPT-1 supervised fine-tuning: task tokens, input transformations, the extract-token head with the
auxiliary LM objective, the training loop, prediction, and the run directories.

    from pygpt.finetune import FinetuneConfig, finetune, predict
    finetune(FinetuneConfig(task="entail", run="runs/shakespeare", train="tasks/entail/train.jsonl",
                            valid="tasks/entail/valid.jsonl", out_dir="runs/ft-entail", truncate=True))
    predict("runs/ft-entail", "tasks/entail/test.jsonl", "preds.jsonl")

Modules: `transforms` (task tokens, layouts, truncation, batches), `model` (TaskModel, losses,
saving/loading runs), `loop` (training, evaluation, prediction), `lstm_pretrain` (the LSTM base).
The JSONL schema of the four task shapes is in `pygpt.tasks`.
"""
from .loop import FinetuneConfig, classification_metrics, encode_examples, evaluate, finetune, predict, \
    predict_examples, train_task_model
from .model import TaskModel, TaskOutput, arch_of, build_base, lm_loss, load_base, load_finetuned, save_finetuned
from .transforms import DELIMITER, EXTRACT, START, TASK_TOKENS, Batch, Encoded, add_task_tokens, collate, \
    encode_example, fit_segments, grow_vocab, layout

__all__ = [
    "DELIMITER", "EXTRACT", "START", "TASK_TOKENS", "Batch", "Encoded", "FinetuneConfig", "TaskModel",
    "TaskOutput", "add_task_tokens", "arch_of", "build_base", "classification_metrics", "collate",
    "encode_example", "encode_examples", "evaluate", "finetune", "fit_segments", "grow_vocab", "layout",
    "lm_loss", "load_base", "load_finetuned", "predict", "predict_examples", "save_finetuned",
    "train_task_model",
]
