"""How varied a set of (generated) images is: the CLIP synset entropy.

HydraMix (Reinders, Schubert & Rosenhahn, 2025) scores augmented sets by a "CLIP Synset
Entropy" whose exact definition is not confirmed. ASSUMPTION — the version implemented here:

1. zero-shot CLIP (Radford et al., ICML 2021) over WordNet synsets: synset s is described by
   the prompt ``"a photo of a {lemma}."`` with its first lemma (underscores as spaces);
2. each image's predicted synset is ``argmax_s cos(f_img(x), f_txt(prompt_s))``;
3. with ``p_s`` the share of the set's images predicted as s, the score is the entropy
   ``H = −Σ_s p_s log p_s`` in nats, also reported normalised, ``H / log S`` over the S
   synsets offered (0: every image looks like one thing; 1: spread evenly over all synsets).

Optional extra: ``open_clip_torch`` (models and their tokenizer). Weights are never fetched
here: :func:`load_clip` takes a local weights file. Synsets come from nltk's WordNet corpus when
it is installed locally (:func:`wordnet_synsets`), or from a list file (:func:`read_synsets`).

Command line::

    python -m robustlab.reporting.diversity --images mixes.npz --model ViT-B-32 \\
        --pretrained ~/weights/ViT-B-32-openai.bin --synsets synsets.txt

``--images``: an ``.npz`` with uint8 ``images`` (N, H, W, C) as ``data=npz`` reads, or a folder
of image files; ``--wordnet`` instead of ``--synsets`` offers all WordNet noun synsets.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustlab.errors import ConfigError, RobustlabError, check

#: the prompt of a synset, filled with its lemma
PROMPT = "a photo of a {}."
#: CLIP's image normalisation (OpenAI's training statistics), unless the model says otherwise
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_SYNSET_NAME = re.compile(r"^(?P<lemma>.+)\.[a-z]\.\d+$")  # WordNet names, e.g. "hot_dog.n.01"
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff"}

Synset = tuple[str, str]  # (id, lemma)
Tokenizer = Callable[[list[str]], Tensor]


@dataclass(frozen=True)
class SynsetEntropy:
    """The score of one image set: ``entropy`` (nats), ``normalized`` (``entropy / log S``;
    None for S = 1), the image and synset counts, and how many images each predicted synset
    took (``counts``, most frequent first, only synsets predicted at least once)."""

    entropy: float
    normalized: float | None
    images: int
    synsets: int
    counts: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {
            "clip_synset_entropy": self.entropy,
            "clip_synset_entropy_normalized": self.normalized,
            "images": self.images,
            "synsets": self.synsets,
            "predicted_synsets": len(self.counts),
            "counts": self.counts,
        }


def as_synset(entry: str | Synset) -> Synset:
    """``(id, lemma)`` of a synset given as a pair, a WordNet name (``"hot_dog.n.01"`` ->
    lemma ``"hot dog"``) or a plain word."""
    if isinstance(entry, tuple):
        return str(entry[0]), str(entry[1])
    name = str(entry).strip()
    found = _SYNSET_NAME.match(name)
    return name, (found.group("lemma") if found else name).replace("_", " ")


def read_synsets(path: str | os.PathLike) -> list[Synset]:
    """Synsets from a text file, one per line: ``id<TAB>lemma``, or a WordNet name / word alone
    (see :func:`as_synset`); blank lines and ``#`` comments are skipped."""
    file = Path(path)
    check(file.is_file(), f"--synsets {file}: no such file; one synset per line (id<TAB>lemma)")
    synsets = []
    for line in file.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            key, tab, lemma = line.partition("\t")
            synsets.append((key.strip(), lemma.strip()) if tab else as_synset(key))
    check(len(synsets) >= 2, f"--synsets {file} lists {len(synsets)} synset(s); give at least 2")
    return synsets


def wordnet_synsets(pos: str = "n") -> list[Synset]:
    """Every WordNet synset of part of speech ``pos`` (nouns: 82,115 in WordNet 3.0) from
    nltk's corpus, which must already be on this machine (nothing is downloaded)."""
    try:
        from nltk.corpus import wordnet
    except ImportError:
        raise ConfigError(
            "--wordnet needs nltk with its WordNet corpus (pip install nltk; python -m "
            "nltk.downloader wordnet); or pass --synsets FILE"
        ) from None
    try:
        found = list(wordnet.all_synsets(pos))
    except LookupError:
        raise ConfigError(
            "nltk's WordNet corpus is not on this machine: python -m nltk.downloader wordnet "
            "(where a network is available), or pass --synsets FILE"
        ) from None
    return [(s.name(), s.lemmas()[0].name().replace("_", " ")) for s in found]


