"""Prompt-based methods (L2P, DualPrompt, CODA-Prompt, HiDe-Prompt): shared machinery, each method's defining
mechanism, per-sample (batch-independent) prediction and the two-pass inference cost, on the tiny test ViT."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import make_strategy, synthetic_bench, tiny_backbone, train_tasks
from torch.utils.flop_counter import FlopCounterMode

from core.errors import UserError
from methods import METHODS
from methods.coda_prompt import CodaLayer
from methods.prompting import batch_majority, cls_features, prefix_attention, prompted_tokens

pytestmark = pytest.mark.filterwarnings("ignore:.*do not exist in a 2-block backbone")

# Small settings that keep every mechanism active on the 2-block, 32-wide test ViT.
TINY = {
    "l2p": {"length": 1, "top_k": 2},  # 2 prompt tokens for 16 patches ~ ViT-B's 25 for 196
    "dualprompt": {"g_layers": (0,), "e_layers": (1,)},
    "coda_prompt": {"pool_size": 12},
    "hide_prompt": {"tii_lr": 1e-3, "tii_epochs": 10, "tii_ca_lr": 0.01, "ca_iters": 20},
}
PROMPT_METHODS = sorted(TINY)


def sample_images(bench, per_task: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_task`` test images of every task, in task order."""
    xs, ys = [], []
    for exp in bench.scenario.test_stream:
        for i in range(per_task):
            x, y, *_ = exp.dataset[i * len(exp.dataset) // per_task]
            xs.append(x)
            ys.append(y)
    return torch.stack(xs), torch.tensor(ys)


# ---------------------------------------------------------------------------------------- shared machinery
def test_unprompted_pass_is_the_backbone():
    backbone = tiny_backbone().eval()
    x = torch.rand(3, 3, 16, 16)
    torch.testing.assert_close(prompted_tokens(backbone, x), backbone.forward_features(x))


def test_prefix_attention_formula():
    """softmax(q [P_k; K]^T / sqrt(hd)) [P_v; V] per head, with sample b's prefixes only."""
    attn = tiny_backbone().blocks[0].attn.eval()
    B, N, L, H, hd = 3, 5, 4, attn.num_heads, attn.head_dim
    x, pk, pv = torch.randn(B, N, H * hd), torch.randn(B, L, H * hd), torch.randn(B, L, H * hd)
    q, k, v = attn.qkv(x).reshape(B, N, 3, H, hd).permute(2, 0, 3, 1, 4)
    heads = lambda t: t.reshape(B, -1, H, hd).transpose(1, 2)
    k, v = torch.cat([heads(pk), k], dim=2), torch.cat([heads(pv), v], dim=2)
    weights = (q @ k.transpose(-1, -2) / hd**0.5).softmax(dim=-1)
    expected = attn.proj((weights @ v).transpose(1, 2).reshape(B, N, H * hd))
    torch.testing.assert_close(prefix_attention(attn, x, pk, pv), expected, atol=1e-5, rtol=1e-5)
    alone = prefix_attention(attn, x[1:2], pk[1:2], pv[1:2])
    torch.testing.assert_close(alone, expected[1:2], atol=1e-5, rtol=1e-5)


def test_input_prompts_follow_cls_with_cls_position():
    backbone = tiny_backbone().eval()
    x, prompts = torch.rand(2, 3, 16, 16), torch.randn(2, 3, 32)
    pos = backbone.pos_embed
    patches = backbone.patch_embed(x) + pos[:, 1:]
    cls = (backbone.cls_token + pos[:, :1]).expand(2, -1, -1)
    expected = backbone.norm(backbone.blocks(torch.cat([cls, prompts + pos[:, :1], patches], dim=1)))
    torch.testing.assert_close(prompted_tokens(backbone, x, prompts=prompts), expected)


def test_batch_majority_uses_the_most_frequent_indices_for_everyone():
    idx = torch.tensor([[0, 1], [1, 2], [1, 0], [3, 1]])
    assert batch_majority(idx, 2, 5).tolist() == [[1, 0]] * 4


# ---------------------------------------------------------------------------------------- mechanisms
def test_l2p_selects_the_top_k_keys_closest_to_the_query():
    s = make_strategy("l2p", pool_size=6, length=2, top_k=3)
    model = s.model.eval()
    x = torch.rand(4, 3, 16, 16)
    q = model.query(x)
    cos = torch.stack([torch.stack([F.cosine_similarity(qb, k, dim=0) for k in model.prompt_key]) for qb in q])
    expected = cos.argsort(dim=1, descending=True)[:, :3]
    feats = model.features(x)
    assert model.aux["selected"].tolist() == expected.tolist()
    torch.testing.assert_close(model.aux["pull"], cos.gather(1, expected).sum() / 4)
    tokens = prompted_tokens(model.backbone, x, prompts=model.prompt[expected].flatten(1, 2))
    torch.testing.assert_close(feats, tokens[:, 1:7].mean(dim=1))  # head reads the mean of the prompt tokens


def test_l2p_surrogate_loss_pulls_the_selected_keys():
    s = make_strategy("l2p", pool_size=6, length=2, top_k=3, lr=0.05, epochs=2)
    bench = synthetic_bench()
    keys = s.model.prompt_key.detach().clone()
    train_tasks(s, bench, 1)
    x, _ = sample_images(bench, 4)
    s.model.eval()
    with torch.no_grad():
        q = s.model.query(x[:4])
        before = F.cosine_similarity(q[:, None], keys[None], dim=-1).topk(3, dim=1).values.mean()
        after = F.cosine_similarity(q[:, None], s.model.prompt_key[None], dim=-1).topk(3, dim=1).values.mean()
    assert after > before


def test_dualprompt_own_e_prompt_in_training_key_match_at_test():
    s = make_strategy("dualprompt", **TINY["dualprompt"])
    model = s.model
    x = torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        model.e_key[2] = model.query(x[1:2])[0]  # sample 1 matches key 2 exactly (cosine 1)
        model.e_key[0] = -model.e_key[2]
    model.train_task = 1

    def expected(idx):
        return cls_features(model.backbone, prompted_tokens(model.backbone, x, prefixes=model.prefixes(idx)))

    model.train()
    torch.testing.assert_close(model.features(x), expected(torch.ones(3, dtype=torch.long)))
    model.eval()
    feats = model.features(x)
    pred = model.aux["task_pred"]
    assert pred[1] == 2
    torch.testing.assert_close(feats, expected(pred))


def test_dualprompt_shared_pool_starts_a_task_from_the_previous_prompt():
    s = make_strategy("dualprompt", **TINY["dualprompt"])
    bench = synthetic_bench()
    train_tasks(s, bench, 1)
    s.config = s.config.replace(epochs=0)  # set up task 1 without training it
    s.train(bench.scenario.train_stream[1], eval_streams=[])
    torch.testing.assert_close(s.model.e_prompt[:, :, 1], s.model.e_prompt[:, :, 0])
    assert not torch.equal(s.model.e_prompt[:, :, 2], s.model.e_prompt[:, :, 0])


def test_coda_prompt_is_the_weighted_sum_of_components():
    layer = CodaLayer(length=4, prompt_dim=32, key_dim=32)
    layer.new_rows(5)
    q = torch.randn(3, 32)
    alpha = torch.stack([torch.stack([F.cosine_similarity(qb * a, k, dim=0) for a, k in zip(layer.a_cur, layer.k_cur)])
                         for qb in q])  # no softmax, no top-k
    prompt = torch.einsum("bm,mld->bld", alpha, layer.p_cur)
    key, value = layer(q)
    torch.testing.assert_close(key, prompt[:, :2])
    torch.testing.assert_close(value, prompt[:, 2:])


def test_coda_prompt_gram_schmidt_new_rows_orthogonal_to_old():
    layer = CodaLayer(length=2, prompt_dim=8, key_dim=16)
    layer.new_rows(4)
    with torch.no_grad():  # training moves the first task's rows off orthogonality
        for p in (layer.p_cur, layer.k_cur, layer.a_cur):
            p.add_(0.3 * torch.randn_like(p))
    old = {n: getattr(layer, f"{n}_cur").detach().clone() for n in "pka"}
    layer.new_rows(4)
    assert {n for n, _ in layer.named_parameters()} == {"p_cur", "k_cur", "a_cur"}
    for n in "pka":
        torch.testing.assert_close(getattr(layer, f"{n}_old"), old[n])  # old rows kept, now buffers
        new = getattr(layer, f"{n}_cur").flatten(1)
        assert (new @ old[n].flatten(1).T).abs().max() < 1e-5
        torch.testing.assert_close(new @ new.T, torch.eye(4), atol=1e-5, rtol=0)


def test_coda_prompt_trains_only_the_current_components():
    s = make_strategy("coda_prompt", **TINY["coda_prompt"])
    bench = synthetic_bench()
    train_tasks(s, bench, 1)
    first = s.model.coda[0].p_cur.detach().clone()
    s.train(bench.scenario.train_stream[1], eval_streams=[])
    layer = s.model.coda[0]
    torch.testing.assert_close(layer.p_old, first)
    assert layer.p_old.shape[0] == layer.p_cur.shape[0] == 4  # 12 components // 3 tasks


def test_coda_prompt_orthogonality_regulariser():
    s = make_strategy("coda_prompt", pool_size=12, ortho_mu=0.5)
    bench = synthetic_bench()
    train_tasks(s, bench, 1)
    ortho = sum(layer.ortho() for layer in s.model.coda)
    assert torch.isfinite(ortho) and ortho > 0


def test_hide_prompt_tii_picks_the_right_task():
    s = make_strategy("hide_prompt", **TINY["hide_prompt"])
    bench = synthetic_bench()
    train_tasks(s, bench)
    x, y = sample_images(bench, 4)
    s.model.eval()
    with torch.no_grad():
        task = s.model.predict_task(x)
    assert (task == s.model.class_task[y]).float().mean() >= 0.9
    stages = s.mechanism()["stages"]
    assert [r["task"] for r in stages] == [0, 1, 2] and "tap_loss" in stages[1]
    # multi-centroid statistics of TII and WTP: classes x clusters x (mean + variance) x width, twice
    assert s.stored_features() == 2 * 6 * 10 * 2 * 32
    assert s.paper_stored_features() == 6 * 32  # the SD-LoRA paper's Table 5 count: one mean per class


# ---------------------------------------------------------------------------------------- contract-level checks
@pytest.mark.parametrize("method", PROMPT_METHODS)
def test_prediction_does_not_depend_on_the_batch(method):
    s = make_strategy(method, **TINY[method])
    bench = synthetic_bench()
    train_tasks(s, bench, 2)
    x, _ = sample_images(bench, 3)
    s.model.eval()
    with torch.no_grad():
        together = s.model(x)
        alone = torch.cat([s.model(x[i:i + 1]) for i in range(len(x))])
        reversed_batch = s.model(x.flip(0)).flip(0)
    torch.testing.assert_close(alone, together, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(reversed_batch, together, atol=1e-5, rtol=1e-5)
    assert torch.equal(alone.argmax(1), together.argmax(1))


def test_batchwise_prompt_flag_leaks_across_the_batch():
    s = make_strategy("dualprompt", batchwise_prompt=True, **TINY["dualprompt"])
    model = s.model.eval()
    x = torch.rand(4, 3, 16, 16)
    with torch.no_grad():
        q = model.query(x)
        model.e_key[0] = q[0]
        model.e_key[1] = q[1:].mean(dim=0)
        model.e_key[2:] = -q[0]
        model.features(x[:1])
        alone = model.aux["task_pred"].item()
        model.features(x)
    assert alone == 0 and model.aux["task_pred"][0].item() == 1


@pytest.mark.parametrize("method", PROMPT_METHODS)
def test_inference_costs_about_two_backbone_passes(method):
    s = make_strategy(method, **TINY[method])
    train_tasks(s, synthetic_bench(), 1)
    x = torch.rand(1, 3, 16, 16)
    s.model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as plain:
        s.model.backbone(x)
    with torch.no_grad(), FlopCounterMode(display=False) as prompted:
        s.model(x)
    ratio = prompted.get_total_flops() / plain.get_total_flops()
    assert 1.8 <= ratio <= 2.6, ratio


@pytest.mark.parametrize("method", PROMPT_METHODS)
def test_presets_build_and_bad_values_are_rejected(method):
    cls = METHODS.get(method).config_cls
    for name in cls.PRESETS:
        cfg = cls.from_dict({"preset": name})
        assert cfg.preset == name
    bad = {"l2p": {"top_k": 11}, "dualprompt": {"e_layers": [1, 2]}, "coda_prompt": {"length": 7},
           "hide_prompt": {"storage": "median"}}[method]
    with pytest.raises(UserError):
        cls.from_dict(bad)


def test_reference_learning_rates_are_written_out():
    assert METHODS.make_config("l2p", {"preset": "original"}).lr == pytest.approx(0.03 * 16 / 256)
    assert METHODS.make_config("dualprompt", {"preset": "original"}).lr == pytest.approx(0.03 * 24 / 256)
    assert METHODS.make_config("dualprompt", {"preset": "original_imr"}).lr == pytest.approx(0.005 * 24 / 256)
    hide = METHODS.make_config("hide_prompt", {"preset": "original"})
    assert (hide.lr, hide.tii_lr, hide.tii_ca_lr) == pytest.approx((0.03 * 24 / 256, 5e-4 * 24 / 256, 0.005 * 24 / 256))


def test_vit_b16_inference_gflops_match_the_spec():
    """On ViT-B/16 at 224 px (meta tensors: shapes only, no compute) the counts are docs/baselines.md section 6's:
    one plain pass 35.13 GFLOPs, L2P 74.9 (query pass + 222-token prompted pass), prefix methods ~2 x 35.13."""
    timm = pytest.importorskip("timm")
    from avalanche.training.plugins import EvaluationPlugin

    expected = {"l2p": (74.8, 75.0), "dualprompt": (70.25, 70.35), "coda_prompt": (70.25, 70.35),
                "hide_prompt": (70.25, 70.40)}
    for method, (low, high) in expected.items():
        with torch.device("meta"):
            backbone = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0)
        cfg = METHODS.make_config(method, {"length": 20} if method in ("dualprompt", "hide_prompt") else {})
        model = METHODS.get(method).obj(cfg=cfg, backbone=backbone, evaluator=EvaluationPlugin(loggers=[])).model
        model.head.grow(10)
        model.add_task(0, 0, 10)
        for layer in getattr(model, "coda", []):
            layer.new_rows(10)
        if method == "hide_prompt":
            model.tii_head.grow(10)
        model = model.to("meta").eval()
        x = torch.zeros(1, 3, 224, 224, device="meta")
        with torch.no_grad(), FlopCounterMode(display=False) as plain:
            model.backbone(x)
        with torch.no_grad(), FlopCounterMode(display=False) as full:
            model(x)
        assert plain.get_total_flops() / 1e9 == pytest.approx(35.13, abs=0.01)
        assert low <= full.get_total_flops() / 1e9 <= high, method
