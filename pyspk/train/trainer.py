"""The training loop: one config, one data dir, one experiment dir.

:func:`train` builds the encoder and head, resumes from the latest
``EXP/checkpoints/epoch_N.pt`` when there is one (else fine-tunes from
``train.init_from`` when set), runs the remaining epochs and writes

    EXP/config.yaml        the resolved config (rank 0, before the first step)
    EXP/checkpoints/       epoch_N.pt after every epoch (atomic)
    EXP/train.csv          one row per step (loss parts, alpha, lr, margin, acc, frames/s)
    EXP/final.pt           mean of the last ``average_last`` checkpoints' encoders,
                           pyspk.models.save_encoder format with extra = {features, config, speakers}

Per step: the objective's components set their schedules from the training position
(:meth:`pyspk.train.objective.Objective.set_progress`); Z = encoder(crops); L_cls from the
head; the pair loss, its weights and the balance in :class:`pyspk.train.objective.Objective`;
one backward (a balancer at ``level: parameters`` runs one more inside the objective,
pyspk/balance/gradients.py). A non-finite loss stops training with :class:`TrainingDiverged` naming the step
and the last good checkpoint, before any update or write. Under ``torchrun`` the model
(encoder + head) is wrapped in DDP and only rank 0 writes files.
"""

from __future__ import annotations

import logging
import math
import os
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from tqdm import tqdm

from pyspk.io import atomic_write_text
from pyspk.malloc import keep_freed_memory
from pyspk.models import build_encoder, save_encoder
from pyspk.models.layers import default_gemm_backend, set_gemm_backend
from pyspk.online import load_online_data, online_fingerprint
from pyspk.train import checkpoint as C
from pyspk.train import distributed as D
from pyspk.train.config import RESUMABLE, Config, config_to_dict, dump_config, resolve_dict
from pyspk.train.data import TrainData, data_fingerprint, load_train_data
from pyspk.train.objective import Objective, SpeakerModel, build_head
from pyspk.train.schedulers import LrSchedule
from pyspk.train.steplog import StepLog

log = logging.getLogger("pyspk.train")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def build_optimizer(optim_cfg, params):
    """Adam or SGD with ``optim_cfg.impl`` as the kernel (fused, foreach or loop): the same
    update, one kernel over every tensor (fused) instead of a Python loop over them."""
    impl = {"fused": {"fused": True}, "foreach": {"foreach": True}, "loop": {"foreach": False}}[optim_cfg.impl]
    if optim_cfg.name == "sgd":
        return torch.optim.SGD(
            params,
            lr=optim_cfg.lr,
            momentum=optim_cfg.momentum,
            nesterov=optim_cfg.nesterov,
            weight_decay=optim_cfg.weight_decay,
            **impl,
        )
    return torch.optim.Adam(params, lr=optim_cfg.lr, weight_decay=optim_cfg.weight_decay, **impl)


