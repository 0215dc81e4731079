"""bench/throughput.py and bench/dataloader.py: their pure parts, and one tiny end-to-end run of each.

Behaviour only, never timings: which floor a method is measured against, that every registered method gets a
ratio, how goals are checked, how a throughput JSON feeds the dataloader bench.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import dataloader as dl
import throughput as tp

from core.errors import UserError

TINY = ["--model", "vit_test_tiny", "--img-size", "16", "--batch", "2", "--classes-per-task", "4", "--tasks", "2",
        "--reps", "1", "--warmup", "0", "--precisions", "fp32"]


def test_train_floor_kind_follows_what_is_trained():
    assert tp.train_floor_kind(False, 0, 100) is None
    assert tp.train_floor_kind(True, 0, 100) == "frozen"  # adapters / prompts only
    assert tp.train_floor_kind(True, 100, 100) == "full"
    assert tp.train_floor_kind(True, 40, 100) == "frozen"


def test_method_kind_and_goals():
    assert tp.method_kind(None, 1) == "none"
    assert tp.method_kind("full", 1) == "full"
    assert tp.method_kind("frozen", 2) == "prompt"
    assert tp.method_kind("frozen", 1) == "adapter"
    goals = tp.check_goals("adapter", {"train_first": 1.3, "train_last": 1.3, "eval_first": 0.99, "eval_last": 1.02})
    assert goals["train_first"]["met"] is False  # 1.25 at task 1
    assert goals["train_last"]["met"] is True  # 1.35 at the last task
    assert goals["eval_first"]["met"] is True  # merged evaluation: at most 1.05 (below 1.00 is timing noise)
    assert tp.check_goals("adapter", {"eval_first": 1.06})["eval_first"]["met"] is False
    assert goals["eval_last"]["met"] is True
    assert "peak_mem_last_vs_first" not in goals  # not measured: not judged
    assert tp.check_goals("prompt", {"train_first": 2.2})["train_first"]["met"] is True
    assert tp.check_goals("full", {"train_first": 9.0}) == {}


def test_train_schedule_measures_memory_in_place_of_one_warm_up_step():
    assert tp.train_schedule(["fp32", "bf16"], 1, 2) == ["mem", "bf16", "fp32", "bf16", "fp32", "bf16"]
    assert tp.train_schedule(["fp32"], 0, 2) == ["mem", "fp32", "fp32"]


def test_ratio_is_the_median_of_pair_ratios():
    # a load burst that slows one A B pair alike cancels; separate medians (2 / 1) would not
    assert tp.ratio([1.0, 2.0, 10.0], [1.0, 1.0, 5.0]) == 2.0
    assert tp.ratio([3.0, 3.0, 30.0], [2.0, 2.0, 20.0]) == 1.5


def test_precisions_on_cpu():
    assert tp.precisions("cpu", "auto") == ["fp32"]
    assert tp.precisions("cpu", "fp32,bf16") == ["fp32", "bf16"]
    with pytest.raises(UserError, match="tf32"):
        tp.precisions("cpu", "tf32")


def test_design_eval_passes_from_the_class():
    from methods import METHODS

    assert tp.design_eval_passes(METHODS.get("l2p")) == 2
    assert tp.design_eval_passes(METHODS.get("sd_lora")) == 1


def test_throughput_json_has_a_ratio_for_every_registered_method(tmp_path, capsys):
    from methods import METHODS

    out = tp.main(TINY + ["--out", str(tmp_path / "tp.json")])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last) == json.loads((tmp_path / "tp.json").read_text()) == json.loads(json.dumps(out))
    registered = {n for n in METHODS.names() if ":" not in n} - {"ewc_masked", "lwf_masked"}  # Avalanche's rows
    assert set(out["methods"]) == registered == set(tp.benched(METHODS))
    for name, res in out["methods"].items():
        r = res["ratios"]
        assert r["eval_first"] > 0 and r["eval_last"] > 0, name
        if res["train_floor"] is not None:
            assert r["train_first"] > 0 and r["train_last"] > 0, name
        else:
            assert r["train_first"] is None, name
        assert res["eval_passes_made"]["last"] >= res["eval_passes"], name  # the floor never overstates the design
    methods = out["methods"]
    assert methods["full_ft"]["train_floor"] == "full"
    assert methods["sd_lora"]["train_floor"] == "frozen" and methods["sd_lora"]["kind"] == "adapter"
    assert methods["l2p"]["kind"] == "prompt" and methods["l2p"]["eval_passes"] == 2
    assert methods["simple_cil"]["train_floor"] is None
    # the table docs/performance.md shows, from the stored JSON alone; the JSON is a rates file of the cost model
    assert tp.main(["--table", str(tmp_path / "tp.json")]) == out
    table = capsys.readouterr().out.strip().splitlines()
    assert [row.split(" | ")[0].lstrip("| ") for row in table[2:]] == list(methods)
    from runner.cost import CostModel, Rates

    assert CostModel(Rates.load(tmp_path / "tp.json")).unit == "CPU-hours"


def test_slots_bench_runs_several_jobs_and_stores_the_ratios_in_a_rates_file(tmp_path, capsys):
    import slots

    rates = tmp_path / "rates.json"
    rates.write_text(json.dumps({"device": "cpu", "device_name": "cpu", "date": "2026-12-02", "model": "m",
                                 "img_size": 16, "tasks": 2, "methods": {"sd_lora": {}}}))
    out = slots.main(["--device", "cpu", "--model", "vit_test_tiny", "--img-size", "16", "--batch", "2",
                      "--counts", "1,2", "--seconds", "0.3", "--warmup", "1", "--merge-into", str(rates)])
    assert [r["jobs"] for r in out["rows"]] == [1, 2] and all(r["images_per_s"] > 0 for r in out["rows"])
    assert out["slots"]["1"] == 1.0
    from runner.cost import Rates

    assert Rates.load(rates).slots == {1: 1.0, 2: out["slots"]["2"]}
    with pytest.raises(UserError, match="include 1"):
        slots.main(["--device", "cpu", "--counts", "2,4"])


def test_throughput_rejects_unknown_methods():
    with pytest.raises(UserError, match="no_such_method"):
        tp.main(TINY + ["--methods", "no_such_method"])


def test_consumption_reads_a_throughput_json(tmp_path):
    doc = {"device": "cpu", "img_size": 64, "methods": {
        "a": {"images_per_s": {"train_first": {"method": 10.0, "floor": 12.0}}},
        "b": {"images_per_s": {"train_first": {"method": 30.0, "floor": 31.0}}},
        "c": {"images_per_s": {}}}}
    path = tmp_path / "tp.json"
    path.write_text("# a header line\n" + json.dumps(doc) + "\n")
    got = dl.consumption(str(path))
    assert got["slowest"] == {"method": "a", "images_per_s": 10.0}
    assert got["fastest"] == {"method": "b", "images_per_s": 30.0}
    assert dl.workers_needed(30.0, 7.0) == 5 and dl.workers_needed(1.0, 7.0) == 1
    path.write_text("not json\n")
    with pytest.raises(UserError, match="--throughput"):
        dl.consumption(str(path))


def test_resize_fixture_images_keeps_format_and_mode(tmp_path):
    from PIL import Image

    for name, mode in (("a.jpg", "RGB"), ("b.jpg", "L"), ("c.png", "P")):
        Image.new(mode, (8, 6)).save(tmp_path / name)
    assert dl.resize_fixture_images(tmp_path, ((40, 30), (20, 50))) == 3
    with Image.open(tmp_path / "a.jpg") as a, Image.open(tmp_path / "b.jpg") as b, Image.open(tmp_path / "c.png") as c:
        assert (a.size, a.mode, a.format) == ((40, 30), "RGB", "JPEG")
        assert (b.size, b.mode, b.format) == ((20, 50), "L", "JPEG")
        assert (c.size, c.mode, c.format) == ((40, 30), "P", "PNG")


def test_dataloader_bench_on_the_cifar_pipeline(capsys):
    out = dl.main(["--benchmarks", "cifar100", "--workers", "0,1", "--img-size", "16", "--batch", "4",
                   "--images", "8", "--per-class", "1"])
    rows = out["benchmarks"]["cifar100"]["workers"]
    assert set(rows) == {"0", "1"} and all(r["images_per_s"] > 0 for r in rows.values())
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == json.loads(json.dumps(out))


def test_performance_page_tables_are_the_stored_runs():
    """docs/performance.md shows each stored throughput run as ``bench/throughput.py --table FILE`` prints it."""
    import re

    root = Path(__file__).resolve().parent.parent
    page = (root / "docs" / "performance.md").read_text()
    blocks = re.findall(r"<!-- throughput-table: (\S+) -->\n(.*?)\n<!-- end -->", page, flags=re.DOTALL)
    assert blocks, "docs/performance.md shows no stored throughput run"
    for path, table in blocks:
        result = json.loads((root / path).read_text())
        assert table.strip() == tp.markdown_table(result), path
        assert result["git_dirty"] is False and result["git_commit"], f"{path}: measured on a tree with changes"


def test_mini_design_styles_and_bad_design_names():
    import mini_designs as md
    import torch

    from benchmarks.fmnist_styles import STYLES, styled

    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(styled(x, "clean"), x)
    assert torch.allclose(styled(x, "inverted"), 1 - x)
    r = x
    for _ in range(4):
        r = styled(r, "rot90")
    assert torch.equal(r, x) and not torch.equal(styled(x, "rot90"), x)
    assert torch.equal(styled(styled(x, "flip_v"), "flip_v"), x) and torch.equal(styled(x, "flip_v")[:, :, 0], x[:, :, -1])
    shuffled = styled(x, "patch_shuffle")  # the same 16 tiles of 7 x 7, rearranged
    tiles = [x[0, 0, r:r + 7, c:c + 7] for r in range(0, 28, 7) for c in range(0, 28, 7)]
    moved = [shuffled[0, 0, r:r + 7, c:c + 7] for r in range(0, 28, 7) for c in range(0, 28, 7)]
    assert all(any(torch.equal(m, t) for t in tiles) for m in moved) and not torch.equal(shuffled, x)
    flat = torch.ones(1, 1, 28, 28)
    assert torch.allclose(styled(flat, "blur")[..., 3:-3, 3:-3], flat[..., 3:-3, 3:-3])  # a blur keeps a flat image
    many = torch.rand(30, 1, 28, 28)
    mixed = styled(many, "mixed")
    assert mixed.shape == many.shape and torch.equal(styled(many, "mixed"), mixed)  # a fixed draw
    kinds = [next(k for k in ("rot90", "flip_v", "patch_shuffle") if torch.equal(styled(many[i:i + 1], k)[0], m))
             for i, m in enumerate(mixed)]
    assert len(set(kinds)) == 3  # every image in one of the three styles, all three used
    assert set(md.DESIGNS) >= {"quick", "held_out_classes", "inverted", "rot90", "mixed"}
    assert all(d["style"] in ("clean", *STYLES) for d in md.DESIGNS.values())
    with pytest.raises(UserError, match="unknown nope"):
        md.main(["--designs", "nope"])


def test_styled_fmnist_is_the_quick_stream_restyled():
    from benchmarks import BENCHMARKS
    from runner.suite import expand_jobs, load_suite

    quick = BENCHMARKS.get("split_fmnist").obj(BENCHMARKS.make_config("split_fmnist", {}), 1993)
    inv = BENCHMARKS.get("split_fmnist_styled").obj(BENCHMARKS.make_config("split_fmnist_styled", {}), 1993)
    a, b = quick.scenario.train_stream[0].dataset, inv.scenario.train_stream[0].dataset
    assert len(a) == len(b) and quick.class_order == inv.class_order
    for i in (0, len(a) - 1):
        assert torch.allclose(b[i][0], 1 - a[i][0]) and b[i][1] == a[i][1]
    with pytest.raises(UserError, match="style must be one of"):
        BENCHMARKS.make_config("split_fmnist_styled", {"style": "sketch"})
    jobs = expand_jobs(load_suite("mini"))
    assert {j.benchmark_name for j in jobs} == {"split_fmnist_styled"} and len(jobs) == 42
    assert {j.method for j in jobs} == {j.method for j in expand_jobs(load_suite("quick"))}


def _fonts_or_skip():
    from benchmarks.glyphs import FONT_FILES, FONT_PACKAGES

    if not all(Path(p).exists() for p in FONT_FILES):
        pytest.skip(f"the glyph fonts are not installed (apt-get install {' '.join(FONT_PACKAGES)})")


def test_missing_glyph_fonts_name_the_packages(monkeypatch):
    import benchmarks.glyphs as g

    monkeypatch.setattr(g, "FONT_FILES", ("/nonexistent/Font.ttf",))
    with pytest.raises(UserError, match="apt-get install fonts-urw-base35 fonts-liberation fonts-dejavu-core"):
        g.font_paths()


def test_printed_glyphs_are_fixed_draws_of_every_character():
    _fonts_or_skip()
    from benchmarks.glyphs import CHARACTERS, FONT_FILES, glyphs

    assert len(FONT_FILES) == len(set(FONT_FILES)) == 55
    x, y = glyphs("train", 20)
    assert x.shape == (20 * len(CHARACTERS), 1, 28, 28) and x.dtype == torch.float32
    assert (y == np.repeat(range(len(CHARACTERS)), 20)).all()
    assert x.min() >= 0 and x.max() <= 1 and torch.equal(torch.round(x * 255) / 255, x)  # 8-bit, as Fashion-MNIST
    ink = x.flatten(1).sum(1)
    assert (ink > 10).all()  # every image holds its character (not warped off the canvas)
    glyphs.cache_clear()
    assert torch.equal(glyphs("train", 20)[0], x)  # printed again: the same images
    xt, _ = glyphs("test", 20)
    assert not torch.equal(xt, x)  # test images are other draws
    # characters differ more between classes than within one: the mean image of a class is closest to its own draws
    means = torch.stack([x[y == c].mean(0).flatten() for c in range(len(CHARACTERS))])
    own = torch.cdist(xt.flatten(1), means).argmin(1).numpy()
    assert (own == y).mean() > 0.3


def test_glyph_benchmark_joins_garments_and_glyphs_in_ten_tasks():
    _fonts_or_skip()
    from benchmarks import BENCHMARKS
    from benchmarks.fmnist_styles import styled
    from benchmarks.glyphs import GlyphsConfig, arrays
    from runner.suite import expand_jobs, load_suite

    cfg = BENCHMARKS.make_config("split_fmnist_glyphs", {})
    assert (cfg.n_tasks, cfg.train_per_class, cfg.test_per_class, cfg.style) == (10, 300, 300, "mixed")
    bm = BENCHMARKS.get("split_fmnist_glyphs").obj(cfg, 1993)
    assert bm.classes_per_task == [3] * 10 and sorted(bm.class_order) == list(range(30))
    assert bm.info["n_train"] == bm.info["n_test"] == 9000 and len(bm.info["glyphs_sha256"]) == 64
    assert {n for n in bm.class_names if n.startswith(("digit", "letter"))} == {
        *(f"digit {d}" for d in range(10)), *(f"letter {c}" for c in "ABCDEFGHIJ")}
    parts = arrays(GlyphsConfig())
    x, y = parts["train"]
    assert (np.bincount(y) == 300).all()
    inverted = arrays(GlyphsConfig(style="inverted"))["train"][0]  # the style applies to the garments alone
    assert torch.allclose(x[:3000], styled(1 - inverted[:3000], "mixed"), atol=1e-6) and torch.equal(x[3000:], inverted[3000:])
    xd, yd = arrays(GlyphsConfig(glyph_classes=10))["train"]  # the digits alone: the same images, letters left out
    assert yd.max() == 19 and torch.equal(xd, x[:6000]) and (yd == y[:6000]).all()
    with pytest.raises(UserError, match="glyph_classes must be 1-20"):
        BENCHMARKS.make_config("split_fmnist_glyphs", {"glyph_classes": 21})
    with pytest.raises(UserError, match="train_per_class and test_per_class must be set"):
        BENCHMARKS.make_config("split_fmnist_glyphs", {"test_per_class": None})
    for suite in ("mini_glyphs", "mini_digits"):
        jobs = expand_jobs(load_suite(suite))
        assert {j.benchmark_name for j in jobs} == {"split_fmnist_glyphs"} and len(jobs) == 42
        assert {j.method for j in jobs} == {j.method for j in expand_jobs(load_suite("mini"))}


def test_cpu_isa_bench_refuses_levels_without_native_or_unknown(capsys):
    import cpu_isa

    for argv in (["--levels", "avx2,baseline"], ["--levels", "native,avx9"], ["--rounds", "0"]):
        assert cpu_isa.main(argv) == 2
        assert "--levels must name known levels" in capsys.readouterr().err
