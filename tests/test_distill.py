"""The two-stage recipe: the teacher's embeddings computed once and kept with their splats, stage 1 (distill)
training exactly the splat stem and resampler, stage 2 starting from it, the distillation terms against a hand
computation, and the teacher on the splats rendered back to pixels."""
import io
import json
import math
import os
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from conftest import TINY_TRAIN, shipped_model_kwargs
from helpers import datacomp_shards, fitted_shards
from PIL import Image

from gs_lightning.data.embeddings import EmbeddingShard, check_embeddings, keep_embed_settings, read_embeddings
from gs_lightning.errors import UserError
from gs_lightning.models.clip_module import NEW_MODULES, ClipModule, embedding_distance
from gs_lightning.splats import Splats

ROOT = Path(__file__).resolve().parents[1]
DIM = 32  # ViT-Tiny-16's embedding width


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> str:
    torch.manual_seed(0)
    rgb = ClipModule(**shipped_model_kwargs(mode="rgb"))
    path = tmp_path_factory.mktemp("teacher") / "best.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in rgb.model.state_dict().items()}}, path)
    return str(path)


def unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


# ---- the loss, by hand --------------------------------------------------------------------------------------


def test_the_embedding_distance_is_two_minus_two_cosines():
    a, b = unit(torch.tensor([[1.0, 0.0], [0.6, 0.8]])), unit(torch.tensor([[0.0, 1.0], [0.6, 0.8]]))
    assert embedding_distance(a, b).item() == pytest.approx(((2 - 0) + (2 - 2)) / 2)  # cos 0 and cos 1


class Stub(torch.nn.Module):
    """A CLIP whose forward returns chosen features (and logit scale), whatever it is given."""

    def __init__(self, image, text, scale):
        super().__init__()
        self.image, self.text, self.scale = image, text, scale
        self.logit_scale = torch.nn.Parameter(torch.tensor(math.log(scale)))

    def forward(self, visual, text):
        return self.image, self.text, torch.tensor(self.scale)


def test_the_loss_is_contrastive_plus_the_weighted_distillation_terms_by_hand():
    """B = 3, D = 4 features chosen here; the terms written out with exp and log, nothing of open_clip's."""
    g = torch.Generator().manual_seed(0)
    img, txt, t_img, t_txt = (unit(torch.randn(3, 4, generator=g)) for _ in range(4))
    scale, t_scale, w_emb, w_logit = 7.0, 11.0, 0.3, 0.7
    m = ClipModule(**shipped_model_kwargs(mode="scratch", distill={"embedding_weight": w_emb,
                                                                    "logit_weight": w_logit}),
                   teacher_logit_scale=t_scale)
    m.model = Stub(img, txt, scale)
    from open_clip.loss import DistillClipLoss

    m.loss = DistillClipLoss()
    batch = {"splats": None, "text": torch.zeros(3, 5, dtype=torch.long), "teacher": torch.stack([t_img, t_txt], 1)}
    got = m.losses(batch)

    def log_softmax(z):
        return z - torch.log(torch.exp(z).sum(1, keepdim=True))

    s, t = scale * img @ txt.T, t_scale * t_img @ t_txt.T  # image-to-text logits; their transposes: text-to-image
    contrastive = -(log_softmax(s).diag().mean() + log_softmax(s.T).diag().mean()) / 2
    logit = -((torch.exp(log_softmax(t)) * log_softmax(s)).sum(1).mean()
              + (torch.exp(log_softmax(t.T)) * log_softmax(s.T)).sum(1).mean()) / 2
    embedding = ((img - t_img) ** 2).sum(1).mean()
    for name, want in (("contrastive", contrastive), ("logit", logit), ("embedding", embedding),
                       ("loss", contrastive + w_logit * logit + w_emb * embedding)):
        assert got[name].item() == pytest.approx(want.item(), rel=1e-5), name


