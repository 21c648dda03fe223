"""``TrackDenoiser``: learn to turn a low-coverage ATAC track into the high-coverage track and its peaks."""

from __future__ import annotations

import json
import logging
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, TypedDict

import numpy as np
import scvi
import torch
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.strategies import Strategy
from scvi import REGISTRY_KEYS
from scvi.model.base import BaseModelClass, UnsupervisedTrainingMixin
from scvi.train import SaveCheckpoint

from chromtools._docs import doc_params
from chromtools._utils import (
    PathLike,
    atomic_output,
    box_mean,
    quiet_lightning,
    quiet_scvi,
    seed_all,
    seeded,
)
from chromtools.models._distributed import BestWeights, is_distributed
from chromtools.models._track_data import TrackDataModule, TrackSetup, make_setup, pad_for
from chromtools.models._track_module import AUPRC_METRIC, TrackDenoiserModule, TrackTrainingPlan

logger = logging.getLogger(__name__)

#: Version of the preprocessing spec layout; a saved model with another version is refused.
SPEC_VERSION = 2
#: Widths (bp) of the smoothed noisy track tried by the track calibration (1: not smoothed).
CALIBRATION_WIDTHS = (1, 51, 101, 201, 401, 801)
#: The calibration's features, in the order of its coefficients.
CALIBRATION_FEATURES = ("track", "smoothed_noisy", "peak_prob*smoothed_noisy", "peak_prob*track")


def _calibration_features(track: np.ndarray, probs: np.ndarray, x0: np.ndarray, width: int) -> np.ndarray:
    """The calibration's features of one window, ``(4, length)`` (see :meth:`TrackDenoiser.calibrate_track`)."""
    noisy = box_mean(np.expm1(x0).astype(np.float32), width)  # depth-normalised units, like the track
    return np.stack([track, noisy, probs * noisy, probs * track])


class TrackSpec(TypedDict, total=False):
    """The preprocessing spec of a :class:`TrackDenoiser` (``model.spec_``, saved with the model).

    The architecture keys are set at construction; the track means and chromosome split when the
    model is built from a :class:`TrackSetup`; ``monitor`` after training; the calibration
    (``track_scale``, ``track_calibration``, ``peak_threshold``, ``fdr*``, ``validation``) on the
    validation region.
    """

    spec_version: int
    arch: str
    arch_kwargs: dict[str, Any]
    n_channels: int
    window: int
    pad: int
    bin_size: int
    receptive_field: int
    depth_scaling: Literal["mean", "none"]
    peak_merge_gap: int
    peak_min_length: int
    smooth: int
    noisy_mean: float
    clean_mean: float
    extra_means: list[float]
    depth_ratio: float
    genome: dict[str, int]
    train_chroms: list[str]
    val_chroms: list[str]
    holdout_chroms: list[str]
    training_pairs: list[dict[str, Any]]
    monitor: str
    track_scale: float
    track_calibration: dict[str, Any]
    peak_threshold: float
    fdr_grid: list[float]
    fdr: list[float]
    fdr_n_peaks: int
    validation: dict[str, Any]


def _registry(n_channels: int, channel_names: list[str], window: int) -> dict:
    """The minimal scvi-tools registry of a window model (no AnnData behind it).

    Why hand-written: the denoiser's data are bigWig windows streamed from disk
    (:class:`~chromtools.models._track_data.TrackDataModule`), not an AnnData, so there is no
    :class:`~scvi.data.AnnDataManager` to build a registry. scvi-tools' ``BaseModelClass`` still
    reads one for ``summary_stats`` (the number of input channels, as ``n_vars``), ``save`` and
    ``load``; this dictionary holds exactly the fields those read, in scvi-tools' own layout, so
    the model keeps scvi-tools' save/load, device handling and ``train()`` loop.
    """
    return {
        "scvi_version": scvi.__version__,
        "model_name": "TrackDenoiser",
        "setup_method_name": "setup_tracks",
        "setup_args": {"window": window},
        "field_registries": {
            REGISTRY_KEYS.X_KEY: {
                "data_registry": {"attr_name": "X", "attr_key": None},
                "state_registry": {"n_obs": None, "n_vars": n_channels, "column_names": np.array(channel_names)},
                "summary_stats": {"n_vars": n_channels},
            },
            REGISTRY_KEYS.BATCH_KEY: {
                "data_registry": {"attr_name": "obs", "attr_key": "_scvi_batch"},
                "state_registry": {"categorical_mapping": np.array(["all"]), "original_key": "batch"},
                "summary_stats": {"n_batch": 1},
            },
        },
    }


