"""Faults a cluster or a disk brings, each at its dangerous moment (tests/stop_at.py), and what must follow: the
exit status, one line naming the file and no traceback, nothing torn under a final name, nothing lost or doubled
after the rerun."""
import csv
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY_FIT, TINY_TRAIN
from helpers import fitted_shards, image_bytes, smooth_photo

from gs_lightning.data.shards import write_image_shard

ROOT = Path(__file__).resolve().parents[1]


def run(args: list[str], hook: list[str] = ()) -> subprocess.CompletedProcess:
    head = [sys.executable, "tests/stop_at.py", *hook, "--"] if hook else [sys.executable, "-m", "gs_lightning"]
    return subprocess.run([*head, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def one_line_error(out: subprocess.CompletedProcess) -> str:
    assert out.returncode == 2 and "Traceback" not in out.stderr, (out.returncode, out.stderr[-3000:])
    return out.stderr.strip().splitlines()[-1]


def shards(root: Path, counts: list[int]) -> str:
    for i, n in enumerate(counts):
        write_image_shard(root / f"{i:05d}.tar", [
            {"key": f"{i}_{k}", "png": image_bytes(smooth_photo(24, 24, seed=10 * i + k), "PNG"), "txt": "x"}
            for k in range(n)])
    return str(root / f"{{00000..{len(counts) - 1:05d}}}.tar")


def keys(path: Path) -> list[str]:
    with tarfile.open(path) as t:
        return sorted({m.name.split(".")[0] for m in t.getmembers()})


# ---- a full disk --------------------------------------------------------------------------------------------------


def test_a_full_disk_while_a_shard_is_written_is_one_line_and_a_rerun_completes(tmp_path):
    pattern = shards(tmp_path / "in", [3, 3, 3])
    args = ["fit", f"fit.input={pattern}", f"fit.output={tmp_path}/out", "fit.batch_size=1", *TINY_FIT]
    last = one_line_error(run(args, ["disk-full", "00001.tar", "2"]))
    assert last.startswith(f"error: {tmp_path}/out/00001.tar: no space left on the device"), last
    assert sorted(p.name for p in (tmp_path / "out").glob("*.tar")) == ["00000.tar"]  # whole shards only
    assert not list((tmp_path / "out").glob("*.tmp")), "nothing half-written is kept"
    assert not (tmp_path / "out" / ".lock").exists()  # the lock goes with the run
    out = run(args)  # space freed: the rerun fits the rest
    assert out.returncode == 0, out.stderr[-3000:]
    assert [keys(tmp_path / "out" / f"{i:05d}.tar") for i in range(3)] == [[f"{i}_{k}" for k in range(3)]
                                                                            for i in range(3)]
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["images_fitted"] == 9


# ---- one rank of a multi-rank fit killed ---------------------------------------------------------------------------


def test_a_rank_killed_mid_fit_leaves_whole_shards_and_the_rerun_fits_each_image_once(tmp_path):
    """2 DDP ranks (gloo); rank 1 is SIGKILLed with its second shard half written. Rank 0 meets the dead rank at
    the closing barrier (one line naming the output, no traceback), unless Lightning's launcher kills it first
    (the next test forces that ordering).
    Whatever is under a final name is whole, and a rerun keeps those shards byte for byte and fits every image
    exactly once."""
    counts = [4, 4, 4, 4, 3]
    pattern = shards(tmp_path / "in", counts)
    args = ["fit", f"fit.input={pattern}", f"fit.output={tmp_path}/out", "fit.batch_size=2", "fit.num_workers=0",
            "trainer.devices=2", "trainer.strategy=ddp", *TINY_FIT]
    out = run(args, ["kill-rank", "1", "6"])
    # Lightning's launcher SIGKILLs the main process within 5 s of a child's death; if rank 0 reaches the
    # barrier first, it says so in one line
    if out.returncode != -signal.SIGKILL:
        last = one_line_error(out)
        assert last.startswith(f"error: {tmp_path}/out: another rank of this run stopped before the end ("), last
        assert "rerun the same command" in last, last
    landed = {p.name: p.read_bytes() for p in (tmp_path / "out").glob("*.tar")}
    assert landed and len(landed) < len(counts), sorted(landed)
    for name in landed:  # whole, or not under its name
        assert len(keys(tmp_path / "out" / name)) == counts[int(name[:5])], name
    assert list((tmp_path / "out").glob("*.tmp")), "rank 1 had a shard open"
    out = run(args)
    assert out.returncode == 0, out.stderr[-3000:]
    for name, data in landed.items():
        assert (tmp_path / "out" / name).read_bytes() == data, f"{name} was fitted again"
    fitted = [k for i in range(len(counts)) for k in keys(tmp_path / "out" / f"{i:05d}.tar")]
    assert sorted(fitted) == sorted(f"{i}_{k}" for i, n in enumerate(counts) for k in range(n))  # once each
    assert not list((tmp_path / "out").glob("*.tmp"))
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["images_fitted"] == sum(counts)
    sizes = json.loads((tmp_path / "out" / "sizes.json").read_text())
    assert sizes == {f"{i:05d}.tar": n for i, n in enumerate(counts)}


PEER_DIES = """
import datetime, os, sys, types
import torch.distributed as dist
from gs_lightning.cli import wait_for_other_ranks
from gs_lightning.errors import UserError
rank, path = int(sys.argv[1]), sys.argv[2]
store = dist.FileStore(path, 2)
dist.init_process_group("gloo", store=store, rank=rank, world_size=2, timeout=datetime.timedelta(seconds=30))
if rank == 1:
    store.wait(["rank 0 is up"])  # gloo's connecting side can finish its init before the other side's
    os._exit(0)  # dies without leaving the group, as a SIGKILLed rank does
store.set("rank 0 is up", "1")
sys.stdin.readline()  # the test writes a line once rank 1 has exited
try:
    wait_for_other_ranks(types.SimpleNamespace(strategy=types.SimpleNamespace(barrier=dist.barrier)), "out/")
except UserError as e:
    print(e)
"""


def test_a_rank_meeting_a_dead_rank_at_the_barrier_says_so_in_one_line(tmp_path):
    """The ordering the killed-rank fit above leaves to chance: rank 0 reaches the closing barrier after its peer
    died. What torch.distributed raises there (gloo, for real: the closed connection, well before the group's
    30 s timeout) becomes the one line naming the output."""
    ranks = [subprocess.Popen([sys.executable, "-c", PEER_DIES, str(r), str(tmp_path / "store")], cwd=ROOT,
                              text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for r in (0, 1)]
    try:
        _, dead = ranks[1].communicate(timeout=120)
        t0 = time.monotonic()
        out, err = ranks[0].communicate("go\n", timeout=120)
        seconds = time.monotonic() - t0
    finally:
        for p in ranks:
            if p.poll() is None:
                p.kill()
                p.communicate()
    assert ranks[0].returncode == 0 and ranks[1].returncode == 0, err[-3000:] + dead[-3000:]
    assert out.startswith("out/: another rank of this run stopped before the end ("), out + err[-3000:]
    assert "rerun the same command" in out, out
    assert seconds < 15, seconds  # the closed connection raised, not the timeout


# ---- two fits into one folder -------------------------------------------------------------------------------------


def test_a_second_fit_into_a_busy_folder_is_refused_and_a_dead_ones_lock_is_taken_over(tmp_path):
    from gs_lightning.atomic import folder_lock

    pattern = shards(tmp_path / "in", [2])
    args = ["fit", f"fit.input={pattern}", f"fit.output={tmp_path}/out", *TINY_FIT]
    with folder_lock(tmp_path / "out", "fit.output"):  # a fit of this process is writing there
        last = one_line_error(run(args))
    assert last.startswith(f"error: fit.output: another run is writing into {tmp_path}/out (pid {os.getpid()} "), last
    assert not (tmp_path / "out" / "00000.tar").exists()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a job killed without releasing its lock: its pid is no one's now
    (tmp_path / "out" / ".lock").write_text(json.dumps({"host": os.uname().nodename, "pid": gone.pid, "since": "x"}))
    out = run(args)
    assert out.returncode == 0 and (tmp_path / "out" / "00000.tar").exists(), out.stderr[-3000:]
    assert not (tmp_path / "out" / ".lock").exists()


def test_a_lock_left_with_this_processs_own_pid_is_taken_over(tmp_path):
    """A container restarted after a kill hands the new process the pid its lock names: that holder is gone."""
    from gs_lightning.atomic import folder_lock

    lock = tmp_path / "out" / ".lock"
    lock.parent.mkdir()
    lock.write_text(json.dumps({"host": os.uname().nodename, "pid": os.getpid(), "since": "before the restart"}))
    with folder_lock(tmp_path / "out", "fit.output"):
        assert json.loads(lock.read_text())["since"] != "before the restart"
    assert not lock.exists()


def test_the_temporaries_of_two_hosts_ranks_of_one_pid_differ(tmp_path, monkeypatch):
    """Ranks on two nodes (containers) may share a pid and write one shared folder's fit.yaml at once."""
    import socket

    from gs_lightning.atomic import AtomicFile

    names = []
    for host in ("node-a", "node-b"):
        monkeypatch.setattr(socket, "gethostname", lambda host=host: host)
        names.append(AtomicFile(tmp_path / "fit.yaml", unique=True).tmp.name)
    assert names[0] != names[1] and all(str(os.getpid()) in n for n in names)


# ---- training: a diverging loss, a torn last.ckpt, unreadable shards -----------------------------------------------


def train_args(tmp_path: Path, pattern: str, *extra: str) -> list[str]:
    return ["train", "gs196_scratch", "demo", f"output_dir={tmp_path}/runs", f"data.splats.train={pattern}",
            f"data.splats.val={pattern}", "data.batch_size=2", "trainer.max_epochs=1", "trainer.limit_val_batches=1",
            "checkpoint.every_n_train_steps=3", *TINY_TRAIN, *extra]


def test_a_non_finite_loss_stops_the_run_naming_the_step_the_batch_and_the_last_checkpoint(tmp_path):
    pattern = fitted_shards(tmp_path / "gs", [10, 10])
    last = one_line_error(run(train_args(tmp_path, pattern), ["nan-loss", "5"]))
    ckpt = tmp_path / "runs" / "gs196_scratch" / "checkpoints" / "last.ckpt"
    assert last.startswith("error: train/loss: is nan at step 5 ("), last
    assert "the batch's first samples: 0000" in last and f"The last good checkpoint is {ckpt}" in last, last
    for saved in ckpt.parent.glob("*.ckpt"):  # no weights of the diverged step, anywhere
        state = torch.load(saved, map_location="cpu", weights_only=True)
        assert state["global_step"] <= 5 and all(torch.isfinite(v).all() for v in state["state_dict"].values())


def test_a_torn_last_checkpoint_is_named_and_an_older_one_is_used_only_when_asked(tmp_path):
    pattern = fitted_shards(tmp_path / "gs", [8, 8])
    assert run(train_args(tmp_path, pattern)).returncode == 0
    folder = tmp_path / "runs" / "gs196_scratch" / "checkpoints"
    data = (folder / "last.ckpt").read_bytes()
    (folder / "last.ckpt").write_bytes(data[: len(data) // 2])  # a copy cut off by a full disk or a kill
    last = one_line_error(run(train_args(tmp_path, pattern, "resume=true")))
    assert last.startswith(f"error: resume: {folder / 'last.ckpt'} cannot be read (") and "best.ckpt" in last, last
    out = run(train_args(tmp_path, pattern, "resume=true", f"resume_from={folder / 'best.ckpt'}"))
    assert out.returncode == 0, out.stderr[-3000:]


def test_resume_from_weights_or_another_runs_checkpoint_is_named_before_lightning_reads_it(tmp_path):
    """resume_from=<the teacher's or stage 1's best.ckpt> (model.init_checkpoint's job) is refused naming it; the
    run's own kind of checkpoint is taken."""
    from gs_lightning.cli import resume_checkpoint
    from gs_lightning.config import compose_train
    from gs_lightning.errors import UserError

    def cfg(path):
        return compose_train(["gs196_scratch", "demo"], ["resume=true", f"resume_from={path}"])

    own = cfg(tmp_path).model
    training = {"state_dict": {}, "optimizer_states": [], "loops": {}}
    torch.save({"state_dict": {"visual.proj": torch.zeros(2, 2)}}, tmp_path / "weights.ckpt")
    with pytest.raises(UserError, match=r"^resume_from: .*weights\.ckpt is no training checkpoint of a run .*"
                                        r"model\.init_checkpoint$"):
        resume_checkpoint(cfg(tmp_path / "weights.ckpt"), tmp_path)
    torch.save({**training, "hyper_parameters": {"name": own.name, "mode": "distill"}}, tmp_path / "stage1.ckpt")
    with pytest.raises(UserError, match=rf"^resume_from: .*stage1\.ckpt is a checkpoint of a {own.name} run in mode "
                                        rf"distill, and this run trains {own.name} in mode scratch: "):
        resume_checkpoint(cfg(tmp_path / "stage1.ckpt"), tmp_path)
    torch.save({**training, "hyper_parameters": {"name": own.name, "mode": "scratch"}}, tmp_path / "own.ckpt")
    assert resume_checkpoint(cfg(tmp_path / "own.ckpt"), tmp_path) == str(tmp_path / "own.ckpt")


def test_unreadable_shards_are_skipped_counted_and_stop_the_run_past_the_share(tmp_path):
    pattern = fitted_shards(tmp_path / "gs", [20, 20, 20, 20])
    torn = tmp_path / "gs" / "00002.tar"
    torn.write_bytes(torn.read_bytes()[:3000])  # a shard cut short: the first samples read, the rest lost
    last = one_line_error(run(train_args(tmp_path, pattern, "data.max_lost_share=0.05")))
    assert last.startswith("error: data.max_lost_share: ") and "could not be read" in last, last
    stopped = tmp_path / "runs" / "gs196_scratch"
    refused = one_line_error(run(train_args(tmp_path, pattern, "data.max_lost_share=0.5")))
    assert refused.startswith(f"error: output_dir: {stopped} already holds a run; go on from its last.ckpt with "
                              "resume=true"), refused
    # Resumed from its last.ckpt, near the epoch's end: the share is judged over the whole epoch, not the rest.
    resumed = run(train_args(tmp_path, pattern, "data.max_lost_share=0.5", "resume=true"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    row = [r for r in csv.DictReader(open(stopped / "csv" / "metrics.csv")) if r.get("train/lost")][-1]
    assert float(row["train/samples"]) >= 80 - float(row["train/lost"]) > 0, row
    out = run(train_args(tmp_path, pattern, "data.max_lost_share=0.5", "checkpoint.every_n_train_steps=100",
                         f"output_dir={tmp_path}/again"))  # a whole epoch from the start, in a folder of its own
    assert out.returncode == 0, out.stderr[-3000:]
    unread = {int(n) for n in re.findall(r"skipping 00002\.tar/\((\d+) of its 20 samples unread\)", out.stderr)}
    assert len(unread) == 1 and 0 < min(unread) < 20, out.stderr[-3000:]
    whole = complete_samples(torn, members=complete_samples(tmp_path / "gs" / "00000.tar", members=None))
    assert min(unread) == 20 - whole[0] - whole[1]  # neither read nor cut: what the tar never reached
    rows = [r for r in csv.DictReader(open(tmp_path / "again" / "gs196_scratch" / "csv" / "metrics.csv"))
            if r.get("train/lost")]
    # The epoch is sizes.json's 80 samples long, so the stream may meet the torn shard more than once: each pass
    # over it loses the same samples again.
    lost, seen = float(rows[-1]["train/lost"]), float(rows[-1]["train/samples"])
    assert lost > 0 and lost % (20 - whole[0]) == 0 and seen >= 80 - lost, (lost, seen)


def test_lost_counts_restored_only_into_the_epoch_they_were_counted_in(tmp_path):
    """A checkpoint saved at an epoch's last batch, then a crash in that epoch's validation: the resumed run
    starts the next epoch (Lightning calls no on_train_epoch_start for it), whose counts start at 0."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from gs_lightning.data.datamodules import LostSamples

    batches = [{"x": torch.ones(2, 4), "keys": ["a", "b"], "skipped": int(i < 2)} for i in range(8)]

    class Toy(L.LightningModule):
        def __init__(self, crash: bool):
            super().__init__()
            self.layer, self.crash = torch.nn.Linear(4, 1), crash

        def training_step(self, batch, i):
            return self.layer(batch["x"]).sum()

        def validation_step(self, batch, i):
            if self.crash:
                raise RuntimeError("killed in validation")

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), 0.1)

    counts = {}

    class Spy(LostSamples):
        def on_train_epoch_end(self, trainer, pl_module):
            counts[trainer.current_epoch] = (self.seen, self.skipped)

    def trainer():
        return L.Trainer(max_epochs=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         accelerator="cpu", num_sanity_val_steps=0, callbacks=[Spy(0.5), ModelCheckpoint(
                             tmp_path, filename="last", every_n_train_steps=8, enable_version_counter=False)])

    loader = torch.utils.data.DataLoader(batches, batch_size=None)
    with pytest.raises(RuntimeError, match="killed in validation"):
        trainer().fit(Toy(crash=True), loader, loader)
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["lost_samples"] == {"epoch": 0, "seen": 16,
                                                                                     "skipped": 2}
    trainer().fit(Toy(crash=False), loader, loader, ckpt_path=tmp_path / "last.ckpt")
    assert counts == {1: (16, 2)}  # epoch 1 alone, not epoch 0's counts as well


def complete_samples(tar: Path, members: set[str] | None):
    """(samples with every member in `members`, samples cut short) of a tar read until it breaks; with
    members=None, the member set of its first sample."""
    found: dict[str, set[str]] = {}
    try:
        with tarfile.open(tar) as f:
            for m in f:
                key, ext = m.name.split(".", 1)
                f.extractfile(m).read()
                found.setdefault(key, set()).add(ext)
    except (tarfile.TarError, OSError, EOFError):
        pass
    if members is None:
        return next(iter(found.values()))
    whole = sum(exts == members for exts in found.values())
    return whole, len(found) - whole


# ---- a torn input shard while fitting --------------------------------------------------------------------------


def test_a_torn_input_shard_is_not_written_and_the_rerun_of_the_mended_one_fits_it(tmp_path):
    """An input tar cut short (a broken copy, a download that died) is read until it breaks; what was read is
    not written as a finished shard, or the rerun would skip it as done and its other images would never be
    fitted. The run fits the rest, then says which shard is missing (exit 2); once mended, the rerun fits it."""
    pattern = shards(tmp_path / "in", [3, 3, 3])
    whole = (tmp_path / "in" / "00001.tar").read_bytes()
    with tarfile.open(tmp_path / "in" / "00001.tar") as t:
        cut = next(m for m in t.getmembers() if m.name == "1_1.png").offset_data + 100
    # Cut inside the second image (tarfile takes a tar cut at a header for a whole, shorter one).
    (tmp_path / "in" / "00001.tar").write_bytes(whole[:cut])
    args = ["fit", f"fit.input={pattern}", f"fit.output={tmp_path}/out", "fit.batch_size=1", *TINY_FIT]
    out = run(args)
    last = one_line_error(out)
    assert last.startswith("error: fit.input: 1 of its shards could not be read to their end and were not "
                           "written (00001.tar)"), last
    assert re.search(r"not writing 00001\.tar: cannot read \S*00001\.tar to its end \(ReadError", out.stderr)
    assert sorted(p.name for p in (tmp_path / "out").glob("*.tar")) == ["00000.tar", "00002.tar"]
    assert not list((tmp_path / "out").glob("*.tmp"))
    (tmp_path / "in" / "00001.tar").write_bytes(whole)
    out = run(args)
    assert out.returncode == 0, out.stderr[-3000:]
    assert [keys(tmp_path / "out" / f"{i:05d}.tar") for i in range(3)] == [[f"{i}_{k}" for k in range(3)]
                                                                            for i in range(3)]
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["images_fitted"] == 9
