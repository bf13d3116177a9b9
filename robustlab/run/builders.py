"""A run's parts built from its composed config: data, model and method (the same calls for
``robustlab-train``, ``robustlab-eval`` and the benchmarks)."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from robustlab.data import ImageDataModule, build_datamodule
from robustlab.methods import ERM, build_method
from robustlab.models import ImageClassifier, build_classifier


def config_container(cfg: DictConfig) -> dict:
    """The config as plain containers, resolved when possible."""
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # an unresolvable interpolation is itself reported as the error
        return OmegaConf.to_container(cfg, resolve=False)


def build_data(cfg: DictConfig) -> ImageDataModule:
    """The datamodule ``cfg.data`` describes, prepared and set up for fitting."""
    kwargs = OmegaConf.to_container(cfg.data, resolve=True)
    datamodule = build_datamodule(kwargs.pop("name"), **kwargs)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def build_model(cfg: DictConfig, datamodule: ImageDataModule) -> ImageClassifier:
    """The classifier ``cfg.model`` describes, sized and normalised for the data."""
    model_kwargs = OmegaConf.to_container(cfg.model, resolve=True)
    return build_classifier(
        model_kwargs.pop("name"),
        num_classes=datamodule.num_classes,
        in_channels=datamodule.in_channels,
        mean=datamodule.mean,
        std=datamodule.std,
        **model_kwargs,
    )


def build_run_method(cfg: DictConfig, datamodule: ImageDataModule) -> ERM:
    """The method (LightningModule) around a freshly initialised model fitted to the data."""
    model = build_model(cfg, datamodule)
    method_kwargs = OmegaConf.to_container(cfg.method, resolve=True)
    method = build_method(method_kwargs.pop("name"), model, **method_kwargs)
    method.run_config = config_container(cfg)
    return method
