"""What a run writes beside its checkpoints: config.yaml, train.csv, eval.csv and TensorBoard
events under ``runs/<name>/``."""
from __future__ import annotations

import csv
import io
from pathlib import Path

import yaml

from ..files import atomic_write_text


def write_run_config(run_dir: Path, config: dict, note: str = '') -> None:
    """``run_dir/config.yaml``: the settings the run trains with (after --set and resume),
    and ``note`` as a closing comment (what a setting resolved to, e.g. the held-out
    episodes), so the file still loads as a training config."""
    comment = ''.join(f'# {line}\n' for line in note.splitlines())
    atomic_write_text(run_dir / 'config.yaml',
                      yaml.safe_dump(config, sort_keys=False) + comment)


class RunLogs:
    """train.csv, eval.csv and TensorBoard events under the run directory.

    On resume, rows written after the resumed step (by the interrupted run) are dropped so the
    CSV reads as one uninterrupted run.
    """

    TRAIN_FIELDS = ['step', 'loss', 'lr', 'samples_per_s', 'logit_scale', 'skipped_steps']
    EVAL_FIELDS = ['step', 'split', 'n', 'top1', 'top5', 'mrr']

    def __init__(self, run_dir: Path, start_step: int):
        from torch.utils.tensorboard import SummaryWriter
        self.train_path = run_dir / 'train.csv'
        self.eval_path = run_dir / 'eval.csv'
        for path, fields in ((self.train_path, self.TRAIN_FIELDS),
                             (self.eval_path, self.EVAL_FIELDS)):
            _truncate_csv(path, fields, start_step)
        self.writer = SummaryWriter(str(run_dir / 'tensorboard'), purge_step=start_step or None)

    def train(self, row: dict) -> None:
        _append_csv(self.train_path, self.TRAIN_FIELDS, row)
        for key in ('loss', 'lr', 'samples_per_s', 'logit_scale'):
            self.writer.add_scalar(f'train/{key}', row[key], row['step'])

    def evaluation(self, step: int, results: dict) -> None:
        for split, m in results.items():
            _append_csv(self.eval_path, self.EVAL_FIELDS, {'step': step, 'split': split, **m})
            for key in ('top1', 'top5', 'mrr'):
                self.writer.add_scalar(f'eval/{split}/{key}', m[key], step)

    def close(self) -> None:
        self.writer.close()


def _truncate_csv(path: Path, fields: list[str], start_step: int) -> None:
    """``path`` with its header and only the rows up to ``start_step`` (a new file: the
    header alone)."""
    rows = []
    if path.exists():
        with open(path, newline='') as handle:
            rows = [r for r in csv.DictReader(handle) if int(r['step']) <= start_step]
    text = io.StringIO(newline='')
    writer = csv.DictWriter(text, fields)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, text.getvalue())


def _append_csv(path: Path, fields: list[str], row: dict) -> None:
    with open(path, 'a', newline='') as handle:
        csv.DictWriter(handle, fields, extrasaction='ignore').writerow(row)