def entropy_of_counts(counts: Tensor) -> float:
    """``−Σ p log p`` (nats) of the distribution ``p = counts / Σ counts``."""
    p = counts.double() / counts.sum()
    p = p[p > 0]
    return float(-(p * p.log()).sum())


def clip_inputs(
    images: Tensor,
    size: int | tuple[int, int],
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
) -> Tensor:
    """CLIP's input from images (N, C, H, W) — uint8, or float in [0, 1]: grey as RGB, the
    shorter side resized to ``size`` (bicubic, antialiased; skipped at that size already),
    centre-cropped to ``size`` × ``size`` and normalised by ``mean`` / ``std``."""
    check(images.dim() == 4, f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    check(x.shape[1] == 3, f"images must have 1 or 3 channels, got {x.shape[1]}")
    height, width = size if isinstance(size, tuple) else (size, size)
    if x.shape[-2:] != (height, width):
        scale = max(height / x.shape[-2], width / x.shape[-1])
        resized = (max(height, round(x.shape[-2] * scale)), max(width, round(x.shape[-1] * scale)))
        x = F.interpolate(x, size=resized, mode="bicubic", antialias=True, align_corners=False)
        top, left = (resized[0] - height) // 2, (resized[1] - width) // 2
        x = x[..., top : top + height, left : left + width].clamp(0, 1)
    mean_t = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - mean_t) / std_t


def _preprocess_cfg(model: nn.Module) -> tuple[tuple[int, int], Sequence[float], Sequence[float]]:
    """Input size, mean and std of an open_clip model (its ``visual`` tower)."""
    visual = model.visual
    size = visual.image_size
    size = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
    cfg = getattr(visual, "preprocess_cfg", None) or {}
    return size, cfg.get("mean") or CLIP_MEAN, cfg.get("std") or CLIP_STD


@torch.no_grad()
def text_embeddings(
    model: nn.Module, tokenizer: Tokenizer, synsets: Sequence[Synset], batch_size: int = 1024
) -> Tensor:
    """Unit-norm text embeddings (S, D) of the synsets' prompts."""
    device = next(model.parameters()).device
    prompts = [PROMPT.format(lemma) for _, lemma in synsets]
    chunks = [
        F.normalize(model.encode_text(tokenizer(prompts[i : i + batch_size]).to(device)), dim=-1)
        for i in range(0, len(prompts), batch_size)
    ]
    return torch.cat(chunks).float()


@torch.no_grad()
def predicted_synsets(
    images: Tensor | Sequence[Tensor],
    model: nn.Module,
    texts: Tensor,
    batch_size: int = 256,
) -> Tensor:
    """Index (N,) of each image's zero-shot synset: argmax of the cosine similarity between its
    CLIP image embedding and the unit-norm ``texts`` (S, D). ``images``: a batch (N, C, H, W)
    or a list of (C, H, W) images of any sizes (each resized and cropped on its own)."""
    device = next(model.parameters()).device
    size, mean, std = _preprocess_cfg(model)
    picks = []
    for i in range(0, len(images), batch_size):
        chunk = images[i : i + batch_size]
        if isinstance(chunk, Tensor):
            x = clip_inputs(chunk.to(device), size, mean, std)
        else:
            x = torch.cat([clip_inputs(im[None].to(device), size, mean, std) for im in chunk])
        features = F.normalize(model.encode_image(x).float(), dim=-1)
        picks.append((features @ texts.to(device).T).argmax(dim=1).cpu())
    return torch.cat(picks) if picks else torch.zeros(0, dtype=torch.long)


def synset_entropy(
    images: Tensor | Sequence[Tensor],
    model: nn.Module,
    tokenizer: Tokenizer,
    synsets: Sequence[str | Synset],
    *,
    batch_size: int = 256,
) -> SynsetEntropy:
    """The CLIP synset entropy of ``images`` (ASSUMPTION: see the module doc): entropy in nats
    of the distribution of the images' zero-shot synsets, and normalised by log S.

    ``model``: an open_clip model (``encode_image`` / ``encode_text``, ``visual.image_size``),
    in eval mode; ``tokenizer``: its tokenizer (list of prompts -> token ids); ``synsets``:
    ``(id, lemma)`` pairs, WordNet names or words. Per-image predictions, so the score does not
    depend on ``batch_size``."""
    pairs = [as_synset(s) for s in synsets]
    check(len(pairs) >= 1, "synset_entropy needs at least one synset")
    check(len(images) >= 1, "synset_entropy needs at least one image")
    model.eval()
    texts = text_embeddings(model, tokenizer, pairs)
    picks = predicted_synsets(images, model, texts, batch_size)
    counts = torch.bincount(picks, minlength=len(pairs))
    entropy = entropy_of_counts(counts)
    order = sorted((int(-c), pairs[i][0]) for i, c in enumerate(counts.tolist()) if c > 0)
    return SynsetEntropy(
        entropy=entropy,
        normalized=entropy / math.log(len(pairs)) if len(pairs) > 1 else None,
        images=len(picks),
        synsets=len(pairs),
        counts={name: -negative for negative, name in order},
    )


