"""CLIP synset entropy (an assumed definition, robustlab.reporting.diversity) on a tiny randomly
initialised open_clip model: predictions and entropies checked against hand computations."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from robustlab.reporting.diversity import main, read_synsets, synset_entropy

open_clip = pytest.importorskip("open_clip")

#: a tiny CLIP: 1-layer ViT on 32 px images and a 1-layer text transformer, random weights
TINY = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
WORDS = ["dog", "cat", "car", "tree", "house", "bird", "fish", "boat"]


@pytest.fixture(scope="module")
def clip():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = open_clip.model.CLIP(**TINY).eval()
    return model, open_clip.tokenizer.SimpleTokenizer(context_length=16)


def colour_images(n: int) -> torch.Tensor:
    """n flat-colour 32 × 32 images (uint8): random RGB values, one per image."""
    colours = torch.randint(0, 256, (n, 3, 1, 1), generator=torch.Generator().manual_seed(1))
    return colours.expand(n, 3, 32, 32).to(torch.uint8).contiguous()


def by_hand(clip, images: torch.Tensor) -> torch.Tensor:
    """argmax over the words of cos(image embedding, embedding of "a photo of a {word}.")."""
    model, tokenizer = clip
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        text = model.encode_text(tokenizer([f"a photo of a {w}." for w in WORDS]))
        image = model.encode_image((images.float() / 255 - mean) / std)
    text = text / text.norm(dim=1, keepdim=True)
    image = image / image.norm(dim=1, keepdim=True)
    return (image @ text.T).argmax(dim=1)


def hand_entropy(labels: torch.Tensor) -> float:
    counts = torch.bincount(labels).tolist()
    n = sum(counts)
    return -sum(c / n * math.log(c / n) for c in counts if c)


def test_entropy_of_the_predicted_synsets_matches_a_hand_count(clip):
    images = colour_images(64)
    picks = by_hand(clip, images)
    assert len(set(picks.tolist())) >= 3, "the tiny model should predict several synsets"
    score = synset_entropy(images, *clip, WORDS, batch_size=64)
    assert score.entropy == pytest.approx(hand_entropy(picks), abs=1e-12)
    assert score.normalized == pytest.approx(hand_entropy(picks) / math.log(len(WORDS)))
    assert (score.images, score.synsets) == (64, len(WORDS))
    assert score.counts == {WORDS[k]: c for k, c in enumerate(torch.bincount(picks).tolist()) if c}
    assert list(score.counts.values()) == sorted(score.counts.values(), reverse=True)
    # per-image predictions: the batch size changes nothing; a list of images is the same set
    assert synset_entropy(images, *clip, WORDS, batch_size=5) == score
    assert synset_entropy(list(images), *clip, WORDS, batch_size=7) == score


def test_one_synset_gives_0_and_m_equally_used_synsets_give_log_m(clip):
    images = colour_images(64)
    picks = by_hand(clip, images)
    classes = sorted(set(picks.tolist()))
    same = images[picks == classes[0]]
    assert synset_entropy(same, *clip, WORDS).entropy == 0.0
    per_class = min(int((picks == k).sum()) for k in classes)  # the same number from each
    even = torch.cat([images[picks == k][:per_class] for k in classes])
    score = synset_entropy(even, *clip, WORDS)
    m = len(classes)
    assert score.entropy == pytest.approx(math.log(m), abs=1e-12)
    assert score.normalized == pytest.approx(math.log(m) / math.log(8), abs=1e-12)
    assert set(score.counts.values()) == {per_class}


def test_command_line_reads_npz_and_a_synset_list_and_fails_in_one_line(clip, tmp_path, capsys):
    """The documented command on a registered tiny architecture with its weights saved locally
    (WordNet names in the list give the lemmas); missing weights or synsets exit 2."""
    config = tmp_path / "robustlab-tiny-clip.json"
    config.write_text(json.dumps(TINY))
    open_clip.add_model_config(config)
    weights = tmp_path / "tiny.pt"
    torch.save(clip[0].state_dict(), weights)
    images = colour_images(40)
    npz = tmp_path / "mixes.npz"
    np.savez(npz, images=images.permute(0, 2, 3, 1).numpy())
    synsets = tmp_path / "synsets.txt"
    synsets.write_text("# WordNet names\n" + "\n".join(f"{w}.n.01" for w in WORDS) + "\n")
    assert [lemma for _, lemma in read_synsets(synsets)] == WORDS
    out = tmp_path / "score.json"
    common = ["--images", str(npz), "--model", "robustlab-tiny-clip", "--synsets", str(synsets)]
    assert main([*common, "--pretrained", str(weights), "--output", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    assert printed["clip_synset_entropy"] == pytest.approx(hand_entropy(by_hand(clip, images)))
    assert printed["images"] == 40 and printed["synsets"] == 8

    assert main([*common, "--pretrained", str(tmp_path / "none.pt")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "--pretrained" in line and "no such file" in line
    synsets.write_text("dog.n.01\n")
    assert main([*common, "--pretrained", str(weights)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "lists 1 synset(s); give at least 2" in line
