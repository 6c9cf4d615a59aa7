"""MONAI deep features: transforms, deterministic encoder, checkpoints, pipeline integration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch
from test_features_helpers import subset_cohort, write_fast_params

from radiogenomics.errors import InputError
from radiogenomics.features import deep
from radiogenomics.features.deep import DeepConfig, build_encoder, embed, embed_item, preprocess, save_checkpoint
from radiogenomics.features.pipeline import ExtractOptions, extract, output_paths
from radiogenomics.features.tasks import DEEP, WorkItem


def _row(synth_cohort: Path, modality: str = "CT", roi: str = "GTV") -> dict[str, object]:
    images = pd.read_csv(synth_cohort / "images.csv", dtype=str, keep_default_na=False)
    rec = images[(images["modality"] == modality) & (images["roi"] == roi)].iloc[0].to_dict()
    return {"patient_id": rec["patient_id"], "image": str(synth_cohort / rec["image"]),
            "mask": str(synth_cohort / rec["mask"]), "label": int(rec["label"]), "roi": roi, "modality": modality}


def test_preprocess_gives_a_fixed_box_centred_on_the_roi(synth_cohort: Path) -> None:
    row = _row(synth_cohort)
    cfg = DeepConfig()
    x = preprocess(str(row["image"]), str(row["mask"]), "GTV", int(row["label"]), "CT", cfg)
    assert tuple(x.shape) == (2, *cfg.box_voxels)
    image, mask = x[0].numpy(), x[1].numpy()
    assert set(np.unique(mask)) <= {0.0, 1.0}
    assert 0.0 <= image.min() and image.max() <= 1.0  # CT window scaled to [0, 1]
    idx = np.argwhere(mask > 0)
    centre = (idx.min(axis=0) + idx.max(axis=0)) / 2.0
    assert np.all(np.abs(centre - (np.array(cfg.box_voxels) - 1) / 2.0) <= 1.0)
    labels = sitk.ReadImage(str(row["mask"]))
    roi_mm3 = float((sitk.GetArrayFromImage(labels) == 1).sum()) * float(np.prod(labels.GetSpacing()))
    assert mask.sum() * float(np.prod(cfg.spacing_mm)) == pytest.approx(roi_mm3, rel=0.15)


def test_encoder_is_deterministic(synth_cohort: Path) -> None:
    row = _row(synth_cohort)
    cfg = DeepConfig()
    x = preprocess(str(row["image"]), str(row["mask"]), "GTV", int(row["label"]), "CT", cfg)[None]
    first = embed(x, cfg)
    assert first.shape == (1, cfg.embedding_dim) and np.isfinite(first).all()
    deep._encoder.cache_clear()
    again = embed(x, cfg)  # a freshly built encoder from the same seed
    assert np.array_equal(first, again)
    other = embed(x, DeepConfig(seed=1))
    assert not np.allclose(first, other)
    parotid = _row(synth_cohort, roi="parotid_l")
    xp = preprocess(str(parotid["image"]), str(parotid["mask"]), "parotid_l", int(parotid["label"]), "CT", cfg)
    assert not np.allclose(first, embed(xp[None], cfg))


def test_checkpoint_round_trip(synth_cohort: Path, tmp_path: Path) -> None:
    row = _row(synth_cohort, modality="PET_FDG")
    cfg = DeepConfig()
    model = build_encoder(cfg).cpu()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.5).add_(0.01)
    path = tmp_path / "encoder.pt"
    save_checkpoint(model, path, cfg)
    with_ckpt = DeepConfig(checkpoint=str(path))
    x = preprocess(str(row["image"]), str(row["mask"]), "GTV", int(row["label"]), "PET_FDG", cfg)[None]
    with torch.no_grad():
        expected = model.eval()(x).numpy()
    got = embed(x, with_ckpt)
    assert np.allclose(got, expected, atol=1e-5)
    assert not np.allclose(got, embed(x, cfg))
    wrong = tmp_path / "wrong.pt"
    torch.save({"state_dict": {"fc.weight": torch.zeros(3, 3)}}, wrong)
    with pytest.raises(InputError, match="does not fit"):
        build_encoder(DeepConfig(checkpoint=str(wrong)))
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="checkpoint"):
        build_encoder(DeepConfig(checkpoint=str(garbage)))


def test_pipeline_adds_deep_columns(synth_cohort: Path, tmp_path: Path) -> None:
    cohort = tmp_path / "cohort"
    (pid,) = subset_cohort(synth_cohort, cohort, 1)
    out = tmp_path / "features.parquet"
    opts = ExtractOptions(workers=2, cache_dir=tmp_path / "cache", deep=True,
                          params=write_fast_params(tmp_path / "p.yaml"))
    summary = extract(cohort, out, opts)
    assert summary.failed == 0
    table = pd.read_parquet(out).set_index("patient_id")
    dim = DeepConfig().embedding_dim
    for modality in ("ct", "pet_fdg", "pet_fmiso"):
        for roi in ("gtv", "parotid_l", "parotid_r", "spinal_cord"):
            cols = [f"deep.{modality}.{roi}.{i}" for i in range(dim)]
            assert set(cols) <= set(table.columns)
    # worker processes compute the same embedding as this process (deterministic on CPU)
    row = _row(cohort, modality="PET_FMISO", roi="parotid_r")
    item = WorkItem(kind=DEEP, patient_id=pid, modality="PET_FMISO", roi="parotid_r", image=str(row["image"]),
                    mask=str(row["mask"]), label=int(row["label"]), params=DeepConfig().to_params())
    direct = embed_item(item)
    got = [table.at[pid, f"deep.pet_fmiso.parotid_r.{i}"] for i in range(dim)]
    assert np.allclose(got, [direct[str(i)] for i in range(dim)], atol=1e-5)
    dictionary = pd.read_csv(output_paths(out)[0], keep_default_na=False).set_index("column")
    assert dictionary.at["deep.ct.gtv.0", "source"] == "deep"
    again = extract(cohort, tmp_path / "again.parquet", opts)
    assert again.computed == 0 and again.cached == summary.n_items
