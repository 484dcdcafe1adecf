"""The fault hook of the torn-file tests: run the CLI and SIGKILL this process at a chosen, dangerous moment.

    python tests/stop_at.py after-rename NAME -- ARGS...
        right after a file is renamed onto a file called NAME: the moment a final name appears
    python tests/stop_at.py signal-in-next-shard NAME SIGNAL -- ARGS...
        send SIGNAL (TERM, INT or KILL) to this process right after the first sample is written into the shard
        that follows the one renamed onto a file called NAME: one shard finished, the next one open; with
        SIGNAL-GROUP (INT-GROUP), to its whole process group, dataloader workers included, as Ctrl-C does
    python tests/stop_at.py kill-rank RANK N -- ARGS...
        SIGKILL the DDP rank RANK (its LOCAL_RANK) as it writes its Nth sample into a shard, its other ranks left
        running: one rank of a multi-rank fit lost (an OOM kill, a node gone)
    python tests/stop_at.py disk-full NAME N -- ARGS...
        the disk fills (OSError ENOSPC) as the Nth sample is written into the shard called NAME
    python tests/stop_at.py nan-loss STEP -- ARGS...
        a training step's loss turns NaN at global step STEP (a run that diverges)
    python tests/stop_at.py interrupted-move NAME N -- ARGS...
        half way through the Nth shutil.move onto a file whose name starts with NAME, as when the move crosses
        filesystems and copies (Lightning saves checkpoints to the system temp dir, then moves them: on a
        cluster, /tmp is a local disk and the checkpoints live on a shared filesystem)

Timers hope to land there; this lands there every time. ARGS are `python -m gs_lightning` arguments.
"""
import os
import shutil
import signal
import sys
from pathlib import Path


def kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def after_rename(name: str) -> None:
    replace = os.replace

    def replace_then_die(src, dst, *args, **kwargs):
        replace(src, dst, *args, **kwargs)
        if Path(dst).name == name:
            kill()

    os.replace = replace_then_die


def signal_in_next_shard(name: str, signame: str) -> None:
    import webdataset as wds

    replace, write = os.replace, wds.TarWriter.write
    renamed = False

    def replace_and_note(src, dst, *args, **kwargs):
        nonlocal renamed
        replace(src, dst, *args, **kwargs)
        renamed = renamed or Path(dst).name == name

    def write_then_signal(self, obj):
        out = write(self, obj)
        if renamed:
            sig = getattr(signal, f"SIG{signame.removesuffix('-GROUP')}")
            os.killpg(os.getpgid(0), sig) if signame.endswith("-GROUP") else os.kill(os.getpid(), sig)
        return out

    os.replace, wds.TarWriter.write = replace_and_note, write_then_signal


def kill_rank(rank: str, nth: str) -> None:
    import webdataset as wds

    if os.environ.get("LOCAL_RANK", "0") != rank:  # Lightning starts the other ranks with this script and its args
        return
    write, written = wds.TarWriter.write, 0

    def write_then_die(self, obj):
        nonlocal written
        out = write(self, obj)
        written += 1
        if written == int(nth):
            self.stream.flush()
            kill()
        return out

    wds.TarWriter.write = write_then_die


def disk_full(name: str, nth: str) -> None:
    import errno

    import webdataset as wds

    write, written = wds.TarWriter.write, {}

    def write_or_fill(self, obj):
        target = Path(getattr(self.stream, "name", "")).name
        if target.startswith(name):
            written[target] = written.get(target, 0) + 1
            if written[target] == int(nth):
                raise OSError(errno.ENOSPC, "No space left on device")
        return write(self, obj)

    wds.TarWriter.write = write_or_fill


def nan_loss(step: str) -> None:
    import torch

    from gs_lightning.models.clip_module import ClipModule

    losses = ClipModule.losses

    def diverging(self, batch):
        out = losses(self, batch)
        if self.global_step == int(step):
            out["loss"] = out["loss"] * torch.tensor(float("nan"))
        return out

    ClipModule.losses = diverging


def interrupted_move(name: str, nth: str) -> None:
    moves = 0

    def move_half_then_die(src, dst, *args, **kwargs):
        nonlocal moves
        target = Path(dst)
        moves += target.name.startswith(name)
        if target.name.startswith(name) and moves == int(nth):
            data = Path(src).read_bytes()
            target.write_bytes(data[: len(data) // 2])
            kill()
        return move(src, dst, *args, **kwargs)

    move = shutil.move
    shutil.move = move_half_then_die


def main() -> None:
    mode, *rest = sys.argv[1:]
    split = rest.index("--")
    hooks = {"after-rename": after_rename, "signal-in-next-shard": signal_in_next_shard, "kill-rank": kill_rank, "disk-full": disk_full,
             "nan-loss": nan_loss, "interrupted-move": interrupted_move}
    hooks[mode](*rest[:split])
    args = rest[split + 1:]
    from gs_lightning.cli import main as cli

    cli(args)


if __name__ == "__main__":
    main()