def test_stage_1s_loss_is_the_embedding_distance_alone(teacher):
    """Stage 1 (mode distill) matches the teacher's image embeddings: no text tower, no contrastive term."""
    g = torch.Generator().manual_seed(3)
    img, txt, t_img, t_txt = (unit(torch.randn(3, 4, generator=g)) for _ in range(4))
    m = ClipModule(**shipped_model_kwargs(mode="distill", rgb_checkpoint=teacher))
    m.model = Stub(img, txt, 7.0)
    m.model.encode_image = lambda visual, normalize: img
    got = m.losses({"splats": None, "text": torch.zeros(3, 5, dtype=torch.long),
                    "teacher": torch.stack([t_img, t_txt], 1)})
    assert set(got) == {"loss", "embedding"}
    assert got["loss"].item() == pytest.approx(((img - t_img) ** 2).sum(1).mean().item(), rel=1e-6)


# ---- stage 1 and stage 2 ---------------------------------------------------------------------------------


def unit_splats(batch: int, n: int) -> Splats:
    g = torch.Generator().manual_seed(1)
    chol = torch.stack([0.02 + 0.05 * torch.rand(batch, n, generator=g), 0.01 * torch.randn(batch, n, generator=g),
                        0.02 + 0.05 * torch.rand(batch, n, generator=g)], -1)
    return Splats(torch.rand(batch, n, 2, generator=g), chol, torch.rand(batch, n, 3, generator=g),
                  torch.ones(batch, n, dtype=torch.bool), units="unit")


def test_stage_1_trains_exactly_the_stem_resampler_and_new_embeddings(teacher):
    import lightning as L

    m = ClipModule(**shipped_model_kwargs(mode="distill", rgb_checkpoint=teacher))
    names = [n for n, _ in m.model.named_parameters()]
    want = {n for n in names if n.startswith(("visual.stem.", "visual.resampler."))} | {
        "visual.class_embedding", "visual.positional_embedding"}  # spelled out apart from NEW_MODULES
    assert set(m.lr_ratio) == want and set(m.lr_ratio.values()) == {1.0}
    before = {n: p.detach().clone() for n, p in m.model.named_parameters()}
    batch = {"splats": unit_splats(4, 12), "text": m.tokenizer(["x"] * 4),
             "teacher": unit(torch.randn(4, 2, DIM, generator=torch.Generator().manual_seed(2)))}
    L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, limit_val_batches=0).fit(
        m, train_dataloaders=torch.utils.data.DataLoader([batch], batch_size=None))
    for n, p in m.model.named_parameters():
        moved = not torch.equal(p, before[n])
        assert moved == (n in want), f"{n}: {'moved' if moved else 'did not move'}"


def test_the_parameter_table_shows_stage_1s_trainable_modules_at_their_lr(teacher):
    """The table printed at the start of a fit: stage 1 trains the stem, the resampler and the embeddings
    only; the rows marked trainable hold exactly the trainable share of the parameters."""
    m = ClipModule(**shipped_model_kwargs(mode="distill", rgb_checkpoint=teacher, lr=0.0042))
    rows, share = m.parameter_table()
    status = {r[0]: (r[2], r[3]) for r in rows}
    for name in ("visual.stem", "visual.resampler", "visual.embeddings"):
        assert status[name] == ("trainable", "0.0042"), (name, status[name])
    assert status["text tower"] == ("frozen", "-") and status["logit_scale"] == ("frozen", "-")
    total = sum(p.numel() for p in m.model.parameters())
    assert sum(r[1] for r in rows) == total
    assert sum(r[1] for r in rows if r[2] == "trainable") / total == pytest.approx(share) and 0 < share < 0.5


def test_stage_2_starts_from_stage_1s_weights(teacher, tmp_path):
    stage1 = ClipModule(**shipped_model_kwargs(mode="distill", rgb_checkpoint=teacher))
    with torch.no_grad():  # a stage 1 that learned something: its new modules differ from any fresh init
        for n, p in stage1.model.named_parameters():
            if n.startswith(NEW_MODULES):
                p.add_(0.5)
    path = tmp_path / "best.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in stage1.model.state_dict().items()}}, path)
    torch.manual_seed(123)  # another init: only the checkpoint can make them equal
    stage2 = ClipModule(**shipped_model_kwargs(mode="transfer", rgb_checkpoint=teacher, init_checkpoint=str(path)))
    for k, v in stage1.model.state_dict().items():
        assert torch.equal(stage2.model.state_dict()[k], v), k