def load_clip(model_name: str, pretrained: str | os.PathLike, device: str = "cpu"):
    """``(model, tokenizer)`` of open_clip architecture ``model_name`` with the weights in the
    local file ``pretrained`` (open_clip's pretrained tags would download: not here)."""
    try:
        import open_clip
    except ImportError:
        raise ConfigError(
            "the CLIP synset entropy needs open_clip: pip install 'robustlab[diversity]' "
            "(or pip install open_clip_torch)"
        ) from None
    weights = Path(pretrained).expanduser()
    check(
        weights.is_file(),
        f"--pretrained {pretrained}: no such file; give a local CLIP weights file (open_clip's "
        "pretrained tags download weights, which this command never does)",
    )
    check(
        model_name in open_clip.list_models(),
        f"--model {model_name} is not an open_clip architecture; e.g. ViT-B-32, ViT-L-14",
    )
    try:
        model = open_clip.create_model(model_name, pretrained=str(weights), device=device)
    except RuntimeError as err:  # weights of another architecture
        message = str(err).strip().splitlines()[0][:300]
        raise ConfigError(f"--pretrained {weights} does not fit {model_name}: {message}") from None
    return model.eval(), open_clip.get_tokenizer(model_name)


def load_images(path: str | os.PathLike) -> Tensor | list[Tensor]:
    """uint8 images from an ``.npz`` (key ``images``, (N, H, W, C) or (N, H, W)) as one
    (N, C, H, W) tensor, or from a folder of image files (sorted by name) as a list of
    (3, H, W) tensors."""
    source = Path(path)
    if source.is_dir():
        from PIL import Image

        files = sorted(p for p in source.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
        check(bool(files), f"--images {source}: no image files ({', '.join(_IMAGE_SUFFIXES)})")
        arrays = [np.asarray(Image.open(p).convert("RGB")) for p in files]
        return [torch.from_numpy(a.copy()).permute(2, 0, 1) for a in arrays]
    check(source.is_file(), f"--images {source}: no such file or folder")
    try:
        with np.load(source) as archive:
            images = np.asarray(archive["images"])
    except (OSError, ValueError, KeyError) as err:
        raise ConfigError(
            f"--images {source}: not an .npz with uint8 'images' (N, H, W, C): {err}"
        ) from None
    check(images.ndim in (3, 4), f"--images {source}: 'images' must be (N, H, W[, C])")
    images = images[..., None] if images.ndim == 3 else images
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m robustlab.reporting.diversity``: print the score as JSON; a user error prints
    one line and returns 2."""
    parser = argparse.ArgumentParser(
        prog="python -m robustlab.reporting.diversity",
        description="CLIP synset entropy of an image set (an assumed definition; see the docs).",
    )
    parser.add_argument("--images", required=True, help=".npz with uint8 images, or a folder")
    parser.add_argument("--model", default="ViT-B-32", help="open_clip architecture")
    parser.add_argument("--pretrained", required=True, help="local CLIP weights file")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--synsets", help="synset list file: id<TAB>lemma, or WordNet names")
    which.add_argument("--wordnet", action="store_true", help="all WordNet nouns (nltk, local)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    try:
        check(args.batch_size >= 1, f"--batch-size must be >= 1, got {args.batch_size}")
        synsets = wordnet_synsets() if args.wordnet else read_synsets(args.synsets)
        images = load_images(args.images)
        model, tokenizer = load_clip(args.model, args.pretrained, args.device)
        score = synset_entropy(images, model, tokenizer, synsets, batch_size=args.batch_size)
    except RobustlabError as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"diversity: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    text = json.dumps(
        {**score.to_dict(), "model": args.model, "pretrained": str(args.pretrained)}, indent=2
    )
    print(text)
    if args.output is not None:
        args.output.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
