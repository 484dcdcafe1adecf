"""Mutants of the faults a long run meets: a full disk, a second writer, a diverged loss, a torn checkpoint, torn
shards."""

T = "tests/test_faults.py"

MUTANTS = [
    {"name": "full-disk-is-a-traceback", "path": "gs_lightning/atomic.py",
     "old": "        if e.errno in NO_SPACE:", "new": "        if False:",
     "tests": [f"{T}::test_a_full_disk_while_a_shard_is_written_is_one_line_and_a_rerun_completes"],
     "why": "a full disk ends the fit with a traceback that names no folder"},
    {"name": "lock-refuses-nobody", "path": "gs_lightning/atomic.py",
     "old": "        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)",
     "new": "        fd = os.open(path, os.O_CREAT | os.O_TRUNC | os.O_WRONLY)",
     "tests": [f"{T}::test_a_second_fit_into_a_busy_folder_is_refused_and_a_dead_ones_lock_is_taken_over"],
     "why": "two fits write into one folder at once"},
    {"name": "dead-lock-never-taken-over", "path": "gs_lightning/atomic.py",
     "old": "    except ProcessLookupError:\n        return False", "new": "    except ProcessLookupError:\n        return True",
     "tests": [f"{T}::test_a_second_fit_into_a_busy_folder_is_refused_and_a_dead_ones_lock_is_taken_over"],
     "why": "a killed fit's lock refuses every rerun until someone deletes it by hand"},
    {"name": "nan-loss-trains-on", "path": "gs_lightning/models/clip_module.py",
     "old": "        stop = not finite\n", "new": "        stop = False\n",
     "tests": [f"{T}::test_a_non_finite_loss_stops_the_run_naming_the_step_the_batch_and_the_last_checkpoint"],
     "why": "a diverged run goes on writing NaN weights into its checkpoints"},
    {"name": "torn-checkpoint-resumed-blind", "path": "gs_lightning/cli.py",
     "old": "        torch.load(path, map_location=\"cpu\", weights_only=True, mmap=True)", "new": "        pass",
     "tests": [f"{T}::test_a_torn_last_checkpoint_is_named_and_an_older_one_is_used_only_when_asked"],
     "why": "a torn last.ckpt fails deep in Lightning with a zip error naming no file and no way on"},
    {"name": "unread-samples-not-counted", "path": "gs_lightning/data/datamodules.py",
     "old": "                self.pending_skips += lost", "new": "                self.pending_skips += 0",
     "tests": [f"{T}::test_unreadable_shards_are_skipped_counted_and_stop_the_run_past_the_share"],
     "why": "a truncated shard loses most of its samples without a count: the run trains on less and says nothing"},
    {"name": "lost-share-never-stops", "path": "gs_lightning/data/datamodules.py",
     "old": "        if skipped > self.max_share * (seen + skipped):", "new": "        if skipped > (seen + skipped):",
     "tests": [f"{T}::test_unreadable_shards_are_skipped_counted_and_stop_the_run_past_the_share"],
     "why": "data.max_lost_share is ignored"},
]