def cpu_has_bf16() -> bool:
    """Whether oneDNN runs bfloat16 GEMMs natively here (avx512_bf16 or AMX)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_cpu_amp(setting) -> bool:
    """``train.cpu_amp`` -> whether the encoder runs under bfloat16 autocast on this CPU.
    ``auto`` asks the hardware: emulated bfloat16 GEMMs run much slower than float32
    (docs/speed.md)."""
    native = cpu_has_bf16()
    if setting == "auto":
        log.info(
            "train.cpu_amp: auto -> %s",
            "bfloat16 (the CPU has bfloat16 GEMMs)"
            if native
            else "float32 (no bfloat16 GEMMs in this CPU: avx512_bf16 or AMX)",
        )
        return native
    if setting and not native:
        log.warning(
            "train.cpu_amp: this CPU has no bfloat16 matrix instructions (avx512_bf16/AMX); "
            "bfloat16 will be emulated and much slower than float32 (docs/speed.md; cpu_amp: "
            "auto would train in float32 here)"
        )
    return bool(setting)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def compile_encoder(encoder: torch.nn.Module) -> bool:
    """``torch.compile`` the encoder in place (``nn.Module.compile``): the parameters, the
    state_dict keys and the maths stay; inductor fuses the elementwise passes (ReLU,
    BatchNorm, the pooling statistics) around the GEMMs, so a step on CPU makes fewer passes
    over memory (docs/speed.md). The C++ kernels are cached under ``TORCHINDUCTOR_CACHE_DIR`` (path.sh
    puts it in .cache/inductor), so only the first run of a shape pays the full compile.
    Without a C++ compiler, or when inductor fails, training goes on in eager mode."""
    import shutil

    if not any(shutil.which(c) for c in (os.environ.get("CXX", "g++"), "g++", "c++", "clang++")):
        log.warning("train.compile: no C++ compiler on PATH (inductor needs one); training in eager mode")
        return False
    import torch._dynamo

    torch._dynamo.config.suppress_errors = True  # a failed compile falls back to eager, with a warning
    encoder.compile()
    return True


class Trainer:
    def __init__(
        self,
        cfg: Config,
        train_dir,
        exp_dir,
        seed: int,
        dist: Optional[D.DistInfo] = None,
        source: str = "<config>",
        restart: bool = False,
    ):
        self.cfg, self.exp_dir, self.seed, self.restart = cfg, Path(exp_dir), seed, restart
        self.train_dir = Path(train_dir)
        self.dist = dist or D.DistInfo()
        self.cfg.train.seed = seed
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        keep_freed_memory()  # no page faults on the step's large activations (pyspk/malloc.py)
        self.gemm = default_gemm_backend() if cfg.train.gemm == "auto" else cfg.train.gemm
        set_gemm_backend(self.gemm)
        log.info("train.gemm: %s -> %s", cfg.train.gemm, self.gemm)
        self.device = D.choose_device(cfg.train.device, self.dist)
        if cfg.data.source == "features":
            self.data_id = data_fingerprint(train_dir)
            self.data: TrainData = load_train_data(train_dir, cfg, seed, self.dist.rank, self.dist.world_size, source)
        else:  # audio or shards: augmentation and features on the fly
            self.data_id = online_fingerprint(train_dir, cfg.data)
            self.data = load_online_data(
                train_dir, cfg, seed, self.dist.rank, self.dist.world_size, source, work_dir=self.exp_dir
            )
        D.init_process_group(self.dist, self.device)
        seed_everything(seed)
        enc = build_encoder(cfg.encoder.name, feat_dim=self.data.feat_dim, **cfg.encoder.kwargs)
        head = build_head(cfg.head, enc.embed_dim, len(self.data.speakers))
        self.model = SpeakerModel(enc, head).to(self.device)
        if cfg.train.compile and getattr(cfg.balance, "level", None) == "parameters":
            # a balancer on the encoder's parameters back-propagates the encoder once per loss; the
            # compiled graph, back-propagated twice, gave gradients unlike eager mode's (and it
            # refuses to without turning off its buffer donation), so such a system trains eager
            log.warning(
                "train.compile: off, balance.level is parameters (two backwards per step); training in eager mode"
            )
        elif cfg.train.compile:
            compile_encoder(self.model.encoder)
        self.objective = Objective(
            cfg,
            len(self.data.speakers),
            enc.embed_dim,
            head=self.model.head,
            distributed=self.dist.enabled,
            encoder=self.model.encoder,
            world_size=self.dist.world_size,
        ).to(self.device)
        self.optimizer = build_optimizer(cfg.optim, self.model.parameters())
        self.steps_per_epoch = len(self.data.sampler)
        o = cfg.optim
        self.schedule = LrSchedule(o.lr, o.final_lr, o.warmup_steps, o.decay, cfg.train.epochs, self.steps_per_epoch)
        cuda = self.device.type == "cuda"
        self.amp = cfg.train.amp if cuda else resolve_cpu_amp(cfg.train.cpu_amp) and self.device.type == "cpu"
        self.amp_dtype = getattr(torch, cfg.train.amp_dtype) if cuda else torch.bfloat16
        # gradient scaling keeps float16's small gradients from flushing to zero; bfloat16 has
        # float32's exponent range and needs none
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and cuda and self.amp_dtype == torch.float16)
        self.epoch, self.step = 0, 0
        self.steplog = StepLog(self.exp_dir / "train.csv", cfg.train.log_interval, enabled=self.dist.is_main)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {
            "model": self.model.encoder.state_dict(),
            "head": self.model.head.state_dict() if self.model.head is not None else None,
            "objective": self.objective.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "sampler": self.data.sampler.state_dict(),
            "rng": C.rng_state(),
            "epoch": self.epoch,
            "step": self.step,
            "speakers": self.data.speakers,
            "config": config_to_dict(self.cfg),
            "data_id": self.data_id,
        }

    def resume(self, path, st: Optional[dict] = None) -> None:
        st = C.load_checkpoint(path, map_location=self.device) if st is None else st
        if st["speakers"] != self.data.speakers:
            raise ValueError(
                f"{path}: trained on other speakers than this --train-dir; "
                f"use a new exp dir (or train.init_from to fine-tune)"
            )
        changed = config_changes(recorded_config(st.get("config", {}), path), config_to_dict(self.cfg))
        if changed:
            raise ValueError(
                f"{path} was trained with another config ({'; '.join(changed[:5])}); "
                f"start over with --restart (run.sh: --force true), or use another --exp-dir"
            )
        self.model.encoder.load_state_dict(st["model"])
        if self.model.head is not None:
            self.model.head.load_state_dict(st["head"])
        self.objective.load_state_dict(st["objective"])
        self.optimizer.load_state_dict(st["optimizer"])
        self.scaler.load_state_dict(st["scaler"])
        self.data.sampler.load_state_dict(st["sampler"])
        C.set_rng_state(st["rng"])
        self.epoch, self.step = st["epoch"], st["step"]
        self.steplog.restore(self.step)
        log.info("resumed from %s (epoch %d, step %d)", path, self.epoch, self.step)

    def init_from(self, path) -> None:
        """Fine-tune: load encoder weights; the head only when the speakers match. ``path``: a
        checkpoint, a final.pt, or an experiment dir (its latest epoch checkpoint, which has the head)."""
        if Path(path).is_dir():
            latest = C.latest_checkpoint(Path(path))
            if latest is None:
                raise ValueError(f"train.init_from: {path} has no checkpoints/epoch_N.pt (train that system first)")
            path = latest
        st = C.load_checkpoint(path, map_location=self.device)
        enc_state = st["model"] if "model" in st else st["state_dict"]
        self.model.encoder.load_state_dict(enc_state)
        head_state, spks = st.get("head"), st.get("speakers") or st.get("extra", {}).get("speakers")
        if self.model.head is not None and head_state is not None and spks == self.data.speakers:
            self.model.head.load_state_dict(head_state)
            log.info("init_from %s: encoder and head loaded", path)
        else:
            log.info(
                "init_from %s: encoder loaded; head re-initialised (%s -> %d speakers)",
                path,
                len(spks) if spks else "no",
                len(self.data.speakers),
            )

    # ------------------------------------------------------------------ loop
    def _retire_checkpoints(self, why: str) -> None:
        """Start over: move EXP/checkpoints to EXP/checkpoints.stale (replacing an older one)."""
        D.barrier()  # every rank has read what it needs from the old checkpoints
        if self.dist.is_main:
            ckpt, stale = self.exp_dir / "checkpoints", self.exp_dir / "checkpoints.stale"
            log.warning("starting over (%s): moving %s to %s", why, ckpt, stale)
            shutil.rmtree(stale, ignore_errors=True)
            os.replace(ckpt, stale)
            for old in ("train.csv", "final.pt"):  # both belong to the old run
                (self.exp_dir / old).unlink(missing_ok=True)
        D.barrier()

    def run(self) -> Path:
        latest, st = C.latest_checkpoint(self.exp_dir), None
        if latest is not None:
            why = "--restart" if self.restart else None
            if why is None:
                st = C.load_checkpoint(latest, map_location=self.device)
                if st.get("data_id") != self.data_id:
                    why = (
                        f"{latest} was trained on other data than {self.train_dir} now holds: "
                        "its features, labels or augmented copies changed"
                    )
            if why is not None:
                self._retire_checkpoints(why)
                latest = st = None
        if latest is not None:
            self.resume(latest, st)
        elif self.cfg.train.init_from:
            self.init_from(self.cfg.train.init_from)
        if self.dist.is_main:
            atomic_write_text(self.exp_dir / "config.yaml", dump_config(self.cfg))
        model = self.model
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        for epoch in range(self.epoch, self.cfg.train.epochs):
            self._run_epoch(model, epoch)
            self.epoch = epoch + 1
            self.data.sampler.load_state_dict({"epoch": self.epoch, "position": 0, "seed": self.seed})
            if self.dist.is_main:
                C.save_checkpoint(C.checkpoint_path(self.exp_dir, self.epoch), self.state_dict())
                self.steplog.flush()
            D.barrier()
        final = self.exp_dir / "final.pt"
        if self.dist.is_main:
            self.write_final(final)
        D.barrier()
        return final

    def _run_epoch(self, model, epoch: int) -> None:
        cfg, n = self.cfg, self.steps_per_epoch
        self.data.sampler.set_epoch(epoch)
        model.train()
        bar = tqdm(
            total=n,
            initial=self.data.sampler.position,
            desc=f"epoch {epoch + 1}/{cfg.train.epochs}",
            disable=not (self.dist.is_main and sys.stderr.isatty()),
            leave=False,
        )
        t0 = time.perf_counter()
        for i, (feats, labels) in enumerate(self.data.loader()):
            row = self._train_step(model, feats, labels, epoch, i)
            t1 = time.perf_counter()
            row["frames_per_s"] = feats.shape[0] * feats.shape[1] * self.dist.world_size / max(t1 - t0, 1e-9)
            t0 = t1
            self.steplog.add(row, n)
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.3f}", lr=f"{row['lr']:.2g}")
        bar.close()

    def _train_step(self, model, feats, labels, epoch: int, i: int) -> dict:
        cfg = self.cfg
        lr = self.schedule.apply(self.optimizer, self.step)
        self.objective.set_progress(epoch + i / self.steps_per_epoch)
        feats, labels = feats.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)
        with torch.autocast(device_type=self.device.type, dtype=self.amp_dtype, enabled=self.amp):
            z, loss_cls, logits = model(feats, labels)
        scale = self.scaler.get_scale() if self.scaler.is_enabled() else 1.0
        total, parts = self.objective(z, loss_cls, labels, loss_scale=scale)
        bad = not math.isfinite(parts["loss"])
        if self.dist.enabled:
            bad = D.any_rank(bad, self.device)
        if bad:
            last = C.latest_checkpoint(self.exp_dir)
            raise TrainingDiverged(
                f"loss is {parts['loss']} at step {self.step + 1} (epoch {epoch + 1}, batch {i + 1}); "
                f"stopped before updating; last good checkpoint: {last or 'none (no epoch completed)'}"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        if cfg.optim.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.objective.after_step(z, labels)
        self.step += 1
        acc = float((logits.argmax(1) == labels).float().mean()) if logits is not None else float("nan")
        return {"epoch": epoch + 1, "step": self.step, **parts, "lr": lr, "acc": acc}

    # ------------------------------------------------------------------ output
    def write_final(self, path: Path) -> None:
        """Average the last ``average_last`` epoch checkpoints into ``final.pt``."""
        n = self.cfg.train.average_last
        enc = build_encoder(self.cfg.encoder.name, feat_dim=self.data.feat_dim, **self.cfg.encoder.kwargs)
        enc.load_state_dict(C.average_encoder(self.exp_dir, n))
        kwargs = dict(self.cfg.encoder.kwargs)
        if self.data.feat_dim != 80:
            kwargs["feat_dim"] = self.data.feat_dim
        fc = self.cfg.features
        extra = {
            "features": {"cmn": fc.cmn, "cmn_window": fc.cmn_window, "vad": fc.vad},
            "config": config_to_dict(self.cfg),
            "speakers": list(self.data.speakers),
            # what the encoder trained in (the last session of a resumed run): cpu_amp: auto
            # resolves per machine, so the config alone does not say
            "train_precision": str(self.amp_dtype).replace("torch.", "") if self.amp else "float32",
            "train_gemm": self.gemm,
        }
        save_encoder(path, enc, self.cfg.encoder.name, kwargs, extra)
        log.info("wrote %s (mean of the last %d checkpoint(s))", path, n)


def recorded_config(data: dict, source) -> dict:
    """A checkpoint's config as the current code resolves it: a config recorded in the layout
    before the objective's blocks reads as the same settings in the new one. As it is when it
    no longer parses (then it differs, and the message says where)."""
    try:
        return resolve_dict(data, str(source))
    except ValueError:
        return data


def config_changes(old: dict, new: dict, prefix: str = "") -> list:
    """``key: old -> new`` for every key (flattened) whose value differs, but resumable ones."""
    out = []
    for k in sorted(set(old) | set(new)):
        a, b, key = old.get(k), new.get(k), f"{prefix}{k}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_changes(a, b, key + ".")
        elif a != b and key not in RESUMABLE:
            out.append(f"{key}: {a!r} -> {b!r}")
    return out


def train(
    cfg: Config,
    train_dir,
    exp_dir,
    seed: int,
    dist: Optional[D.DistInfo] = None,
    source: str = "<config>",
    restart: bool = False,
) -> Path:
    """Train (or resume) one system; returns the path of ``final.pt``.

    Resumes from the latest checkpoint of ``exp_dir`` when it was trained on the same data
    (:func:`pyspk.train.data.data_fingerprint`) and config; starts over when the data
    changed or ``restart`` is set (old checkpoints kept in ``checkpoints.stale``)."""
    trainer = Trainer(cfg, train_dir, exp_dir, seed, dist, source, restart)
    try:
        return trainer.run()
    finally:
        D.destroy_process_group()