class TrackDenoiser(UnsupervisedTrainingMixin, BaseModelClass):
    """Denoise low-coverage ATAC tracks and call peaks (the job of AtacWorks), on a CPU or a GPU.

    A convolutional network reads a padded window of the noisy coverage (plus optional extra
    tracks) and predicts, for every base, the high-coverage ("clean") coverage and the
    probability that the base lies in a peak. Training pairs come from
    :meth:`setup_tracks`; genome-wide inference is :func:`chromtools.tl.denoise`.

    The denoised track is in clean-track units: the network predicts coverage divided by its mean,
    and inference multiplies it back by the clean depth expected for the input (its mean coverage
    times the clean/noisy depth ratio of the training pairs, ``spec['depth_ratio']``), after the
    calibration fitted on the validation region (``spec['track_calibration']``, see
    :meth:`calibrate_track`; models saved before it existed use the scale ``spec['track_scale']``).
    The preprocessing spec (window, padding, bin size, smoothing, depth scaling, splits, threshold
    and calibrations, the training genome) travels with the model through :meth:`save`/:meth:`load`
    and is checked at inference.

    Parameters
    ----------
    setup
        Training data from :meth:`setup_tracks` (``None`` only when loading a saved model).
    registry
        Used by :meth:`load`; leave it out.
    arch
        ``'default'``: chromtools' binned dilated ResNet (computes on 16-bp bins with a 16-kb
        receptive field, decodes back to single bases), whose track is a learned per-base mix of the
        depth-scaled noisy input and the network's context estimate (``anchor=True``). ``'atacworks'``: the published AtacWorks
        ResNet (5 residual blocks of 3 convolutions, kernel 51, dilation 8, 15 channels, and a
        2-block peak head on the denoised track), for comparison.
    pad
        Context (bp) read on each side of a window; default half the receptive field, rounded up to
        the bin size, which makes predictions independent of where windows are cut.
    regression_loss
        AtacWorks' regression term on depth-normalised coverage: ``'mse'``, ``'mse_log'`` (on
        log1p) or ``'poisson'`` negative log-likelihood.
    regression_weight, pearson_weight
        Weights of AtacWorks' regression and ``1 - Pearson r`` terms, on the network's own estimate
        (for the default network, its context estimate; see :class:`~chromtools.models.TrackDenoiser`'s
        ``arch``).
    track_weight, log_weight
        Weights of the squared errors of the written track, linear and of log1p: they keep it on
        the clean scale (``1 - r`` alone is blind to scale).
    peak_weight
        Weight of the peak BCE.
    depth_scaling
        ``'mean'``: every input track is divided by its own mean coverage (in training and in
        inference), so a model applies to samples of other depths and its output is scaled by the
        training clean/noisy depth ratio; ``'none'``: every track is divided by the mean of the
        training tracks (the same numbers in training and inference), so absolute depth matters.
    random_state
        Seed of the network's initial weights (drawn from a private generator state, so the global
        torch random state is untouched); ``None`` draws from the global state.
    **arch_kwargs
        Passed to the network (e.g. ``channels=``, ``bin_size=``, ``dilations=``).

    Examples
    --------
    >>> data = ct.models.TrackDenoiser.setup_tracks(
    ...     "noisy.bw", "clean.bw", "peaks.bed", val_chroms=["chr1:8000000-10000000"], holdout_chroms=["chr2"]
    ... )
    >>> model = ct.models.TrackDenoiser(data)
    >>> model.train(max_epochs=20)
    >>> ct.tl.denoise("other_noisy.bw", model, "out/sample")
    """

    _module_cls = TrackDenoiserModule
    _training_plan_cls = TrackTrainingPlan

    def __init__(
        self,
        setup: TrackSetup | None = None,
        registry: dict | None = None,
        *,
        arch: Literal["default", "atacworks"] = "default",
        pad: int | None = None,
        regression_loss: Literal["mse", "mse_log", "poisson"] = "mse",
        regression_weight: float = 0.05,
        track_weight: float = 1.0,
        log_weight: float = 1.0,
        pearson_weight: float = 1.0,
        peak_weight: float = 3.0,
        depth_scaling: Literal["mean", "none"] = "mean",
        random_state: int | None = 0,
        **arch_kwargs,
    ):
        if setup is None and registry is None:
            msg = "Give the training data from TrackDenoiser.setup_tracks(...), or load a saved model with TrackDenoiser.load()."
            raise ValueError(msg)
        if depth_scaling not in ("mean", "none"):
            msg = f"depth_scaling must be 'mean' or 'none', got {depth_scaling!r}."
            raise ValueError(msg)
        if setup is not None:
            channel_names = ["noisy"] + [f"extra_{i}" for i in range(setup.n_channels - 1)]
            registry = _registry(setup.n_channels, channel_names, setup.window)
        super().__init__(None, registry)
        n_channels = self.summary_stats.n_vars
        with seeded(random_state):
            self.module = self._module_cls(
                n_channels,
                arch,
                regression_loss=regression_loss,
                regression_weight=regression_weight,
                track_weight=track_weight,
                log_weight=log_weight,
                pearson_weight=pearson_weight,
                peak_weight=peak_weight,
                **arch_kwargs,
            )
        net = self.module.net
        bin_size = int(net.bin_size)
        pad = pad_for(net.receptive_field, bin_size) if pad is None else int(pad)
        if pad % bin_size:
            msg = f"pad ({pad}) must be a multiple of the bin size ({bin_size})."
            raise ValueError(msg)
        if pad * 2 < net.receptive_field - 1:
            logger.warning(
                "pad=%d covers less than half the receptive field (%d bp): predictions will depend on window cuts.",
                pad,
                net.receptive_field,
            )
        if setup is not None:
            window = int(setup.window)
        else:
            assert registry is not None  # one of the two is given (checked above)
            window = int(registry["setup_args"]["window"])
        self._setup = setup
        self.spec_: TrackSpec = {
            "spec_version": SPEC_VERSION,
            "arch": arch,
            "arch_kwargs": {k: (list(v) if isinstance(v, tuple) else v) for k, v in arch_kwargs.items()},
            "n_channels": int(n_channels),
            "window": window,
            "pad": pad,
            "bin_size": bin_size,
            "receptive_field": int(net.receptive_field),
            "depth_scaling": depth_scaling,
            "peak_merge_gap": 50,
            "peak_min_length": 50,
        }
        if setup is not None:
            self.spec_.update(
                {
                    "smooth": int(setup.smooth),
                    "noisy_mean": float(np.mean([p.noisy_mean for p in setup.pairs])),
                    "clean_mean": float(np.mean([p.clean_mean for p in setup.pairs])),
                    "extra_means": [float(np.mean(m)) for m in zip(*[p.extra_means for p in setup.pairs], strict=True)],
                    "depth_ratio": float(np.mean([p.clean_mean / p.noisy_mean for p in setup.pairs])),
                    "genome": {c: int(s) for c, s in setup.genome.items()},
                    "train_chroms": list(setup.train_chroms),
                    "val_chroms": list(setup.val_chroms),
                    "holdout_chroms": list(setup.holdout_chroms),
                    "training_pairs": [
                        {
                            "noisy": str(p.noisy),
                            "clean": str(p.clean),
                            "peaks": str(p.peaks),
                            "extra": [str(e) for e in p.extra],
                        }
                        for p in setup.pairs
                    ],
                }
            )
        self.chromtools_version_ = _chromtools_version()
        self._model_summary_string = (
            f"TrackDenoiser(arch={arch!r}, parameters={sum(p.numel() for p in self.module.parameters()):,}, "
            f"window={self.spec_['window']:,}, pad={pad:,}, bin_size={bin_size})"
        )
        params = self._get_init_params(locals())
        params["non_kwargs"].pop("setup", None)
        self.init_params_ = params

    @classmethod
    def setup_tracks(
        cls,
        noisy: PathLike | Sequence[PathLike],
        clean: PathLike | Sequence[PathLike],
        peaks: PathLike | Sequence[PathLike],
        *,
        val_chroms: Sequence[str],
        holdout_chroms: Sequence[str] = (),
        train_chroms: Sequence[str] | None = None,
        extra: Sequence[Sequence[PathLike]] | None = None,
        window: int = 50_000,
        skip_empty: bool = True,
        smooth: int = 0,
    ) -> TrackSetup:
        """Register (noisy, clean, peaks) training triples and split their chromosomes.

        Parameters
        ----------
        noisy, clean, peaks
            A low-coverage bigWig, the matching high-coverage bigWig and the clean peaks
            (BED or narrowPeak) — or lists of them for several training pairs at once.
        val_chroms
            Chromosomes or regions (``'chr1:8000000-10000000'``) that choose the model: the best
            epoch (per-base AUPRC of peak calls), the peak threshold, the track scale and the FDR
            calibration.
        holdout_chroms
            Chromosomes or regions kept out of training and model choice, for your own evaluation
            (recorded in the spec so that it is known which region is still unseen).
        train_chroms
            Training chromosomes or regions; default every base not in ``val_chroms`` or
            ``holdout_chroms`` (e.g. the rest of chr1 when validation is ``'chr1:8000000-10000000'``).
            The three splits must be disjoint; a training window's context padding may read the
            noisy input across a split boundary, its loss never does.
        extra
            For each pair, a list of extra input bigWigs (same genome), fed as further channels.
        window
            Window length (bp); every chromosome is tiled, its last partial window included.
        skip_empty
            Leave out windows where the noisy track has no coverage.
        smooth
            Width (bp) of a moving average applied to the noisy input (0: none).

        Returns
        -------
        The training setup to pass to :class:`TrackDenoiser`.
        """
        as_list = lambda v: [v] if isinstance(v, str | Path) else list(v)
        setup = make_setup(
            as_list(noisy),
            as_list(clean),
            as_list(peaks),
            extra=extra,
            val_chroms=val_chroms,
            holdout_chroms=holdout_chroms,
            train_chroms=train_chroms,
            window=window,
            skip_empty=skip_empty,
            smooth=smooth,
        )
        logger.info("Track training data:\n%s", setup.summary().to_string())
        return setup

    @classmethod
    def setup_anndata(cls, adata, **kwargs) -> None:
        """Not used: the denoiser trains on bigWig windows; register them with :meth:`setup_tracks`.

        scvi-tools' ``BaseModelClass`` declares ``setup_anndata`` abstract, so the class must define
        it; an AnnData has nothing the denoiser could train on, so it says where to go instead.
        """
        msg = (
            "TrackDenoiser trains on bigWig tracks, not on an AnnData: use TrackDenoiser.setup_tracks(noisy, clean, peaks, "
            "val_chroms=...), or build pseudobulk tracks from fragments with ct.tl.training_pair(...)."
        )
        raise TypeError(msg)

    @property
    def spec(self) -> dict:
        """The preprocessing spec saved with the model (read-only copy)."""
        return json.loads(json.dumps(self.spec_))

    @doc_params
    def train(
        self,
        max_epochs: int = 20,
        *,
        batch_size: int = 4,
        lr: float = 3e-3,
        weight_decay: float = 1e-4,
        early_stopping: bool = True,
        patience: int = 6,
        jitter: bool = True,
        lr_schedule: Literal["cosine", "constant"] = "cosine",
        accelerator: str = "auto",
        devices: int | list[int] | str = "auto",
        strategy: str | Strategy = "auto",
        random_state: int = 0,
        progress: bool = True,
        **trainer_kwargs,
    ) -> None:
        """Train on the windows of :meth:`setup_tracks`, keeping the epoch with the best validation AUPRC.

        After training, the validation region also chooses the peak threshold (best one-to-one
        peak-level F1), the track scale and the FDR calibration of peak q-values (see ``spec``).

        With a DDP ``strategy`` (``"ddp"``, ``"ddp_spawn"``, ``"ddp_notebook"`` or a
        :class:`~lightning.pytorch.strategies.DDPStrategy`) and ``devices=N``, N processes train
        on disjoint shares of the training windows while each validates on all validation windows,
        so early stopping and the kept epoch are the same in every process. With ``"ddp"`` run from
        a script, Lightning starts the other processes by running the script again (guard the
        script's work with ``if __name__ == "__main__":``).

        Parameters
        ----------
        max_epochs
            Upper bound on epochs (passes over the training windows).
        batch_size
            Windows per batch.
        lr
            Learning rate of AdamW.
        weight_decay
            AdamW weight decay.
        early_stopping
            Stop when validation AUPRC has not improved for ``patience`` epochs.
        patience
            Epochs without improvement before stopping.
        jitter
            Shift training windows by a random number of bins at every access.
        lr_schedule
            ``'cosine'``: one epoch of warm-up, then cosine decay over ``max_epochs``;
            ``'constant'``: a fixed learning rate.
        {accelerator}
        {devices}
        strategy
            Lightning strategy, e.g. ``"ddp"`` with ``devices=2`` (on CPUs too, over gloo).
        {random_state}
        {progress}
        **trainer_kwargs
            Passed to the scvi-tools/Lightning trainer.
        """
        if self._setup is None:
            msg = "This model has no training data attached (it was loaded); build a new one from TrackDenoiser.setup_tracks()."
            raise RuntimeError(msg)
        quiet_lightning()
        seed_all(random_state)
        datamodule = TrackDataModule(
            self._setup,
            pad=self.spec_["pad"],
            bin_size=self.spec_["bin_size"],
            batch_size=batch_size,
            jitter=jitter,
            depth_scaling=self.spec_["depth_scaling"],
        )
        has_peaks = sum(p.labels.count(self._setup.val_chroms) for p in self._setup.pairs) > 0
        if has_peaks:
            monitor, mode = AUPRC_METRIC, "max"
        else:
            warnings.warn(
                f"The validation chromosomes {self._setup.val_chroms} carry no labelled peak, so AUPRC is undefined; "
                "the model with the lowest validation loss is kept instead. Pick validation chromosomes with peaks.",
                UserWarning,
                stacklevel=2,
            )
            monitor, mode = "validation_loss", "min"
        with tempfile.TemporaryDirectory(prefix="ct_denoiser_ckpt_") as ckpt_dir:
            distributed = is_distributed(strategy)
            checkpoint: BestWeights | SaveCheckpoint
            if distributed:  # every process would save the same checkpoint folder at once: keep the best in memory
                checkpoint = BestWeights(monitor=monitor, mode=mode)
            else:
                checkpoint = SaveCheckpoint(dirpath=ckpt_dir, monitor=monitor, mode=mode, load_best_on_end=True)
            callbacks = [checkpoint, *trainer_kwargs.pop("callbacks", [])]
            if distributed:
                # scvi-tools turns its early stopping off under DDP; Lightning's own callback agrees
                # across processes (each sees the same validation AUPRC), so we use it instead
                trainer_kwargs.update(strategy=strategy, use_distributed_sampler=False)
                if early_stopping:
                    callbacks.append(EarlyStopping(monitor=monitor, mode=mode, patience=patience))
            elif strategy != "auto":
                trainer_kwargs["strategy"] = strategy
            with quiet_scvi(), warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="early_stopping was automatically disabled")
                super().train(
                    max_epochs=max_epochs,
                    accelerator=accelerator,
                    devices=devices,
                    datamodule=datamodule,
                    early_stopping=early_stopping and not distributed,
                    early_stopping_monitor=monitor,
                    early_stopping_mode=mode,
                    early_stopping_patience=patience,
                    callbacks=callbacks,
                    enable_progress_bar=progress,
                    check_val_every_n_epoch=1,
                    plan_kwargs={
                        "optimizer": "AdamW",
                        "lr": lr,
                        "weight_decay": weight_decay,
                        "log_auprc": has_peaks,
                        "cosine_epochs": max_epochs if lr_schedule == "cosine" else None,
                    },
                    **trainer_kwargs,
                )
            # (the checkpoint is a BestWeights exactly when distributed)
            best = checkpoint.best_score if isinstance(checkpoint, BestWeights) else checkpoint.best_model_score
            self.best_score_ = float(best) if best is not None else None
        self.spec_["monitor"] = monitor
        self.module.eval()
        self._choose_on_validation(batch_size)

    @torch.inference_mode()
    def _choose_on_validation(self, batch_size: int) -> None:
        """Fit the track scale, the peak threshold and the FDR calibration on the validation region.

        The validation windows are read in genome order and stitched back into their regions, so
        peaks are called exactly as :func:`chromtools.tl.denoise` calls them. Stored in the spec:

        - ``track_scale``: the factor that minimises the squared error of the denoised track;
        - ``peak_threshold``, ``peak_merge_gap``: the probability cut and merge gap with the best
          one-to-one peak-level F1;
        - ``fdr_grid``/``fdr``: the share of validation peaks (at that cut) matching no true peak,
          as a function of a peak's highest probability (it gives the narrowPeak q-values).

        The training windows fit the weights and the validation windows choose these few numbers
        (and the epoch); neither sees the holdout region.
        """
        import pandas as pd

        from chromtools.metrics import match_peaks
        from chromtools.models._track_data import MASK_KEY, TARGET_KEY, X_KEY, TrackWindows
        from chromtools.models._track_peaks import PeakStream, fdr_curve

        setup, spec = self._setup, self.spec_
        assert setup is not None  # train() checks it before calling this
        pad = spec["pad"]
        windows = TrackWindows(
            setup,
            setup.val_windows,
            pad=pad,
            bin_size=spec["bin_size"],
            jitter=False,
            depth_scaling=spec["depth_scaling"],
        )
        grid = np.round(np.arange(0.05, 0.951, 0.05), 2)
        gaps = (0, 50, 150, 300, 600)
        rules = [(float(g), gap) for gap in gaps for g in grid]
        min_len = spec["peak_min_length"]
        streams: dict[tuple, list[PeakStream]] = {}
        sums = np.zeros(5)  # sum t*y, sum t*t, sum y, sum y*y, n over masked bases (normalised units)
        sum_t = 0.0
        n_feat = len(CALIBRATION_FEATURES)
        gram = {w: np.zeros((n_feat, n_feat)) for w in CALIBRATION_WIDTHS}  # F'F and F'y of each width
        cross = {w: np.zeros(n_feat) for w in CALIBRATION_WIDTHS}
        for b in range(0, len(windows), batch_size):
            items = [windows[i] for i in range(b, min(b + batch_size, len(windows)))]
            xs = np.stack([it[X_KEY].numpy() for it in items])
            track, probs = self.predict_windows(xs)
            for k, it in enumerate(items):
                pi, ci, start, rs, re = (int(v) for v in setup.val_windows[b + k])
                keep = it[MASK_KEY].numpy() > 0
                t, p, y = track[k][keep], probs[k][keep], it[TARGET_KEY].numpy()[keep]
                sums += (float(np.dot(t, y)), float(np.dot(t, t)), float(y.sum()), float(np.dot(y, y)), t.size)
                sum_t += float(t.sum())
                for w in CALIBRATION_WIDTHS:
                    f = _calibration_features(track[k], probs[k], xs[k, 0], w)[:, keep].astype(np.float64)
                    gram[w] += f @ f.T
                    cross[w] += f @ y
                key = (pi, setup.chrom_names[ci], rs, re)
                if key not in streams:
                    streams[key] = [
                        PeakStream(key[1], threshold=g, merge_gap=gap, min_length=min_len) for g, gap in rules
                    ]
                first = start + int(np.argmax(keep)) - pad
                for stream in streams[key]:
                    stream.skip_to(first)  # windows left out as empty count as probability 0
                    stream.feed(first, p, t)
        scale = sums[0] / max(sums[1], 1e-12)
        n = sums[4]
        mse_before = (sums[1] - 2 * sums[0] + sums[3]) / n
        mse_after = (scale**2 * sums[1] - 2 * scale * sums[0] + sums[3]) / n
        calibration = self._fit_calibration(gram, cross, sums[3], n, scale, mse_after)
        # peaks of every threshold, matched one to one against the labels of the same pair and region
        truth = {}
        for pi, chrom, rs, re in streams:
            starts, ends = setup.pairs[pi].labels._by_chrom.get(chrom, (np.zeros(0, int), np.zeros(0, int)))
            sel = (ends > rs) & (starts < re)
            truth[(pi, chrom, rs, re)] = pd.DataFrame({"chrom": chrom, "start": starts[sel], "end": ends[sel]})
        n_true = sum(len(t) for t in truth.values())
        f1, tables = [], []
        for j in range(len(rules)):
            called, matched = [], []
            for key, s in streams.items():
                peaks = s[j].finish()
                called.append(peaks)
                matched.append(match_peaks(peaks, truth[key]) >= 0)
            table = pd.concat(called, ignore_index=True)
            table["matched"] = np.concatenate(matched) if matched else np.zeros(0, bool)
            n_hit = int(table["matched"].sum())
            f1.append(2 * n_hit / max(len(table) + n_true, 1))
            tables.append(table)
        # with no labelled validation peak every F1 is 0: keep the neutral rule rather than the lowest cut
        best = int(np.argmax(f1)) if n_true else rules.index((0.5, 50))
        chosen = tables[best]
        fdr_grid = np.round(np.linspace(0, 1, 101), 2)
        spec.update(
            {
                "track_scale": float(scale),
                "track_calibration": calibration,
                "peak_threshold": rules[best][0],
                "peak_merge_gap": rules[best][1],
                "fdr_grid": fdr_grid.tolist(),
                "fdr": fdr_curve(chosen["max_prob"].to_numpy(), chosen["matched"].to_numpy(), fdr_grid).tolist(),
                "fdr_n_peaks": len(chosen),
                "validation": {
                    "regions": list(setup.val_chroms),
                    "peak_f1": float(f1[best]),
                    "peak_f1_per_threshold_and_gap": {
                        f"{g:.2f}/{gap}": round(float(v), 4) for (g, gap), v in zip(rules, f1, strict=True)
                    },
                    "n_peaks_called": len(chosen),
                    "n_peaks_true": int(n_true),
                    "track_mse_before_scale": float(mse_before),
                    "track_mse_after_scale": float(mse_after),
                    "track_mse_after_calibration": calibration["mse"],
                    "track_mean_ratio": float(sum_t / max(sums[2], 1e-12)),
                },
            }
        )
        logger.info(
            "Validation %s: peak threshold %.2f, merge gap %d bp (one-to-one peak F1 %.3f), track scale %.3f "
            "(MSE %.3g -> %.3g), calibration with %d-bp smoothing (MSE %.3g)",
            ",".join(setup.val_chroms),
            rules[best][0],
            rules[best][1],
            f1[best],
            scale,
            mse_before,
            mse_after,
            calibration["width"],
            calibration["mse"],
        )

    @staticmethod
    def _fit_calibration(
        gram: dict[int, np.ndarray], cross: dict[int, np.ndarray], yy: float, n: float, scale: float, mse_scale: float
    ) -> dict[str, Any]:
        """Least-squares coefficients of each smoothing width; the width with the lowest validation MSE.

        Falls back to the plain scale (coefficients ``[scale, 0, 0, 0]``) when no width beats it
        (or the validation region is empty).
        """
        mse_per_width: dict[str, float] = {}
        best: tuple[float, int, np.ndarray] = (mse_scale, 1, np.array([scale, 0.0, 0.0, 0.0]))
        for w in CALIBRATION_WIDTHS:
            g, c = gram[w], cross[w]
            if n <= 0 or not np.isfinite(g).all():
                continue
            ridge = 1e-9 * max(float(np.trace(g)), 1e-12) * np.eye(len(c))  # keeps collinear features solvable
            coef = np.linalg.solve(g + ridge, c)
            mse = float((yy - 2 * coef @ c + coef @ g @ coef) / n)
            mse_per_width[str(w)] = mse
            if mse < best[0]:
                best = (mse, w, coef)
        mse, width, coef = best
        return {
            "features": list(CALIBRATION_FEATURES),
            "width": int(width),
            "coef": [float(v) for v in coef],
            "mse": float(mse),
            "mse_per_width": mse_per_width,
        }

    def calibrate_track(self, track: np.ndarray, probs: np.ndarray, x: np.ndarray) -> np.ndarray:
        """The validation-fitted calibration of network tracks, in depth-normalised units.

        ``track`` and ``probs`` are :meth:`predict_windows`' outputs for the input windows ``x``
        ``(batch, channels, length)``. The calibrated track is ``max(0, a*t + b*s + c*p*s + d*p*t)``
        with the network's track ``t``, its peak probability ``p`` and the noisy input ``s``
        (depth-normalised, moving-averaged over ``spec['track_calibration']['width']`` bp). The
        coefficients and the width minimise the squared error against the clean track on the
        validation region: the network's track is trusted outside peaks, where it removes most of
        the noise, and mixed with the smoothed noisy coverage inside them, where the noisy
        coverage already tracks peak heights. Models saved before the calibration existed
        multiply by ``spec['track_scale']``.
        """
        calibration = self.spec_.get("track_calibration")
        if calibration is None:
            return track * float(self.spec_.get("track_scale", 1.0))
        coef = np.asarray(calibration["coef"], np.float32)
        width = int(calibration["width"])
        out = np.empty_like(track)
        for k in range(track.shape[0]):
            out[k] = np.tensordot(coef, _calibration_features(track[k], probs[k], x[k, 0], width), axes=1)
        return np.maximum(out, 0.0, out=out)

    @torch.inference_mode()
    def predict_windows(self, x: np.ndarray, *, calibrated: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Run the network on transformed input windows ``(batch, channels, length)``.

        Returns the denoised track in depth-normalised units and the peak probabilities, each
        ``(batch, length)``; with ``calibrated=True`` the track is passed through
        :meth:`calibrate_track` (what :func:`chromtools.tl.denoise` writes, before multiplying by
        the clean depth). Most users want :func:`chromtools.tl.denoise` instead.
        """
        self.module.eval()
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device)
        out = self.module.inference(t)
        track = out["track"].float().cpu().numpy()
        probs = torch.sigmoid(out["logits"]).float().cpu().numpy()
        if calibrated:
            track = self.calibrate_track(track, probs, x)
        return track, probs

    def save(self, dir_path: PathLike, *, overwrite: bool = False, **kwargs) -> None:
        """Save weights and preprocessing spec to ``dir_path`` (``model.pt`` and a readable ``spec.json``)."""
        dir_path = Path(dir_path)
        kwargs["save_anndata"] = False  # there is no AnnData behind a window model
        super().save(str(dir_path), overwrite=overwrite, **kwargs)
        with atomic_output(dir_path / "spec.json") as tmp:
            tmp.write_text(json.dumps(self.spec_, indent=2) + "\n")

    @classmethod
    def load(
        cls, dir_path: PathLike, *, accelerator: str = "auto", device: int | str = "auto", **kwargs
    ) -> TrackDenoiser:
        """Load a model saved with :meth:`save`, refusing specs this version cannot read."""
        dir_path = Path(dir_path)
        model_file = dir_path / "model.pt"
        if not model_file.exists():
            msg = f"No saved model in '{dir_path}' (model.pt is missing); pass the folder given to model.save()."
            raise FileNotFoundError(msg)
        attrs = torch.load(model_file, map_location="cpu", weights_only=False)["attr_dict"]
        spec = attrs.get("spec_", {})
        if spec.get("spec_version") != SPEC_VERSION:
            msg = (
                f"'{dir_path}' holds a TrackDenoiser with spec version {spec.get('spec_version')} (saved by chromtools "
                f"{attrs.get('chromtools_version_', 'unknown')}); this chromtools ({_chromtools_version()}) reads "
                f"version {SPEC_VERSION}. Retrain the model or use the chromtools version that saved it."
            )
            raise ValueError(msg)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*no saved anndata.*")
            with quiet_scvi():
                model = super().load(str(dir_path), adata=None, accelerator=accelerator, device=device, **kwargs)
        model.module.eval()
        return model


def _chromtools_version() -> str:
    from chromtools import __version__

    return __version__
