"""Models: transfer freezing and lr groups, one optimizer step, exact text features, resampler padding,
awkward splat sets, checkpoint mismatches, and a 2-process DDP run of the train command."""
import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from conftest import TINY_TRAIN, shipped_model_kwargs
from helpers import datacomp_shards, fitted_shards

from gs_lightning.compare import load_run
from gs_lightning.errors import UserError
from gs_lightning.models.clip_module import ClipModule
from gs_lightning.checkpoint import load_matching, read_state_dict
from gs_lightning.models.resampler import PerceiverResampler
from gs_lightning.splats import Splats

ROOT = Path(__file__).resolve().parents[1]


def unit_splats(batch: int, n: int, seed: int = 0) -> Splats:
    g = torch.Generator().manual_seed(seed)
    chol = torch.stack([0.02 + 0.05 * torch.rand(batch, n, generator=g), 0.01 * torch.randn(batch, n, generator=g),
                        0.02 + 0.05 * torch.rand(batch, n, generator=g)], -1)
    return Splats(torch.rand(batch, n, 2, generator=g), chol, torch.rand(batch, n, 3, generator=g),
                  torch.ones(batch, n, dtype=torch.bool), units="unit")


@pytest.fixture(scope="module")
def rgb_checkpoint(tmp_path_factory) -> str:
    torch.manual_seed(0)
    rgb = ClipModule(**shipped_model_kwargs(mode="rgb"))
    path = tmp_path_factory.mktemp("rgb") / "best.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in rgb.model.state_dict().items()}}, path)
    return str(path)


def transfer(rgb_checkpoint, **kw) -> ClipModule:
    return ClipModule(**shipped_model_kwargs(mode="transfer", rgb_checkpoint=rgb_checkpoint, **kw))


def expected_trainable(names: list[str]) -> set[str]:
    """The paper's recipe, spelled out independently of ClipModule.lr_ratio_of."""
    keep = set()
    for n in names:
        if n.startswith(("visual.stem.", "visual.resampler.", "visual.transformer.resblocks.0.",
                         "visual.transformer.resblocks.1.", "visual.ln_post.")):
            keep.add(n)
    return keep | {"visual.class_embedding", "visual.positional_embedding", "visual.proj", "logit_scale"}


def test_transfer_trains_exactly_the_intended_parameters_at_their_lrs(rgb_checkpoint):
    m = transfer(rgb_checkpoint, lr=1e-3)
    names = [n for n, _ in m.model.named_parameters()]
    trainable = {n for n, p in m.model.named_parameters() if p.requires_grad}
    assert trainable == expected_trainable(names)
    assert not any(n.startswith(("transformer.", "token_embedding", "ln_final", "text_projection")) for n in trainable)
    assert any(n.startswith("visual.transformer.resblocks.2.") for n in names)  # a frozen block exists
    trainer = one_step(m, splat_batch(m))
    opt = trainer.optimizers[0]
    lr_of = {id(p): g["initial_lr"] for g in opt.param_groups for p in g["params"]}  # before the schedule
    slow = ("visual.transformer.resblocks.0.", "visual.transformer.resblocks.1.", "visual.ln_post.", "visual.proj",
            "logit_scale")
    for n, p in m.model.named_parameters():
        if p.requires_grad:
            assert lr_of[id(p)] == pytest.approx(1e-4 if n.startswith(slow) else 1e-3), n
        else:
            assert id(p) not in lr_of
    wd = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    for n, p in m.model.named_parameters():  # matrices decay; biases, norms, embeddings of rank < 2, logit scale not
        if p.requires_grad:
            assert wd[id(p)] == (0.2 if p.ndim >= 2 else 0.0), n


def one_step(module: ClipModule, batch: dict) -> L.Trainer:
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader([batch], batch_size=None))
    return trainer


def splat_batch(module: ClipModule, batch: int = 4) -> dict:
    return {"splats": unit_splats(batch, 12), "text": module.tokenizer([f"a photo of thing {i}" for i in range(batch)])}


def test_one_step_moves_every_trainable_tensor_and_no_frozen_one(rgb_checkpoint):
    m = transfer(rgb_checkpoint)
    before = {n: p.detach().clone() for n, p in m.model.named_parameters()}
    one_step(m, splat_batch(m))
    for n, p in m.model.named_parameters():
        if p.requires_grad:
            assert not torch.equal(p, before[n]), f"{n} is trainable but did not move"
        else:
            assert torch.equal(p, before[n]), f"{n} is frozen but changed"


