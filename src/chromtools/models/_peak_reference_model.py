"""PeakReferenceModel: the scvi-tools model base of chromtools' reference models (training, reference store, load).

The two public models (:class:`~chromtools.models.PeakTRVAE` and :class:`~chromtools.models.PeakSCANVI`)
share one :class:`~scvi.module.base.BaseModuleClass`, :class:`~chromtools.models.PeakVAEModule`, and
this model base, built on scvi-tools' ``BaseModelClass`` + ``ArchesMixin`` so that
``load_query_data`` (architecture surgery) works on them like on any scvi-tools model.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from anndata import AnnData
from scvi.model.base import ArchesMixin, BaseModelClass, UnsupervisedTrainingMixin, VAEMixin

from chromtools._utils import quiet_lightning, quiet_scvi, quiet_training_warnings, seed_all
from chromtools.models._distributed import BestWeights
from chromtools.models._input_checks import compute_idf
from chromtools.models._peak_training import ModuleModeCallback, PeakTrainingPlan, default_max_epochs
from chromtools.models._peak_vae import BATCH_KEY, LABELS_KEY, X_KEY, PeakVAEModule
from chromtools.models._saved_models import check_saved_reference, set_model_format


class PeakReferenceModel(ArchesMixin, VAEMixin, UnsupervisedTrainingMixin, BaseModelClass):
    """Base class of chromtools' reference models (not used directly).

    Adds to scvi-tools' model base: checks of the input data, training defaults chosen on real
    scATAC (early stopping, epochs by data size, KL warm-up), a version gate on load, and a
    stored copy of the reference's latent codes and labels (:meth:`store_reference`) so that a
    saved reference can map and annotate a query without the reference data.
    """

    _module_cls = PeakVAEModule
    _training_plan_cls = PeakTrainingPlan

    def _init_common(self, adata, module_kwargs: dict, n_labels: int) -> None:
        n_batch = self.summary_stats.n_batch
        idf = None
        if adata is not None and module_kwargs.get("input_transform", "tfidf") == "tfidf":
            idf = compute_idf(self.adata_manager.get_from_registry(X_KEY))
        self.module = self._module_cls(
            n_input=self.summary_stats.n_vars, n_batch=n_batch, n_labels=n_labels, idf=idf, **module_kwargs
        )
        set_model_format(self)
        if not hasattr(self, "reference_"):
            self.reference_: dict[str, Any] | None = None  # {"latent": ndarray, "obs": DataFrame}

    # -- training ------------------------------------------------------------------------------
    def train(
        self,
        max_epochs: int | None = None,
        *,
        lr: float = 3e-3,
        batch_size: int = 256,
        early_stopping: bool = True,
        early_stopping_patience: int = 5,
        early_stopping_monitor: str = "validation_loss",
        n_epochs_kl_warmup: int | None = 10,
        weight_decay: float = 1e-6,
        train_size: float = 0.9,
        accelerator: str = "auto",
        devices: int | str | list[int] = "auto",
        random_state: int | None = 0,
        progress: bool = False,
        plan_kwargs: dict | None = None,
        **trainer_kwargs,
    ):
        """Train the model (train mode, early stopping on the validation loss, best weights kept).

        Parameters
        ----------
        max_epochs
            Upper bound on epochs; default by data size (:func:`default_max_epochs`).
        lr
            Adam learning rate.
        batch_size
            Minibatch size.
        early_stopping
            Stop when the monitored validation metric has not improved for
            ``early_stopping_patience`` epochs, and restore the best epoch's weights.
        early_stopping_patience
            Epochs without improvement before stopping.
        early_stopping_monitor
            Validation metric to watch (``'validation_loss'``, ``'elbo_validation'``...); the
            weights of its best epoch are restored at the end.
        n_epochs_kl_warmup
            Epochs over which the KL weight ramps from 0 to 1.
        weight_decay
            Adam's L2 penalty (reference training only; surgery always uses 0).
        train_size
            Fraction of cells used for training; the rest is the validation set.
        accelerator, devices
            Lightning accelerator and devices.
        random_state
            Seed of initialisation, data split and minibatch order.
        progress
            Show Lightning's progress bar.
        plan_kwargs
            Further arguments of :class:`~scvi.train.TrainingPlan`.
        **trainer_kwargs
            Further arguments of :class:`~scvi.train.Trainer`.
        """
        seed_all(random_state)
        quiet_lightning(logging.ERROR)
        if max_epochs is None:
            max_epochs = default_max_epochs(self.adata.n_obs)
        plan = {"lr": lr, "weight_decay": weight_decay, "n_epochs_kl_warmup": n_epochs_kl_warmup}
        plan.update(plan_kwargs or {})
        callbacks = list(trainer_kwargs.pop("callbacks", []) or [])
        mode = trainer_kwargs.pop("module_mode", "train")
        callbacks.append(ModuleModeCallback(mode))
        if early_stopping and train_size < 1.0:
            from lightning.pytorch.callbacks import EarlyStopping

            callbacks.append(
                EarlyStopping(
                    monitor=early_stopping_monitor, patience=early_stopping_patience, mode="min", verbose=False
                )
            )
            callbacks.append(BestWeights(early_stopping_monitor))
        with quiet_training_warnings(), quiet_scvi():
            super().train(
                max_epochs=max_epochs,
                accelerator=accelerator,
                devices=devices,
                train_size=train_size,
                batch_size=batch_size,
                early_stopping=False,
                plan_kwargs=plan,
                callbacks=callbacks,
                enable_progress_bar=progress,
                check_val_every_n_epoch=1,
                **trainer_kwargs,
            )
        self.module.eval()
        return self

    # -- reference store -------------------------------------------------------------------
    def store_reference(
        self, adata: AnnData | None = None, *, obs_keys: Sequence[str] | None = None, batch_size: int = 1024
    ) -> np.ndarray:
        """Keep the reference cells' latent codes and labels inside the model (saved with it).

        A saved reference then annotates a query with :func:`chromtools.tl.transfer_labels`
        without the reference data.

        Parameters
        ----------
        adata
            The reference data (default: the data the model was set up with).
        obs_keys
            ``obs`` columns to keep (default: the labels and batch columns the model was set up with).
        batch_size
            Minibatch size of the encoder pass.

        Returns
        -------
        The latent codes (cells × latent), also in ``model.reference_['latent']``.
        """
        import pandas as pd

        adata = self.adata if adata is None else adata
        latent = self.get_latent_representation(adata, batch_size=batch_size).astype(np.float32)
        if obs_keys is None:
            obs_keys = [k for k in (self._original_key(BATCH_KEY), self._original_key(LABELS_KEY)) if k]
        obs = pd.DataFrame(index=adata.obs_names.copy())
        for k in obs_keys:
            if k not in adata.obs:
                msg = f"obs column '{k}' is not in the reference data; pass obs_keys= with existing columns."
                raise KeyError(msg)
            obs[k] = adata.obs[k].to_numpy()
        self.reference_ = {"latent": latent, "obs": obs}
        return latent

    def _original_key(self, registry_key: str) -> str | None:
        try:
            return self.adata_manager.get_state_registry(registry_key).get("original_key")
        except (KeyError, AttributeError):
            try:
                return self.registry_["field_registries"][registry_key]["state_registry"].get("original_key")
            except KeyError:
                return None

    # -- save / load with a version gate -----------------------------------------------------
    @classmethod
    def _check_saved_version(cls, dir_path: str | os.PathLike, prefix: str | None = None) -> None:
        check_saved_reference(dir_path, prefix=prefix, model_name=cls.__name__)

    @classmethod
    def load(cls, dir_path, adata=None, *, accelerator="auto", device="auto", prefix=None, **kwargs):
        """Load a saved model, refusing one saved by an incompatible chromtools version."""
        cls._check_saved_version(dir_path, prefix)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*no saved anndata.*")
            return super().load(
                str(dir_path), adata=adata, accelerator=accelerator, device=device, prefix=prefix, **kwargs
            )

    @classmethod
    def load_query_data(cls, adata=None, reference_model=None, **kwargs):
        """Architecture surgery (:meth:`scvi.model.base.ArchesMixin.load_query_data`), version-checked."""
        if isinstance(reference_model, str | os.PathLike):
            cls._check_saved_version(reference_model)
            reference_model = str(reference_model)
        return super().load_query_data(adata=adata, reference_model=reference_model, **kwargs)
