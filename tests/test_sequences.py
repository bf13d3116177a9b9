"""ImageNet-P style perturbation sequences and the flip probability."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustlab.errors import ConfigError
from robustlab.perturbations.sequences import (
    DEFAULT_STEPS,
    FLIP_REFERENCE,
    SEQUENCES,
    flip_probability,
    make_sequence,
    sequence_predictions,
)
from robustlab.randomness import ImageStreams


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(b: int = 3, c: int = 3, h: int = 32, w: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, c, h, w, generator=_gen(seed)) * 0.8 + 0.1


class _MeanThreshold(nn.Module):
    """Predicts class 1 when the mean pixel value exceeds 0.5, else class 0 (no parameters)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.mean(dim=(1, 2, 3))
        return torch.stack([0.5 - m, m - 0.5], dim=1)


class _Constant(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.tensor([0.1, 2.0, -1.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(x.shape[0], -1)


@pytest.mark.parametrize("kind", sorted(SEQUENCES))
def test_frame_zero_is_clean_and_later_frames_differ(kind):
    x = _images(2, 1, 28, 30)
    seq = make_sequence(x, kind, frames=5, generator=_gen(1))
    assert seq.shape == (5, 2, 1, 28, 30)
    assert torch.equal(seq[0], x)
    for t in range(1, 5):
        assert not torch.equal(seq[t], x)
    assert seq.min().item() >= 0 and seq.max().item() <= 1


def test_translate_frame_t_is_shifted_t_pixels():
    x = _images()
    seq = make_sequence(x, "translate", frames=10)
    for t in range(10):
        assert torch.equal(seq[t][..., t:], x[..., : 32 - t])
        assert torch.all(seq[t][..., :t] == 0)
    left = make_sequence(x, "translate", frames=4, step=-2)
    assert torch.equal(left[3][..., : 32 - 6], x[..., 6:])


def test_rotate_steps_compose_to_rot90():
    x = _images()
    seq = make_sequence(x, "rotate", frames=3, step=90.0)
    torch.testing.assert_close(seq[1], torch.rot90(x, 1, dims=(-2, -1)), atol=1e-5, rtol=0)
    torch.testing.assert_close(seq[2], torch.rot90(x, 2, dims=(-2, -1)), atol=1e-5, rtol=0)


def test_zoom_frame_t_scales_about_centre():
    xs = torch.arange(32, dtype=torch.float32) / 32
    x = xs.expand(1, 3, 32, 32).clone()  # horizontal ramp f(x) = x / 32
    seq = make_sequence(x, "zoom", frames=4, step=0.1)
    c = 15.5
    for t in range(4):
        src = c + (torch.arange(32.0) - c) / (1 + 0.1 * t)  # bilinear is exact on a ramp
        torch.testing.assert_close(seq[t, 0, 0], (src / 32).expand(32, 32), atol=1e-5, rtol=0)


def test_brightness_adds_t_steps_and_clips():
    x = _images()
    seq = make_sequence(x, "brightness", frames=6, step=0.1)
    for t in range(6):
        torch.testing.assert_close(seq[t], (x + 0.1 * t).clamp(0, 1), atol=1e-6, rtol=0)
    assert seq[5].max().item() == 1.0


def test_gaussian_noise_sequence_grows_with_fresh_noise_and_is_seeded():
    x = torch.full((2, 3, 32, 32), 0.5)
    seq = make_sequence(x, "gaussian_noise", frames=5, step=0.02, generator=_gen(2))
    noise = seq - x
    for t in range(1, 5):
        assert noise[t].std().item() == pytest.approx(0.02 * t, rel=0.05)
    # fresh draw per frame: successive noise fields are uncorrelated, not rescaled copies
    corr = torch.corrcoef(torch.stack([noise[1].flatten(), noise[2].flatten()]))[0, 1]
    assert abs(corr.item()) < 0.05
    again = make_sequence(x, "gaussian_noise", frames=5, step=0.02, generator=_gen(2))
    other = make_sequence(x, "gaussian_noise", frames=5, step=0.02, generator=_gen(3))
    assert torch.equal(seq, again)
    assert not torch.equal(seq, other)
    assert FLIP_REFERENCE["gaussian_noise"] == "first"


def test_sequence_is_batched_per_sample():
    x = _images(3)
    for kind in ("translate", "rotate", "zoom"):
        seq = make_sequence(x, kind, frames=4, step=DEFAULT_STEPS[kind] * 3)
        for i in range(3):
            torch.testing.assert_close(
                seq[:, i],
                make_sequence(x[i : i + 1], kind, frames=4, step=DEFAULT_STEPS[kind] * 3)[:, 0],
            )


@pytest.mark.parametrize(
    ("table", "previous", "first"),
    [
        ([[0, 0], [0, 1], [1, 1]], 2 / 4, 3 / 4),
        ([[1, 2], [3, 2], [1, 2], [1, 2]], 2 / 6, 1 / 6),
        ([[4, 4, 4]] * 5, 0.0, 0.0),
        ([[0], [1], [0], [1], [0]], 1.0, 2 / 4),
    ],
)
def test_flip_probability_on_hand_built_tables(table, previous, first):
    preds = torch.tensor(table)
    assert flip_probability(preds) == pytest.approx(previous)
    assert flip_probability(preds, reference="first") == pytest.approx(first)


def test_flip_probability_rejects_bad_input():
    with pytest.raises(ConfigError, match="T >= 2"):
        flip_probability(torch.tensor([[1, 2, 3]]))
    unknown = "unknown flip reference 'next'; valid choices: first, previous"
    with pytest.raises(ConfigError, match=unknown):
        flip_probability(torch.zeros(3, 2, dtype=torch.long), reference="next")


def test_constant_model_never_flips():
    model = _Constant()
    seq = make_sequence(_images(4), "gaussian_noise", frames=6, step=0.1, generator=_gen(4))
    preds = sequence_predictions(model, seq, batch_size=5)
    assert flip_probability(preds) == 0.0 and flip_probability(preds, reference="first") == 0.0
    assert torch.equal(sequence_predictions(model, seq), torch.ones(6, 4, dtype=torch.long))


def test_threshold_model_flip_rate_on_brightness_sequence():
    # constant images at 0.32, 0.43, 0.7 brightened by 0.05 per frame over 10 frames:
    # the mean crosses 0.5 once for the first two (frames 4 and 2) and never for the third
    x = torch.tensor([0.32, 0.43, 0.7])[:, None, None, None].expand(3, 3, 28, 28).clone()
    seq = make_sequence(x, "brightness", frames=10, step=0.05)
    model = _MeanThreshold().train()
    preds = sequence_predictions(model, seq, batch_size=7)
    assert model.training  # mode restored
    assert preds[:, 0].tolist() == [0] * 4 + [1] * 6
    assert preds[:, 1].tolist() == [0] * 2 + [1] * 8
    assert preds[:, 2].tolist() == [1] * 10
    assert flip_probability(preds) == pytest.approx(2 / 27)
    assert flip_probability(preds, reference="first") == pytest.approx(14 / 27)


def test_make_sequence_rejects_bad_config():
    with pytest.raises(ConfigError, match="valid choices: brightness, gaussian_noise, rotate"):
        make_sequence(_images(), "shear")
    with pytest.raises(ConfigError, match="frames must be an integer >= 2"):
        make_sequence(_images(), "translate", frames=1)
    with pytest.raises(ConfigError, match="step must be >= 0"):
        make_sequence(_images(), "gaussian_noise", step=-0.1)
    shape = r"perturbation sequences take float images of shape \(B, C, H, W\) with C = 1 or 3"
    with pytest.raises(ConfigError, match=shape + r", got \(2, 2, 8, 8\)"):
        make_sequence(torch.rand(2, 2, 8, 8), "brightness")
    with pytest.raises(ConfigError, match=r"got dtype torch.uint8; convert uint8 with .*uint8"):
        make_sequence(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), "brightness")


def test_noise_sequence_with_per_image_streams_follows_the_image_not_the_batch():
    def streams(indices):
        return ImageStreams.keyed((0, "sequence"), torch.tensor(indices), "cpu")

    x = torch.full((4, 3, 48, 48), 0.5)
    step = 0.03
    seq = make_sequence(x, "gaussian_noise", frames=4, step=step, generator=streams([0, 1, 2, 3]))
    alone = make_sequence(
        x[[2, 0]], "gaussian_noise", frames=4, step=step, generator=streams([2, 0])
    )
    assert torch.equal(alone[:, 0], seq[:, 2]) and torch.equal(alone[:, 1], seq[:, 0])
    noise = (seq - x).flatten(2)  # (T, B, pixels)
    # frame t of every image has σ = t·step, and fresh noise per frame and per image
    torch.testing.assert_close(
        noise[1:].std(2), step * torch.arange(1.0, 4.0)[:, None].expand(3, 4), rtol=0.05, atol=0
    )
    corr = torch.corrcoef(noise[1:].flatten(0, 1))
    assert (corr - torch.eye(12)).abs().max() < 0.05


def test_predictions_run_in_eval_mode_and_give_each_submodule_its_own_mode_back():
    """Frames are scored with dropout off (eval mode); afterwards a part kept in eval mode on
    purpose (a frozen teacher inside a training model) stays in eval mode."""

    class _DropoutThenThreshold(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.dropout = nn.Dropout(p=0.9)
            self.frozen = _MeanThreshold().eval()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.frozen(self.dropout(x))

    model = _DropoutThenThreshold().train()
    model.frozen.eval()
    x = torch.full((3, 1, 8, 8), 0.7)
    seq = make_sequence(x, "brightness", frames=4, step=0.05)
    torch.manual_seed(0)
    assert torch.equal(sequence_predictions(model, seq), torch.ones(4, 3, dtype=torch.long))
    assert model.training and model.dropout.training and not model.frozen.training