def test_logit_scale_is_clamped_after_the_step():
    """At model.logit_scale_max, not the default's 100: the value must come from the config."""
    m = ClipModule(**shipped_model_kwargs(mode="scratch", logit_scale_max=37.0))
    with torch.no_grad():
        m.model.logit_scale.fill_(10.0)
    one_step(m, splat_batch(m))
    assert m.model.logit_scale.item() == pytest.approx(math.log(37.0))


def test_transfer_reproduces_the_rgb_text_features_exactly(rgb_checkpoint):
    rgb = ClipModule(**shipped_model_kwargs(mode="rgb"))
    load_matching(rgb.model, read_state_dict(rgb_checkpoint, "model.rgb_checkpoint"), rgb_checkpoint,
                  "model.rgb_checkpoint")
    gs = transfer(rgb_checkpoint)
    text = rgb.tokenizer(["a photo of a cat.", "a sneaker", "an ankle boot, black"])
    # Same kernels on both sides: torch's attention picks its fused path by whether parameters require grad
    # (even under no_grad), and the transfer model's text tower is frozen; freeze the reference's copy too.
    rgb.model.requires_grad_(False)
    with torch.no_grad():
        assert torch.equal(gs.model.eval().encode_text(text), rgb.model.eval().encode_text(text))


def test_resampler_ignores_extra_padding():
    torch.manual_seed(0)
    r = PerceiverResampler(dim=16, num_queries=4, depth=2, heads=2, mlp_ratio=1.0).eval()
    media = torch.randn(2, 7, 16)
    mask = torch.tensor([[True] * 7, [True] * 3 + [False] * 4])
    padded = torch.cat([media, torch.randn(2, 5, 16) * 100], 1)  # garbage in the padding
    padded_mask = torch.cat([mask, torch.zeros(2, 5, dtype=torch.bool)], 1)
    torch.testing.assert_close(r(padded, padded_mask), r(media, mask), rtol=1e-5, atol=1e-5)


def test_encoder_ignores_extra_padding(rgb_checkpoint):
    enc = transfer(rgb_checkpoint).model.visual.eval()
    s = unit_splats(2, 9)
    pad = Splats(*(torch.cat([t, torch.full((2, 4, t.shape[-1]), float("nan"))], 1) for t in (s.xy, s.chol, s.rgb)),
                 torch.cat([s.mask, torch.zeros(2, 4, dtype=torch.bool)], 1), units="unit")
    torch.testing.assert_close(enc(pad), enc(s), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n", [0, 1, 20_000])
def test_awkward_splat_counts_give_finite_features(rgb_checkpoint, n):
    enc = transfer(rgb_checkpoint).model.visual
    s = unit_splats(2, n)
    s.mask[1, n // 2:] = False  # image 1 holds half (for n = 1: none)
    out = enc(s)
    assert out.shape == (2, enc.output_dim) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in enc.parameters() if p.grad is not None)


def test_wrong_architecture_checkpoint_names_the_weights(tmp_path, rgb_checkpoint):
    other = ClipModule(**shipped_model_kwargs(mode="rgb", name="ViT-Demo-28"))
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in other.model.state_dict().items()}}, path)
    with pytest.raises(UserError, match=r"^model\.rgb_checkpoint: .* does not match the model; weights \d+ with another "
                                        r"shape: ln_final\.bias: checkpoint \(128,\) vs model \(32,\).*not in the model: "
                                        r"transformer\."):
        transfer(str(path))
    state = read_state_dict(rgb_checkpoint, "teacher")
    del state["visual.proj"]
    torch.save(state, path)
    with pytest.raises(UserError, match=r"1 missing from the checkpoint: visual\.proj"):
        transfer(str(path))


def test_the_logit_scale_is_clamped_before_any_checkpoint_sees_the_step(rgb_checkpoint):
    """A checkpoint saved at a step's end (a callback's on_train_batch_end: every_n_train_steps) holds the clamped
    scale. A scale far above log(logit_scale_max), which one small step cannot bring down, is at the cap there."""
    import math

    class Seen(L.Callback):
        def __init__(self):
            self.scales = []

        def on_train_batch_end(self, trainer, module, *args):
            self.scales.append(float(module.model.logit_scale))

    m = transfer(rgb_checkpoint, lr=1e-4, logit_scale_max=10.0)
    with torch.no_grad():
        m.model.logit_scale.fill_(math.log(10.0) + 3)
    seen = Seen()
    L.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, limit_val_batches=0, callbacks=[seen]).fit(
        m, train_dataloaders=torch.utils.data.DataLoader([splat_batch(m)] * 2, batch_size=None))
    assert len(seen.scales) == 2 and seen.scales[0] == pytest.approx(math.log(10.0), abs=1e-6)
    assert max(seen.scales) <= math.log(10.0) + 1e-6


