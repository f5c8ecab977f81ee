"""A run's lifecycle around the engine's epoch loop (:mod:`icp.engine`): one :class:`Attempt` a process, which keeps
the run record (statuses in :mod:`icp.records`) and writes it with the checkpoint.

An attempt appends its job to the record's ``jobs`` (after the earlier attempts as ``record.json`` last saw them),
says ``running`` and stamps the compute it has spent (set-up included) whenever the record is written. After each
epoch it saves ``last.pt`` first and ``record.json`` after it, so the record never runs ahead of its checkpoint; the
last epoch makes the run ``complete``, written once: the same record in ``last.pt`` and in ``record.json`` (a run
written again from its checkpoint reads byte for byte as it ended, :func:`ended`). A loss that turns NaN/inf makes it
``diverged`` (final too); Ctrl-C or a termination signal leaves it ``interrupted``, a requeued job ``requeued`` (the
stop status its signal handler set), any other exception ``failed``: the record then drops the epochs that
``last.pt`` does not hold. A trainer that outlives its requeued SLURM job (an orphan: :func:`icp.records.taken_back`)
stops after the epoch it saved and leaves the run ``requeued`` for that job to resume.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable, Optional

import torch

from icp import checkpoint, records
from icp.config import Config


def ended(run_dir: Path, record: dict) -> dict:
    """A run that ended (``complete``, ``diverged``: its checkpoint's record) is never trained again. Its
    ``record.json`` comes back exactly as the run ended it, time stamp included, where it is missing or differs
    (Snakemake removes a job's output before it runs the job: its job killed with it after the run ended, it runs it
    again), and a stopped run's record set aside is dropped."""
    if records.load(run_dir).record != record:
        records.write(record, run_dir / records.NAME, stamp=False)
    (run_dir / records.STOPPED).unlink(missing_ok=True)
    return record


def resumed(ckpt: dict, epochs: int, device: torch.device) -> dict:
    """The record of a run resumed from ``ckpt``: one more resumption, the note of why it did not resume from
    ``last.pt`` (a checkpoint kept back), this machine's environment and code; one line on stderr says so."""
    record = ckpt["record"]
    record["resumed"] += 1
    source = ckpt.get("loaded_from", "last.pt")
    if ckpt.get("fallback"):  # the record keeps why it did not resume from last.pt
        record.setdefault("notes", []).append(f"{records.now()}: {ckpt['fallback']}")
    print(f"{record['run_id']}: resumed from epoch {ckpt['epoch']} of {epochs} ({source}"
          f"{': last.pt was unreadable' if source != 'last.pt' else ''})", file=sys.stderr,
          flush=True)  # stderr, as the epoch lines
    record["env"] = records.environment(device)
    record["code"] = records.code_version()
    return record


class Attempt:
    """One process's attempt at a run in ``run_dir``: its compute counts from its creation (set-up included).
    ``state(epoch, record)`` is the checkpoint that holds ``epoch`` epochs (:meth:`icp.engine.Trainer.state`)."""

    def __init__(self, run_dir: Path, cfg: Config, state: Callable[[int, dict], dict]):
        self.start = time.perf_counter()
        self.run_dir, self.cfg, self.state = run_dir, cfg, state
        self.path = run_dir / records.NAME
        self.record: dict = {}
        self.saved: dict = {}
        self.final = False  # record.json says complete or diverged: nothing after may take it back

    def seconds(self) -> float:
        """Wall-clock seconds since the attempt started."""
        return time.perf_counter() - self.start

    def begin(self, record: dict, job: Optional[dict]) -> None:
        """Take ``record`` (new, or as the checkpoint holds it) and write it ``running``, with this attempt's
        ``job`` (default :func:`icp.records.job_info`) after the earlier ones."""
        self.record = record
        # the attempts before this one, as record.json last saw them: it is written after the checkpoint and when an
        # attempt ends, so it holds the compute of work the checkpoint lost (a failed or killed attempt's epoch)
        record["jobs"] = self._earlier_attempts(record.get("jobs") or [])
        record["jobs"].append(dict(job or records.job_info()))
        record["status"], record["error"] = "running", None
        self.save()  # record.json now holds every attempt: a stopped run's record set aside is spent
        (self.run_dir / records.STOPPED).unlink(missing_ok=True)
        self.saved = _as_saved(record)  # what last.pt holds: the record never runs ahead of its checkpoint

    def save(self) -> None:
        """Write ``record.json``, stamped with this attempt's compute so far."""
        records.stamp_compute(self.record, self.seconds())
        records.write(self.record, self.path)

    def saved_epoch(self, epoch: int, final: bool) -> bool:
        """Save the checkpoint of ``epoch`` epochs, then the record (``complete`` after the ``final`` epoch). False:
        this trainer is an orphan (SLURM requeued its job, which resumes the run) and must stop now."""
        record = self.record
        if final:
            record["status"] = "complete"
            self._stamp_final()
            self._checkpoint(epoch)
            self._write_figure_data()  # before the record says complete: a figure step finds it with the record
            records.write(record, self.path, stamp=False)
            self.final = True
        else:
            records.stamp_compute(record, self.seconds())
            self._checkpoint(epoch)
            if records.taken_back(self.run_dir, record["jobs"][-1].get("job_id")):
                self._stop_orphaned(epoch)
                self.save()
                return False
            self.save()
        self.saved = _as_saved(record)
        return True

    def diverged(self, exc: BaseException) -> None:
        """Make ``diverged`` final: last.pt (the last finite epoch, if any) carries the record from now on, and
        record.json says so after it."""
        record = self.record
        record["status"], record["error"] = "diverged", f"Diverged: {exc}"
        self._stamp_final()
        path = self.run_dir / "last.pt"
        state = checkpoint.load(path) if path.exists() else self.state(0, record)
        state["record"] = record
        checkpoint.atomic_save(state, path)  # last.pt first: a record.json that says diverged has its checkpoint
        records.write(record, self.path, stamp=False)
        self.final = True

    def stopped(self, exc: BaseException, status: Optional[str]) -> None:
        """``exc`` ended the attempt: the record says ``status`` (the one a stop signal set, e.g. ``requeued``), else
        ``interrupted`` (Ctrl-C, a termination signal) or ``failed``, with the error, and holds no epoch that last.pt
        does not. A stop that comes once the record is final (a termination signal while the trainer logs its last
        epoch or closes its trackers) leaves the final record as written: the run is done."""
        if self.final:
            return
        record = self.record
        if status is not None:
            record["status"] = status
        elif isinstance(exc, (KeyboardInterrupt, SystemExit)):
            record["status"] = "interrupted"
        else:
            record["status"] = "failed"
        record["error"] = f"{type(exc).__name__}: {exc}"
        _back_to_checkpoint(record, self.saved)
        self.save()

    def _checkpoint(self, epoch: int) -> None:
        checkpoint.atomic_save(self.state(epoch, self.record), self.run_dir / "last.pt", keep_previous=True)

    def _stamp_final(self) -> None:
        """A final record is stamped once: the same dict then goes to last.pt and to record.json."""
        records.stamp_compute(self.record, self.seconds())
        self.record["updated_at"] = records.now()

    def _earlier_attempts(self, jobs: list) -> list:
        """The ``jobs`` of the earlier attempts: those of ``record.json`` where it is this config's run and knows at
        least the checkpoint's attempts (it has their final seconds), else ``jobs`` (the checkpoint's)."""
        disk = records.load(self.run_dir).record  # record.json, else a stopped run's record set aside
        if disk is None:
            return list(jobs)
        if disk.get("config_digest") != self.cfg.digest() or len(disk.get("jobs") or []) < len(jobs):
            return list(jobs)
        return list(disk["jobs"])

    def _stop_orphaned(self, epoch: int) -> None:
        """This trainer outlived its SLURM job (requeued while its node's slurmd was lost, say): the record says
        ``requeued`` again, with a note, and the trainer stops with epoch ``epoch`` saved, leaving its device to
        SLURM and the run to the requeued job, which resumes from ``last.pt``."""
        record = self.record
        note = (f"job {record['jobs'][-1]['job_id']} was requeued by SLURM while this trainer still ran (an orphan); "
                f"it stopped after epoch {epoch} and the requeued job resumes the run")
        record["status"] = "requeued"
        record.setdefault("notes", []).append(f"{records.now()}: {note}")
        print(f"{record['run_id']}: {note}", file=sys.stderr, flush=True)

    def _write_figure_data(self) -> None:
        """The arrays of the figures drawn from this run's model (:mod:`icp.figure_data`), from its final last.pt,
        so that the login side drawing them imports no torch. A failure costs the run nothing: the figure then
        computes them from last.pt itself."""
        from icp import figure_data

        cfg = self.cfg
        try:
            figure_data.write(self.run_dir, cfg.method.name, dict(cfg.method.options), cfg.model.name)
        except Exception as exc:  # noqa: BLE001 - the run is complete whatever a figure's arrays do
            print(f"warning: {self.run_dir}: no {figure_data.NAME} ({type(exc).__name__}: {exc}); its figures compute "
                  "it from last.pt", file=sys.stderr)


def _as_saved(record: dict) -> dict:
    """The record's epoch-dependent fields as the checkpoint about to hold them (:func:`_back_to_checkpoint`)."""
    return {"n": len(record["epochs"]), **{k: record[k] for k in ("wall_time_s", "images_per_s", "last", "best")}}


def _back_to_checkpoint(record: dict, saved: dict) -> None:
    """Drop the epochs that ``last.pt`` does not hold (an epoch trained but whose checkpoint failed to save, e.g. on
    a full disk): a resumed run trains them again, so the record must not claim them. Their seconds stay in
    ``jobs`` (the attempt's compute)."""
    del record["epochs"][saved["n"]:]
    record.update({k: v for k, v in saved.items() if k != "n"})