# ---- the teacher's embeddings beside the splats --------------------------------------------------------------


def paired_shards(root: Path, counts: list[int], dim: int = DIM) -> str:
    """Splat shards whose sample i has colour i / 1000 in every splat, and embedding shards (root/emb) of the same
    names whose rows carry i: a sample and its embedding can be traced by construction."""
    from gs_lightning.data.shards import FittedShard, update_sizes

    i = 0
    for k, n in enumerate(counts):
        splats, emb = FittedShard(root / "gs" / f"{k:05d}.tar", "fp16"), EmbeddingShard(root / "emb" / f"{k:05d}.tar")
        for j in range(n):
            rec = np.full((3, 8), 0.1, np.float32)
            rec[:, 5:] = i / 1000
            splats.write(f"s{k}_{j}", rec, {}, f"caption {i}", None)
            emb.write(f"s{k}_{j}", np.full((2, dim), i / 1000))
            i += 1
        splats.commit()
        emb.commit()
    update_sizes(root / "gs", {f"{k:05d}.tar": n for k, n in enumerate(counts)})
    return str(root / "gs" / f"{{00000..{len(counts) - 1:05d}}}.tar")


def test_every_teacher_embedding_stays_with_its_own_splats_through_shuffled_batches(tmp_path):
    from gs_lightning.data.datamodules import DataCompDataModule

    pattern = paired_shards(tmp_path, [17, 11, 9])
    dm = DataCompDataModule(kind="splats", train=pattern, tokenizer=open_clip.get_tokenizer("ViT-B-16"),
                            batch_size=5, num_workers=2, shuffle_buffer=20, embeddings=str(tmp_path / "emb"))
    seen = 0
    for batch in dm.train_dataloader():
        ids = (batch["splats"].rgb[:, 0, 0] * 1000).round()
        assert torch.equal((batch["teacher"][:, :, 0] * 1000).round(), ids[:, None].expand(-1, 2)), batch["keys"]
        seen += len(ids)
    assert seen >= 35  # an epoch of whole batches on each worker


DDP_SCRIPT = textwrap.dedent('''
    import json, sys
    import lightning as L, open_clip, torch
    from gs_lightning.data.datamodules import DataCompDataModule

    class Recorder(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.pairs = []
        def training_step(self, batch, i):
            ids = (batch["splats"].rgb[:, 0, 0] * 1000).round().tolist()
            emb = (batch["teacher"][:, 0, 0] * 1000).round().tolist()
            self.pairs += list(zip(ids, emb))
            return self.w.sum() * 0
        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)
        def on_train_end(self):
            with open(f"{sys.argv[3]}/rank{self.global_rank}.json", "w") as f:
                json.dump(self.pairs, f)

    dm = DataCompDataModule(kind="splats", train=sys.argv[1], tokenizer=open_clip.get_tokenizer("ViT-B-16"),
                            batch_size=3, num_workers=2, shuffle_buffer=10, embeddings=sys.argv[2])
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, use_distributed_sampler=False)
    trainer.fit(Recorder(), datamodule=dm)
''')