def test_schedule_keeps_the_groups_lr_ratio(rgb_checkpoint):
    m = transfer(rgb_checkpoint, lr=1e-3)
    m.hparams.warmup_steps = 2
    trainer = L.Trainer(max_steps=10, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(m, train_dataloaders=torch.utils.data.DataLoader([splat_batch(m)] * 10, batch_size=None))
    conf = m.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    seen = []
    for _ in range(3):  # warmup, then cosine
        opt.step()
        sched.step()
        lrs = {g["lr_ratio"]: g["lr"] for g in opt.param_groups}
        assert lrs[1.0] > 0 and lrs[0.1] == pytest.approx(0.1 * lrs[1.0])
        seen.append(lrs[1.0])
    assert len(set(seen)) >= 2  # the lr did move (warmup end and cosine start are both 1.0)


def test_rgb_then_the_configured_transfer_over_two_ddp_processes(tmp_path):
    """The train command's wiring, checked on what the runs wrote: with model.unfrozen_blocks=1 and
    model.transfer_lr_ratio=0.37, the transfer's checkpoint has the teacher's text tower and blocks 1.. unchanged,
    block 0 moved, and its optimizer's groups at lr and 0.37 lr."""
    rgb = datacomp_shards(tmp_path / "rgb", [6, 6], size=16, labelled=True)
    gs = fitted_shards(tmp_path / "gs", [6, 6])
    common = [f"output_dir={tmp_path}/runs", *TINY_TRAIN, "trainer.devices=2", "trainer.strategy=ddp",
              "trainer.limit_train_batches=1", "trainer.max_epochs=1", "data.batch_size=3", "data.val_batch_size=4",
              f"data.rgb.train={rgb}", f"data.rgb.val={rgb}", f"data.splats.train={gs}", f"data.splats.val={gs}"]
    for exp, extra in (("rgb", []), ("gs196", ["model.unfrozen_blocks=1", "model.transfer_lr_ratio=0.37"])):
        out = subprocess.run([sys.executable, "-m", "gs_lightning", "train", exp, "demo", *common, *extra], cwd=ROOT,
                             capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
        metrics = (tmp_path / "runs" / exp / "csv" / "metrics.csv").read_text()
        assert "val/top1" in metrics and "train/loss" in metrics
    assert "trainable:" in out.stdout + out.stderr
    teacher = read_state_dict(tmp_path / "runs" / "rgb" / "checkpoints" / "best.ckpt", "teacher")
    ckpt = torch.load(tmp_path / "runs" / "gs196" / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    student = {k[len("model."):]: v for k, v in ckpt["state_dict"].items()}
    blocks = sorted({k.split(".")[3] for k in student if k.startswith("visual.transformer.resblocks.")})
    assert blocks == ["0", "1", "2"]
    for k, v in student.items():
        if k.startswith("visual.transformer.resblocks.0.") and k.endswith("weight") and v.ndim == 2:
            assert not torch.equal(v, teacher[k]), f"{k} is unfrozen but did not move"
        elif k.startswith(("visual.transformer.resblocks.1.", "visual.transformer.resblocks.2.", "transformer.",
                           "token_embedding", "ln_final", "text_projection")):
            assert torch.equal(v, teacher[k]), f"{k} is frozen but changed"
    groups = ckpt["optimizer_states"][0]["param_groups"]
    assert sorted({g["lr_ratio"] for g in groups}) == [0.37, 1.0]
    assert sorted({g["initial_lr"] for g in groups}) == pytest.approx([0.37e-3, 1e-3])
    # compare reads the query count the model reported
    assert load_run(tmp_path / "runs" / "gs196").queries == 5 and load_run(tmp_path / "runs" / "rgb").queries is None


def test_scratch_starts_from_random_weights_not_the_teachers(rgb_checkpoint):
    from gs_lightning.config import compose_train

    assert compose_train(["gs196_scratch"]).model.rgb_checkpoint is None
    torch.manual_seed(1)
    scratch = ClipModule(**shipped_model_kwargs(mode="scratch", rgb_checkpoint=rgb_checkpoint))
    teacher = read_state_dict(rgb_checkpoint, "teacher")
    for k, v in scratch.model.state_dict().items():
        if k.startswith(("visual.transformer.", "transformer.")) and k.endswith("weight") and v.ndim == 2:
            assert not torch.equal(v, teacher[k]), f"scratch {k} holds the teacher's weights"


# ---- zero-shot accuracy against a known answer -------------------------------------------------------------------

NUM_CLASSES = 10  # the fashion-mnist eval set
RANKS = [0, 1, 3, 0, 7, 4, 9]  # where each sample's true class ranks among the scores it gets


def known_answer_shards(root) -> str:
    """7 labelled splat sets; record row 0 carries (label / 10, rank / 10) in r and g, for the stub encoder."""
    from gs_lightning.data.shards import FittedShard, update_sizes

    for shard, samples in enumerate(([0, 1, 2, 3], [4, 5, 6])):
        w = FittedShard(root / f"{shard:05d}.tar", "fp16")
        for i in samples:
            record = np.full((2, 8), 0.1, np.float16)
            record[0, 5], record[0, 6] = (i * 3 % NUM_CLASSES) / 10, RANKS[i] / 10
            w.write(f"s{i}", record, {}, None, i * 3 % NUM_CLASSES)
        w.commit()
    update_sizes(root, {"00000.tar": 4, "00001.tar": 3})
    return str(root / "{00000..00001}.tar")


def stub_encoder(module: ClipModule) -> None:
    """encode_image returns, for each splat set, features whose scores against the zero-shot classifier are exactly
    a ranking with the true class at the set's rank: scores = G w with G = C^T C, so w = G^-1 scores."""
    def encode_image(splats, normalize=False):
        C = module.classifier  # [D, K] unit columns
        labels = (splats.rgb[:, 0, 0] * 10).round().long()
        ranks = (splats.rgb[:, 0, 1] * 10).round().long()
        scores = torch.zeros(len(labels), NUM_CLASSES)
        for b, (label, rank) in enumerate(zip(labels.tolist(), ranks.tolist())):
            order = [c for c in range(NUM_CLASSES) if c != label]
            order.insert(rank, label)
            scores[b, order] = torch.arange(NUM_CLASSES, 0, -1, dtype=torch.float32)
        return scores @ torch.linalg.inv(C.T @ C) @ C.T  # [B, D]; features @ C = scores

    module.model.encode_image = encode_image


def expected_accuracy() -> tuple[float, float]:
    return sum(r < 1 for r in RANKS) / len(RANKS), sum(r < 5 for r in RANKS) / len(RANKS)


def test_zero_shot_accuracy_has_the_known_answer(tmp_path):
    from gs_lightning.zeroshot.datamodule import ZeroShotDataModule

    module = ClipModule(**shipped_model_kwargs(mode="scratch"), eval_set="fashion-mnist")
    stub_encoder(module)
    val = ZeroShotDataModule(kind="splats", path=known_answer_shards(tmp_path), batch_size=3, num_workers=0)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    (metrics,) = trainer.validate(module, dataloaders=val.val_dataloader(), verbose=False)
    top1, top5 = expected_accuracy()
    assert metrics["val/top1"] == pytest.approx(top1) and metrics["val/top5"] == pytest.approx(top5)


DDP_VALIDATE = """
import json, sys
import lightning as L
sys.path.insert(0, "tests")
from conftest import shipped_model_kwargs
from test_models import ClipModule, stub_encoder
from gs_lightning.zeroshot.datamodule import ZeroShotDataModule

module = ClipModule(**shipped_model_kwargs(mode="scratch"), eval_set="fashion-mnist")
stub_encoder(module)
val = ZeroShotDataModule(kind="splats", path=sys.argv[1], batch_size=2, num_workers=1)
trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False, enable_progress_bar=False,
                    enable_model_summary=False, use_distributed_sampler=False)
(metrics,) = trainer.validate(module, dataloaders=val.val_dataloader(), verbose=False)
if trainer.global_rank == 0:
    print("METRICS", json.dumps(metrics))
"""


def test_zero_shot_over_two_ddp_ranks_counts_each_sample_once(tmp_path):
    """7 samples over 2 ranks: a sample counted twice or dropped would move top-1 off 2/7 or top-5 off 5/7."""
    script = tmp_path / "validate.py"
    script.write_text(DDP_VALIDATE)
    out = subprocess.run([sys.executable, str(script), known_answer_shards(tmp_path)], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads(next(l for l in out.stdout.splitlines() if l.startswith("METRICS"))[len("METRICS "):])
    top1, top5 = expected_accuracy()
    assert metrics["val/top1"] == pytest.approx(top1) and metrics["val/top5"] == pytest.approx(top5)


def test_a_label_beyond_the_classes_is_decided_at_the_epochs_end_by_every_rank():
    """Ranks hold different numbers of eval batches, so the step that meets a bad label only notes it; at the
    epoch's end every rank tells the others (NCCL would leave a rank that stopped alone's peers waiting in the
    metrics' sync until its timeout), and each stops: the one that met it names the sample."""
    module = ClipModule(**shipped_model_kwargs(mode="scratch"), eval_set="fashion-mnist")
    told, others = [], [False]
    module._trainer = SimpleNamespace(strategy=SimpleNamespace(
        reduce_boolean_decision=lambda decision, all: told.append(decision) or decision or others[0]))
    module.on_validation_epoch_start()
    module.validation_step({"label": torch.tensor([3, 10, -1]), "keys": ["0.tar/a", "0.tar/b", "0.tar/c"]}, 0)
    with pytest.raises(UserError, match=r"^0\.tar/b: \.cls 10 is not one of the 10 class labels of the eval set "
                                        r"\(0 to 9, classnames\.txt\)$"):
        module.on_validation_epoch_end()
    others[0] = True  # a clean epoch here, a bad label on another rank
    module.on_validation_epoch_start()
    with pytest.raises(UserError, match=r"^eval set: a sample of another rank has a label beyond its 10 classes"):
        module.on_validation_epoch_end()
    assert told == [True, False]


# ---- bf16-mixed: the paper configs' precision -----------------------------------------------------------------------


class Watch(L.Callback):
    """Records each step's loss, and fails on a non-finite gradient or stem feature as soon as one appears."""

    def __init__(self):
        self.losses = []

    def on_fit_start(self, trainer, module):
        if module.mode != "rgb":
            def finite(gated, args, out):  # the splat features (covariance ones included) and what they make
                assert args[0].dtype == torch.float32 and torch.isfinite(args[0]).all(), "splat features"
                assert torch.isfinite(out).all(), "gated stem output not finite"

            module.model.visual.stem.gated.register_forward_hook(finite)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.losses.append(outputs["loss"].item())

    def on_before_optimizer_step(self, trainer, module, optimizer):
        for n, p in module.model.named_parameters():
            assert p.grad is None or torch.isfinite(p.grad).all(), f"grad of {n} not finite"


def run_steps(module: ClipModule, batch: dict, precision: str, steps: int) -> Watch:
    watch = Watch()
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", precision=precision, logger=False, callbacks=[watch],
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0)
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader([batch] * steps, batch_size=None))
    return watch


@pytest.mark.parametrize("mode", ["rgb", "transfer"])
def test_bf16_mixed_trains_with_finite_values_and_the_fp32_first_loss(mode, rgb_checkpoint, tmp_path):
    """rgb, gs196, gs98 and gs196_scratch run bf16-mixed (experiments/*.yaml): a few steps on CPU under it stay
    finite, start from fp32's loss within bf16's precision, and evaluate zero-shot."""
    from gs_lightning.zeroshot.datamodule import ZeroShotDataModule

    def build():
        torch.manual_seed(0)
        extra = {"rgb_checkpoint": rgb_checkpoint} if mode == "transfer" else {}
        return ClipModule(**shipped_model_kwargs(mode=mode, **extra), eval_set="fashion-mnist")

    module = build()
    g = torch.Generator().manual_seed(0)
    text = module.tokenizer([f"a photo of thing {i}" for i in range(6)])
    if mode == "rgb":
        batch = {"image": torch.rand(6, 3, 16, 16, generator=g), "text": text}
    else:  # thin ellipses too: the covariance features' eigen-split is where precision bites
        s = unit_splats(6, 12)
        s.chol[:, :4] *= torch.tensor([1.0, 1.0, 0.01])
        batch = {"splats": s, "text": text}
    fp32 = run_steps(build(), batch, "32-true", 1).losses[0]
    bf16 = run_steps(module, batch, "bf16-mixed", 4).losses
    assert all(math.isfinite(x) for x in bf16)
    assert bf16[0] == pytest.approx(fp32, rel=2e-2)
    kind = "rgb" if mode == "rgb" else "splats"
    path = datacomp_shards(tmp_path, [5], size=16, labelled=True) if kind == "rgb" else fitted_shards(tmp_path, [5])
    import open_clip

    val = ZeroShotDataModule(kind=kind, path=path, batch_size=5, num_workers=0,
                             preprocess=open_clip.image_transform(16, is_train=False) if kind == "rgb" else None)
    trainer = L.Trainer(accelerator="cpu", precision="bf16-mixed", logger=False, enable_progress_bar=False,
                        enable_model_summary=False)
    (metrics,) = trainer.validate(module, dataloaders=val.val_dataloader(), verbose=False)
    assert 0 <= metrics["val/top1"] <= metrics["val/top5"] <= 1


def test_the_stem_takes_unit_square_splats_only():
    """A fitted shard's rows are in the unit square; splats in pixels would feed Fourier features 28x too fast."""
    from gs_lightning.models.stem import SplatStem

    s = unit_splats(2, 5)
    stem = SplatStem(width=8, hidden=8, num_freqs=2)
    assert stem(s).shape == (2, 5, 8)
    pixels = Splats.from_unit_rows(torch.cat([s.xy, s.chol, s.rgb], -1), s.mask, 28, 28)
    with pytest.raises(ValueError, match=r"SplatStem takes splats in 'unit' units, got 'pixels'"):
        stem(pixels)


def test_autocast_never_reaches_the_render_or_the_stem_features():
    """Under a bf16 autocast the render and the stem's splat features are the float32 ones, bit for bit."""
    from gs_lightning.models.stem import SplatStem
    from gs_lightning.render import rasterize

    s = unit_splats(2, 20)
    pixels = Splats.from_unit_rows(torch.cat([s.xy, s.chol, s.rgb], -1), s.mask, 24, 24)
    stem = SplatStem(width=32, hidden=16, num_freqs=8)
    calls = {}

    def record(module, args, out):  # the features as the gated layer receives them, under autocast or not
        calls[torch.is_autocast_enabled("cpu")] = args[0]

    stem.gated.register_forward_hook(record)
    for backend in ("cpu", "torch"):
        want = rasterize(pixels, 24, 24, backend=backend)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = rasterize(pixels, 24, 24, backend=backend)
        assert got.dtype == torch.float32 and torch.equal(got, want), backend
    stem(s)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        stem(s)
    assert calls[True].dtype == torch.float32 and torch.equal(calls[True], calls[False])


def test_a_run_halted_by_a_non_finite_loss_names_its_newest_checkpoint(tmp_path):
    """What a non-finite loss prints: the newest of the checkpoints the run's callbacks saved, by time, not
    by name; none saved, it says so."""
    import os
    from types import SimpleNamespace

    module = ClipModule(**shipped_model_kwargs(mode="rgb"), eval_set="fashion-mnist")
    every, best = tmp_path / "every", tmp_path / "best"
    for folder in (every, best):
        folder.mkdir()
    module._trainer = SimpleNamespace(checkpoint_callbacks=[SimpleNamespace(dirpath=str(every)),
                                                            SimpleNamespace(dirpath=str(best))])
    assert "No checkpoint was saved" in module.last_good_checkpoint()
    for i, path in enumerate([every / "last.ckpt", best / "epoch=0.ckpt", every / "epoch=2.ckpt"]):
        path.write_bytes(b"")
        os.utime(path, (1_000_000 + i, 1_000_000 + i))  # written in this order
    assert f"resume_from={every / 'epoch=2.ckpt'}." in module.last_good_checkpoint()


def test_the_resamplers_queries_start_as_random_vectors_of_unit_length():
    """Each learned query starts at about the length of a LayerNorm'd token (std dim^-0.5 per entry)."""
    torch.manual_seed(0)
    q = PerceiverResampler(dim=256, num_queries=196, depth=1, heads=4, mlp_ratio=1.0).latents
    assert q.norm(dim=1).mean().item() == pytest.approx(1.0, rel=0.05)
    assert abs(q.mean().item()) < 0.01