def test_every_teacher_embedding_stays_with_its_own_splats_across_ddp_ranks(tmp_path):
    pattern = paired_shards(tmp_path, [7, 6, 8, 5])
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    out = subprocess.run([sys.executable, str(script), pattern, str(tmp_path / "emb"), str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    pairs = [tuple(p) for r in (0, 1) for p in json.loads((tmp_path / f"rank{r}.json").read_text())]
    assert pairs and all(a == b for a, b in pairs)
    ranks = [{a for a, _ in json.loads((tmp_path / f"rank{r}.json").read_text())} for r in (0, 1)]
    assert not ranks[0] & ranks[1]  # each rank its own samples


def test_a_sample_without_its_embedding_is_skipped_and_named(tmp_path):
    from gs_lightning.data.datamodules import DataCompDataModule

    pattern = paired_shards(tmp_path, [6])
    partial = EmbeddingShard(tmp_path / "emb2" / "00000.tar")
    for j in range(5):  # s0_5 has none
        partial.write(f"s0_{j}", np.full((2, DIM), j / 1000))
    partial.commit()
    dm = DataCompDataModule(kind="splats", train=pattern, tokenizer=open_clip.get_tokenizer("ViT-B-16"),
                            batch_size=5, num_workers=0, embeddings=str(tmp_path / "emb2"))
    with pytest.warns(UserWarning, match=r"skipping 00000\.tar/s0_5: no teacher embedding for it in .*emb2/00000\.tar"):
        batches = list(dm.train_dataloader())
    assert sum(b["skipped"] for b in batches) >= 1


@pytest.mark.parametrize("problem", ["no folder", "another teacher", "another width", "a missing shard"])
def test_embeddings_that_do_not_fit_the_run_are_one_error_naming_the_shard(tmp_path, problem):
    shards = ["00000.tar", "00001.tar"]
    settings = {"teacher": "t.ckpt", "teacher_sha256": "a" * 64, "model": "ViT-Tiny-16", "dim": DIM, "logit_scale": 1}
    if problem != "no folder":
        keep_embed_settings(tmp_path, settings)
        for name in shards if problem != "a missing shard" else shards[:1]:
            EmbeddingShard(tmp_path / name).commit()
    sha, dim = ("b" * 64 if problem == "another teacher" else "a" * 64), (DIM * 2 if problem == "another width" else DIM)
    with pytest.raises(UserError) as e:
        check_embeddings(tmp_path, dict.fromkeys(shards), sha, dim)
    named = "00001.tar" if problem == "a missing shard" else "00000.tar"
    assert e.value.where == "data.embeddings" and f"{tmp_path}/{named}" in e.value.what, e.value.what


def test_embeddings_that_do_not_fit_say_how_to_compute_them(tmp_path):
    """The error ends with the command that writes the folder: embed, with the run's experiment and overrides."""
    with pytest.raises(UserError) as e:
        check_embeddings(tmp_path / "none", {"00000.tar": None}, "a" * 64, DIM)
    assert e.value.what.endswith("; compute them with `python -m gs_lightning embed EXP ...` (the same experiment "
                                 "and overrides)"), e.value.what


def test_embeddings_are_checked_for_the_teacher_and_width_when_no_shard_is_named(tmp_path):
    """With no shard to look for, the folder's teacher and width are still checked: the right ones give its
    settings back, another teacher is an error naming the folder."""
    settings = {"teacher": "t.ckpt", "teacher_sha256": "a" * 64, "model": "ViT-Tiny-16", "dim": DIM, "logit_scale": 1}
    keep_embed_settings(tmp_path, settings)
    assert check_embeddings(tmp_path, {}, "a" * 64, DIM) == settings
    with pytest.raises(UserError, match="another teacher") as e:
        check_embeddings(tmp_path, {}, "b" * 64, DIM)
    assert str(tmp_path) in e.value.what


def test_embeddings_made_from_other_images_than_the_splats_are_refused_naming_both(tmp_path, teacher):
    """img2dataset names keys by shard and row, so the embeddings of another download find every key of the
    splats: the input each fitted shard and each embedding shard was made from (their _stats accounts) must be
    the same, where both kept one."""
    from gs_lightning.cli import check_teacher_embeddings
    from gs_lightning.config import compose_train
    from gs_lightning.data.embeddings import checkpoint_sha256
    from gs_lightning.data.image_batches import stats_path

    pattern, emb = fitted_shards(tmp_path / "fit", [2, 2]), tmp_path / "emb"
    keep_embed_settings(emb, {"teacher": teacher, "teacher_sha256": checkpoint_sha256(teacher), "model": "ViT-Tiny-16",
                              "dim": DIM, "logit_scale": 1})

    def account(folder, shard, origin):
        stats_path(folder, shard).parent.mkdir(exist_ok=True)
        stats_path(folder, shard).write_text(json.dumps({"inputs": {shard: origin}}))

    for shard in ("00000.tar", "00001.tar"):
        EmbeddingShard(emb / shard).commit()
        account(tmp_path / "fit", shard, f"{shard}, 10 bytes (A)")
        account(emb, shard, f"{shard}, 10 bytes ({'A' if shard == '00000.tar' else 'B'})")
    cfg = compose_train(["gs196_distill", "demo"], [f"data.splats.train={pattern}", f"data.embeddings={emb}",
                                                    f"model.rgb_checkpoint={teacher}", *TINY_TRAIN])
    with pytest.raises(UserError) as e:
        check_teacher_embeddings(cfg)
    assert e.value.where == "data.embeddings" and e.value.what.startswith(
        f"{emb}/00001.tar was computed from 00001.tar, 10 bytes (B), but its splats were fitted from 00001.tar, "
        "10 bytes (A)"), e.value.what
    account(emb, "00001.tar", "00001.tar, 10 bytes (A)")
    assert check_teacher_embeddings(cfg)["dim"] == DIM
    stats_path(emb, "00000.tar").unlink()  # an account not kept on one side: nothing to compare
    account(tmp_path / "fit", "00001.tar", "00001.tar, 10 bytes (C)")
    with pytest.raises(UserError, match="00001.tar was computed from"):
        check_teacher_embeddings(cfg)
    stats_path(tmp_path / "fit", "00001.tar").unlink()
    assert check_teacher_embeddings(cfg)["dim"] == DIM


@pytest.mark.parametrize("first", ["fit", "embed"])
def test_fit_and_embed_refuse_each_others_output_folder(tmp_path, first):
    """Both name an output shard as its input shard: run into the other's folder, every input would be taken as
    done, nothing written, and the run end well. Each refuses the other's folder, by the settings file it keeps,
    and writes nothing there."""
    from gs_lightning.fit.config import FitConfig
    from gs_lightning.fit.summary import keep_fit_settings

    settings = {"teacher": "t.ckpt", "teacher_sha256": "a" * 64, "model": "ViT-Tiny-16", "dim": DIM, "logit_scale": 1}
    fit, embed = (lambda: keep_fit_settings(FitConfig(output=str(tmp_path)))), (
        lambda: keep_embed_settings(tmp_path, settings))
    (fit if first == "fit" else embed)()
    before = sorted(p.name for p in tmp_path.iterdir())
    (fit if first == "fit" else embed)()  # its own folder again: a rerun
    with pytest.raises(UserError) as e:
        (embed if first == "fit" else fit)()
    kept, key = ("fit.yaml", "data.embeddings") if first == "fit" else ("embed.yaml", "fit.output")
    assert e.value.where == key and e.value.what.startswith(
        f"{tmp_path} holds {kept}: it is the output of `{first}`"), e.value.what
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_rerun_with_the_same_teacher_is_let_through_and_another_is_refused(tmp_path):
    """embed.yaml keeps the first teacher's identity, in the order given; the same identity again is no error,
    even from another path, another is one naming each setting that differs, its old and new value, and
    embed.yaml stays as it was."""
    from gs_lightning.data.embeddings import embedding_settings

    settings = {"teacher": "t.ckpt", "teacher_sha256": "a" * 64, "model": "ViT-Tiny-16", "dim": DIM, "logit_scale": 1}
    keep_embed_settings(tmp_path, settings)
    keep_embed_settings(tmp_path, dict(settings))
    keep_embed_settings(tmp_path, {**settings, "teacher": "/moved/t.ckpt"})  # the same checkpoint, moved
    kept = embedding_settings(tmp_path)
    assert kept == settings and list(kept) == ["teacher", "teacher_sha256", "model", "dim", "logit_scale"]
    with pytest.raises(UserError) as e:
        keep_embed_settings(tmp_path, {**settings, "teacher": "u.ckpt", "teacher_sha256": "b" * 64, "dim": 64})
    assert e.value.where == "data.embeddings"
    assert (f"another teacher's embeddings (teacher_sha256 was '{'a' * 64}', now '{'b' * 64}'; dim was 32, now 64)"
            in e.value.what)
    assert embedding_settings(tmp_path) == settings


def test_embed_writes_the_teachers_embeddings_and_a_rerun_keeps_them(tmp_path, teacher):
    """Each image's row 0 is the teacher's encode_image of the image as open_clip's eval transform makes it, and
    row 1 its caption's encode_text; a rerun embeds nothing again."""
    images = datacomp_shards(tmp_path / "rgb", [3, 2], size=16)
    emb = tmp_path / "emb"
    args = ["embed", "gs196_distill", "demo", f"data.rgb.train={images}", f"model.rgb_checkpoint={teacher}",
            f"data.embeddings={emb}", f"output_dir={tmp_path}/runs", *TINY_TRAIN]
    out = subprocess.run([sys.executable, "-m", "gs_lightning", *args], cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "5 images in 2 shards" in out.stdout
    model = ClipModule(**shipped_model_kwargs(mode="rgb")).model
    from gs_lightning.checkpoint import load_matching, read_state_dict

    load_matching(model, read_state_dict(teacher, "t"), teacher, "t")
    model.eval()
    preprocess, tokenizer = open_clip.image_transform(16, is_train=False), open_clip.get_tokenizer("ViT-Tiny-16")
    from gs_lightning.data.shards import list_sources

    for source in list_sources(images):
        table = read_embeddings(emb / source.name)
        for raw in source.samples([]):
            with torch.no_grad():
                im = model.encode_image(preprocess(Image.open(io.BytesIO(raw.image)).convert("RGB"))[None],
                                        normalize=True)[0]
                tx = model.encode_text(tokenizer([raw.caption]), normalize=True)[0]
            torch.testing.assert_close(torch.from_numpy(table[raw.key].astype(np.float32)), torch.stack([im, tx]),
                                       atol=2e-3, rtol=0)
    # trainer.precision reaches the teacher's pass, as it does training: bf16's rounding, not fp32's
    bf16 = subprocess.run([sys.executable, "-m", "gs_lightning", *args, f"data.embeddings={tmp_path}/bf16",
                           "trainer.precision=bf16-mixed"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert bf16.returncode == 0, bf16.stderr[-3000:]
    for source in list_sources(images):
        table, rounded = read_embeddings(emb / source.name), read_embeddings(tmp_path / "bf16" / source.name)
        gap = max(float(np.abs(table[k].astype(np.float32) - rounded[k].astype(np.float32)).max()) for k in table)
        assert 2e-3 < gap < 0.1, gap
    before = {p.name: p.read_bytes() for p in emb.glob("*.tar")}
    again = subprocess.run([sys.executable, "-m", "gs_lightning", *args], cwd=ROOT, capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0 and "2 of this run's 2 shards were done before it" in again.stdout
    assert {p.name: p.read_bytes() for p in emb.glob("*.tar")} == before
    # another data set whose shards and keys are named alike (img2dataset's are): refused, not kept as embedded
    other = datacomp_shards(tmp_path / "other", [2, 2], size=16)
    refused = subprocess.run([sys.executable, "-m", "gs_lightning", *args, f"data.rgb.train={other}"], cwd=ROOT,
                             capture_output=True, text=True, timeout=600)
    assert refused.returncode == 2 and refused.stderr.strip().splitlines()[-1].startswith(
        "error: data.rgb.train: its shard 00000.tar is 00000.tar, "), refused.stderr[-2000:]
    assert "give a new data.embeddings" in refused.stderr
    assert {p.name: p.read_bytes() for p in emb.glob("*.tar")} == before
    from gs_lightning.atomic import folder_lock

    with folder_lock(emb, "data.embeddings"):  # an embed of this process is writing there
        busy = subprocess.run([sys.executable, "-m", "gs_lightning", *args], cwd=ROOT, capture_output=True,
                              text=True, timeout=600)
    assert busy.returncode == 2 and busy.stderr.strip().splitlines()[-1].startswith(
        f"error: data.embeddings: another run is writing into {emb} (pid {os.getpid()} "), busy.stderr[-2000:]


# ---- the teacher on rendered splats -------------------------------------------------------------------------


def test_rendered_eval_images_are_the_reference_render_of_each_record(tmp_path):
    from gs_lightning.data.rendered import render_eval_set
    from gs_lightning.data.shards import decode_splats, list_sources
    from gs_lightning.render import CUTOFF, render_reference

    pattern = fitted_shards(tmp_path / "fit", [5, 3], n_splats=(4, 30))
    account = render_eval_set(pattern, 20, tmp_path / "out")
    assert account["images"] == 8
    for source in list_sources(pattern):
        rendered = {raw.key: raw for raw in list_sources(str(tmp_path / "out" / source.name))[0].samples([])}
        for raw in source.samples([]):
            splats = Splats.from_rows([decode_splats(raw.splats, raw.record)], 20, 20)
            want = (render_reference(splats, 20, 20, cutoff=CUTOFF).clamp(0, 1)[0] * 255).permute(1, 2, 0).numpy()
            got = np.asarray(Image.open(io.BytesIO(rendered[raw.key].image)), dtype=np.float32)
            assert np.abs(got - want).max() <= 1.0 and rendered[raw.key].cls == raw.cls


def test_a_rendered_eval_set_keeps_the_first_of_a_duplicate_key_and_counts_an_unreadable_record(tmp_path):
    from gs_lightning.data.rendered import render_eval_set
    from gs_lightning.data.shards import FittedShard, list_sources

    w = FittedShard(tmp_path / "fit" / "00000.tar", "fp16")
    rows = np.zeros((4, 8), np.float16)
    rows[:, :2], rows[:, 2], rows[:, 4], rows[:, 5] = 0.5, 0.3, 0.3, 1.0  # a red blob
    w.write("a", rows, {}, "x", 0)
    w.write("b", rows, {}, "x", 1)
    w._tar.write({"__key__": "a", "splats.npy": np.zeros((4, 8), np.float16), "txt": "x", "cls": 2})  # again
    w._tar.write({"__key__": "c", "splats.npy": np.zeros((4, 7), np.float16), "txt": "x", "cls": 1})  # 7 columns
    w.commit()
    account = render_eval_set(str(tmp_path / "fit" / "00000.tar"), 8, tmp_path / "out")
    assert account["images"] == 2 and account["unreadable"] == 1
    got = {raw.key: raw.cls for raw in list_sources(str(tmp_path / "out" / "00000.tar"))[0].samples([])}
    assert got == {"a": 0, "b": 1}


def test_embed_writes_no_shard_of_a_torn_input_and_says_which(tmp_path, teacher):
    """An input tar cut short is not written as embedded, or the rerun would skip its unread images for good."""
    images = datacomp_shards(tmp_path / "rgb", [2, 3], size=16)
    torn = tmp_path / "rgb" / "00001.tar"
    with tarfile.open(torn) as t:
        cut = [m for m in t.getmembers() if m.name.endswith(".jpg")][1].offset_data + 50  # inside the 2nd image
    torn.write_bytes(torn.read_bytes()[:cut])
    args = ["embed", "gs196_distill", "demo", f"data.rgb.train={images}", f"model.rgb_checkpoint={teacher}",
            f"data.embeddings={tmp_path}/emb", f"output_dir={tmp_path}/runs", *TINY_TRAIN]
    out = subprocess.run([sys.executable, "-m", "gs_lightning", *args], cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 2 and out.stderr.strip().splitlines()[-1].startswith(
        "error: data.rgb.train: 1 of its shards could not be read to their end and were not written (00001.tar)"), \
        out.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "emb").glob("*.tar")) == ["00000.tar"]


def test_a_kill_as_an_embedding_shard_gets_its_final_name_finds_its_account_written(tmp_path, teacher):
    """SIGKILL right after the rename onto 00000.tar (tests/stop_at.py): the shard's account, which names the
    input a distilled run checks it against, is already written."""
    from gs_lightning.data.shards import Source

    images = datacomp_shards(tmp_path / "rgb", [2, 3], size=16)
    args = ["embed", "gs196_distill", "demo", f"data.rgb.train={images}", f"model.rgb_checkpoint={teacher}",
            f"data.embeddings={tmp_path}/emb", f"output_dir={tmp_path}/runs", *TINY_TRAIN]
    out = subprocess.run([sys.executable, "tests/stop_at.py", "after-rename", "00000.tar", "--", *args], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == -9, f"the fault hook did not fire: {out.returncode} {out.stderr[-2000:]}"
    account = json.loads((tmp_path / "emb" / "_stats" / "00000.tar.json").read_text())
    assert account["images"] == 2
    assert account["inputs"] == {"00000.tar": Source("00000.tar", url=str(tmp_path / "rgb" / "00000.tar")).origin()}
